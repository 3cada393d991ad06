"""Stand-in for Forge 2 ``backend/patcher/base.py``: ``ModelPatcher``, the handle Forge passes around instead of
a bare ``nn.Module``.

A patcher holds ``model`` (shared by all its clones), where it lives (``load_device``, ``offload_device``,
``current_device``, ``size``) and what to do with the model when it runs: ``model_options`` (a dict with
``"transformer_options"``; the sampler and UNet read patches from it), ``object_patches`` (attributes
swapped on the model while it is loaded) and ``lora_patches`` (merged into the weights when loaded, see
``patcher.lora``). ``clone()`` makes a new patcher of the same model with a deep copy of
``model_options``, so patches added to a clone never reach the original.

Setters kept from Forge (same names, same keys in ``model_options``):
- lists under ``transformer_options["patches"][name]``: ``set_model_patch(patch, name)`` and the named
  forms ``set_model_attn1_patch``, ``attn2_patch``, ``attn1_output_patch``, ``attn2_output_patch``,
  ``input_block_patch``, ``input_block_patch_after_skip``, ``output_block_patch``;
- replacements under ``transformer_options["patches_replace"][name][(block, number[, index])]``:
  ``set_model_patch_replace``, ``set_model_attn1_replace``, ``set_model_attn2_replace``;
- ``model_options`` entries: ``set_model_sampler_cfg_function`` (a 3-argument function is wrapped, as in
  Forge), ``set_model_sampler_post_cfg_function`` / ``set_model_sampler_pre_cfg_function`` (appended),
  ``set_model_unet_function_wrapper`` (``"model_function_wrapper"``), the VAE wrappers,
  ``set_model_denoise_mask_function``; ``disable_cfg1_optimization=True`` sets that flag.
Left out: ``get_key_patches``, online LoRA, quantized weights.
"""
import copy
import inspect

from backend import memory_management
from backend.patcher.lora import LoraLoader


def set_model_options_patch_replace(model_options, patch, name, block_name, number, transformer_index=None):
    """``model_options`` with ``patch`` as the ``name`` replacement for one block (copies on the way down)."""
    key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
    options = dict(model_options["transformer_options"])
    replacements = dict(options.get("patches_replace", {}))
    replacements[name] = {**replacements.get(name, {}), key: patch}
    options["patches_replace"] = replacements
    model_options["transformer_options"] = options
    return model_options


def _append_option(model_options, key, fn, disable_cfg1_optimization):
    model_options[key] = [*model_options.get(key, []), fn]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def set_model_options_post_cfg_function(model_options, post_cfg_function, disable_cfg1_optimization=False):
    return _append_option(model_options, "sampler_post_cfg_function", post_cfg_function, disable_cfg1_optimization)


def set_model_options_pre_cfg_function(model_options, pre_cfg_function, disable_cfg1_optimization=False):
    return _append_option(model_options, "sampler_pre_cfg_function", pre_cfg_function, disable_cfg1_optimization)


