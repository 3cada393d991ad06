"""Stand-in for Forge 2 ``backend/patcher/unet.py``: ``UnetPatcher``, the ``ModelPatcher`` of the UNet
(``p.sd_model.forge_objects.unet``; its ``.model`` is a ``backend.modules.k_model.KModel``).

On top of ``ModelPatcher`` it keeps what has to be on the device while sampling —
``extra_model_patchers_during_sampling`` (list), ``extra_preserved_memory_during_sampling`` (bytes),
``controlnet_linked_list`` — and ``extra_concat_condition``; ``clone()`` copies all of them (the list
shallowly). The convenience setters write the same keys as Forge:
``transformer_options["block_modifiers"]`` / ``["block_inner_modifiers"]`` /
``["controlnet_conditioning_modifiers"]`` (``add_block_modifier`` …), ``["group_norm_wrapper"]``,
``model_options["conditioning_modifiers"]`` / ``["sampler_pre_cfg_function"]`` /
``["alphas_cumprod_modifiers"]`` (stored, never read — as in Forge 2) /
``["memory_peak_estimation_modifier"]``; ``set_model_replace_all(patch, target)`` registers ``patch`` for
every (input|middle|output, 0‥15, 0‥15) block key. ``add_extra_torch_module_during_sampling(m)`` casts
``m`` to the UNet's dtype (unless told not to), wraps it in a ``ModelPatcher`` and returns that.
Left out: ControlNet objects themselves, ``load_frozen_patcher``.
"""
import torch

from backend import memory_management
from backend.patcher.base import ModelPatcher


class UnetPatcher(ModelPatcher):
    @classmethod
    def from_model(cls, model, diffusers_scheduler=None, config=None, k_predictor=None):
        from backend.modules.k_model import KModel
        device = memory_management.get_torch_device()
        return cls(KModel(model=model, diffusers_scheduler=diffusers_scheduler, k_predictor=k_predictor, config=config),
                   load_device=device, offload_device=memory_management.unet_offload_device(), current_device=device)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.controlnet_linked_list = self.extra_concat_condition = None
        self.extra_model_patchers_during_sampling, self.extra_preserved_memory_during_sampling = [], 0

    def clone(self):
        twin = self._copy_state_to(UnetPatcher(self.model, self.load_device, self.offload_device, self.size,
                                               self.current_device))
        twin.controlnet_linked_list = self.controlnet_linked_list
        twin.extra_preserved_memory_during_sampling = self.extra_preserved_memory_during_sampling
        twin.extra_model_patchers_during_sampling = list(self.extra_model_patchers_during_sampling)
        twin.extra_concat_condition = self.extra_concat_condition
        return twin

    # --- things loaded with the UNet ---

    def add_extra_preserved_memory_during_sampling(self, memory_in_bytes: int):
        self.extra_preserved_memory_during_sampling += memory_in_bytes

    def add_extra_model_patcher_during_sampling(self, model_patcher: ModelPatcher):
        self.extra_model_patchers_during_sampling.append(model_patcher)

    def add_extra_torch_module_during_sampling(self, m: torch.nn.Module, cast_to_unet_dtype: bool = True):
        """``m`` is moved and offloaded with the UNet from now on; returns its new ``ModelPatcher``."""
        m.to(self.model.diffusion_model.dtype if cast_to_unet_dtype else None)
        self.add_extra_model_patcher_during_sampling(
            ModelPatcher(model=m, load_device=self.load_device, offload_device=self.offload_device))
        return self.extra_model_patchers_during_sampling[-1]

    def add_patched_controlnet(self, cnet):
        """Push ``cnet`` on the front of the ControlNet chain (the stand-in never runs it)."""
        previous, self.controlnet_linked_list = self.controlnet_linked_list, cnet
        cnet.set_previous_controlnet(previous)

    def list_controlnets(self):
        found, cnet = [], self.controlnet_linked_list
        while cnet is not None:
            found.append(cnet)
            cnet = cnet.previous_controlnet
        return found

    # --- options ---

    @staticmethod
    def _append_unique(values, v, ensure_uniqueness):
        if not (ensure_uniqueness and v in values):
            values.append(v)

    def append_model_option(self, k, v, ensure_uniqueness=False):
        self._append_unique(self.model_options.setdefault(k, []), v, ensure_uniqueness)

    def append_transformer_option(self, k, v, ensure_uniqueness=False):
        options = self.model_options.setdefault("transformer_options", {})
        self._append_unique(options.setdefault(k, []), v, ensure_uniqueness)

    def set_transformer_option(self, k, v):
        self.model_options.setdefault("transformer_options", {})[k] = v

    def set_memory_peak_estimation_modifier(self, modifier):
        self.model_options["memory_peak_estimation_modifier"] = modifier

    def set_group_norm_wrapper(self, wrapper):
        self.set_transformer_option("group_norm_wrapper", wrapper)

    def set_controlnet_model_function_wrapper(self, wrapper):
        self.set_transformer_option("controlnet_model_function_wrapper", wrapper)

    def set_model_replace_all(self, patch, target="attn1"):
        for block_name in ("input", "middle", "output"):
            for number in range(16):
                for index in range(16):
                    self.set_model_patch_replace(patch, target, block_name, number, index)


def _model_option_appender(key):
    def append(self, modifier, ensure_uniqueness=False):
        self.append_model_option(key, modifier, ensure_uniqueness)
    return append


def _transformer_option_appender(key):
    def append(self, modifier, ensure_uniqueness=False):
        self.append_transformer_option(key, modifier, ensure_uniqueness)
    return append


for _method, _key in {"add_conditioning_modifier": "conditioning_modifiers",
                      "add_sampler_pre_cfg_function": "sampler_pre_cfg_function",
                      "add_alphas_cumprod_modifier": "alphas_cumprod_modifiers"}.items():
    setattr(UnetPatcher, _method, _model_option_appender(_key))
for _method, _key in {"add_block_modifier": "block_modifiers",
                      "add_block_inner_modifier": "block_inner_modifiers",
                      "add_controlnet_conditioning_modifier": "controlnet_conditioning_modifiers"}.items():
    setattr(UnetPatcher, _method, _transformer_option_appender(_key))
del _method, _key