def _get_attr(root, dotted):
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def _set_attr(root, dotted, value):
    path, _, name = dotted.rpartition(".")
    setattr(_get_attr(root, path) if path else root, name, value)


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, current_device=None, **kwargs):
        self.model, self.size = model, size
        self.load_device, self.offload_device = load_device, offload_device
        self.current_device = offload_device if current_device is None else current_device
        self.lora_patches, self.object_patches, self.object_patches_backup = {}, {}, {}
        self.model_options = {"transformer_options": {}}
        self.model_size()
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
        self.lora_loader = model.lora_loader

    def model_size(self):
        if self.size <= 0:
            self.size = memory_management.module_size(self.model)
        return self.size

    def _copy_state_to(self, other):
        other.lora_patches = dict(self.lora_patches)
        other.object_patches = dict(self.object_patches)
        other.model_options = copy.deepcopy(self.model_options)
        return other

    def clone(self):
        return self._copy_state_to(ModelPatcher(self.model, self.load_device, self.offload_device, self.size,
                                                self.current_device))

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model

    # --- LoRA ---

    def add_patches(self, *, filename, patches, strength_patch=1.0, strength_model=1.0, online_mode=False):
        """Record ``patches`` ({parameter key: (type, value)}) under one identifier; returns the keys taken."""
        known = {name for name, _ in self.model.named_parameters()}
        taken = {key: [[strength_patch, value, strength_model, None, None]]
                 for key, value in patches.items() if isinstance(key, str) and key in known}
        self.lora_patches[(filename, strength_patch, strength_model, online_mode)] = taken
        return set(taken)

    def has_online_lora(self):
        return any(identifier[3] for identifier in self.lora_patches)

    def refresh_loras(self):
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)

    # --- what the sampler and the UNet read ---

    def memory_required(self, input_shape):
        return self.model.memory_required(input_shape=input_shape)

    def set_model_sampler_cfg_function(self, sampler_cfg_function, disable_cfg1_optimization=False):
        fn = sampler_cfg_function
        if len(inspect.signature(fn).parameters) == 3:  # the old (cond, uncond, cond_scale) form
            def fn(args, old=sampler_cfg_function):
                return old(args["cond"], args["uncond"], args["cond_scale"])
        self.model_options["sampler_cfg_function"] = fn
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_post_cfg_function(self, post_cfg_function, disable_cfg1_optimization=False):
        set_model_options_post_cfg_function(self.model_options, post_cfg_function, disable_cfg1_optimization)

    def set_model_sampler_pre_cfg_function(self, pre_cfg_function, disable_cfg1_optimization=False):
        set_model_options_pre_cfg_function(self.model_options, pre_cfg_function, disable_cfg1_optimization)

    def set_model_patch(self, patch, name):
        patches = self.model_options["transformer_options"].setdefault("patches", {})
        patches[name] = [*patches.get(name, []), patch]

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None):
        set_model_options_patch_replace(self.model_options, patch, name, block_name, number, transformer_index)

    def set_model_attn1_replace(self, patch, block_name, number, transformer_index=None):
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch, block_name, number, transformer_index=None):
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)

    # --- object patches (applied while loaded) ---

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    def get_model_object(self, name):
        for patched in (self.object_patches, self.object_patches_backup):
            if name in patched:
                return patched[name]
        return _get_attr(self.model, name)

    def _move(self, device):
        if device is not None:
            self.model.to(device)
            self.current_device = device

    def forge_patch_model(self, target_device=None):
        """Put the object patches on the model (remembering what they replace), then move it."""
        for name, obj in self.object_patches.items():
            self.object_patches_backup.setdefault(name, _get_attr(self.model, name))
            _set_attr(self.model, name, obj)
        self._move(target_device)
        return self.model

    def forge_unpatch_model(self, target_device=None):
        self._move(target_device)
        backups, self.object_patches_backup = self.object_patches_backup, {}
        for name, original in backups.items():
            _set_attr(self.model, name, original)

    def model_patches_to(self, device):
        pass  # every patch already lives on the CPU

    def model_dtype(self):
        get_dtype = getattr(self.model, "get_dtype", None)
        return get_dtype() if get_dtype is not None else None


def _option_setter(key):
    def setter(self, fn):
        self.model_options[key] = fn
    return setter


def _patch_list_setter(name):
    def setter(self, patch):
        self.set_model_patch(patch, name)
    return setter


for _method, _key in {"set_model_unet_function_wrapper": "model_function_wrapper",
                      "set_model_vae_encode_wrapper": "model_vae_encode_wrapper",
                      "set_model_vae_decode_wrapper": "model_vae_decode_wrapper",
                      "set_model_vae_regulation": "model_vae_regulation",
                      "set_model_denoise_mask_function": "denoise_mask_function"}.items():
    setattr(ModelPatcher, _method, _option_setter(_key))

for _name in ("attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch", "input_block_patch",
              "input_block_patch_after_skip", "output_block_patch"):
    setattr(ModelPatcher, f"set_model_{_name}", _patch_list_setter(_name))
del _method, _key, _name
