"""Forge 2 adapter: how VideoElevator patches a Forge ``UnetPatcher`` (stable-diffusion-webui-forge 2.x), of an
SD1.x or an SDXL engine (the same UNet tree; SDXL's conditions are dicts, compiled by Forge).

Forge re-copies ``sd_model.forge_objects`` before every sampling, so the UNet patches are made
on a clone in the script's ``process_before_every_sampling`` (``ForgeRun.before_sampling``),
through Forge's own patch API, and never touch the shared torch modules:

- first-frame cross-frame attention: ``set_model_replace_all(…, "attn1")``; each call's batch is
  split into its cond/uncond chunks from ``transformer_options["cond_or_uncond"]``, so whatever
  batching Forge picks, a frame only attends to the first frame of its own chunk (and a clip sent in
  frame chunks to frame 0's keys and values, kept per layer and chunk kind: ``attention.FrameAnchors``);
- the motion modules: ``add_block_inner_modifier`` runs each one after the layer AnimateDiff puts
  it after, and ``add_extra_torch_module_during_sampling`` lets Forge's memory management load
  and offload them with the UNet (cast to the UNet's computation dtype first);
- the run's token: ``set_transformer_option``; the conditional x̂0 of CFG calls: a post-CFG function.

Around ``p.sample`` (removed in ``finally``): the per-frame motion GroupNorm when asked for, Hotshot-XL's
frame-pooled ResNet GroupNorms during T2V calls (gated hooks on the shared UNet), the
motion modules unloaded to the CPU by Forge's memory management in its low-VRAM states, the
T2V-only LoRA as gated hooks, as on A1111
(Forge merges its own LoRAs into the weights, so toggling one per call would re-merge), and the
patched UNet handed back to the copy it was cloned from. The T2V σ→t table goes into the
predictor with ``predictor.set_sigmas`` around T2V calls only; the exact original tables come
back afterwards. Forge modules are imported inside functions only.
"""
from __future__ import annotations

import uuid
from contextlib import ExitStack, contextmanager

import torch

from ...attention import FrameAnchors
from ...lora import GatedLora
from ...motion.motion_lora import MotionLoras
from ...motion.inject import T2VSwitch, plan_motion_slots, positional_limit, run_motion_module
from ...motion.groupnorm import PerFrameNorm, SpatialNormsOverFrames
from ...params import ElevatorParams
from ...schedules import VPSchedule
from .. import refusals, run
from ..request import MotionModel, VideoElevator

RUN_OPTION = "videoelevator_run"


def diffusion_model(sd_model):
    """The torch UNet every Forge patcher of this model shares."""
    return sd_model.forge_objects.unet.model.diffusion_model


def refusal_reasons(p, params: ElevatorParams, motion: MotionModel | None) -> list[str]:
    """Everything about this request VideoElevator cannot honour on Forge, in words a user understands."""
    reasons = []
    model = p.sd_model
    kmodel = model.forge_objects.unet.model
    if getattr(model, "is_sdxl", False):
        reasons += refusals.sdxl_checkpoint_reasons(motion, kmodel.diffusion_model, getattr(model, "is_inpaint", False))
    elif not getattr(model, "is_sd1", False):
        reasons.append("only SD1.x and SDXL checkpoints are supported (this one is SD3, Flux or another kind)")
    elif getattr(kmodel.predictor, "prediction_type", "epsilon") != "epsilon":
        reasons.append("v-prediction checkpoints are not supported")
    elif getattr(model, "is_inpaint", False):
        reasons.append("inpainting checkpoints are not supported")
    else:
        reasons += refusals.motion_fit_reasons(motion, kmodel.diffusion_model)
    return reasons + refusals.request_refusal_reasons(p, params, motion)


def forge_low_vram() -> bool:
    """Forge runs with little VRAM (``--always-low-vram``/``--always-no-vram``/``--always-offload-from-vram``):
    the motion modules then leave the GPU after each run, and the T2V LoRA's pairs wait on the CPU."""
    from backend import memory_management as memory

    return memory.ALWAYS_VRAM_OFFLOAD or memory.vram_state in (memory.VRAMState.LOW_VRAM, memory.VRAMState.NO_VRAM)


def _require_whole_clips(transformer_options: dict, batch: int, frames: int) -> None:
    """A UNet call must be one F-frame clip per cond/uncond chunk Forge batched into it."""
    chunks = len(transformer_options.get("cond_or_uncond") or [0])
    if chunks * frames != batch:
        raise ValueError(f"VideoElevator: a UNet call of {batch} rows in {chunks} cond/uncond chunk(s) "
                         f"is not whole {frames}-frame clips")


def first_frame_attention(switch: T2VSwitch, anchors: FrameAnchors):
    """The ``attn1`` replacement: q from every frame, k/v from the first frame of its chunk (``anchors``
    says how many frames a chunk has and, for a clip sent in frame chunks, holds frame 0's); plain
    self-attention during T2V calls. A closure, not a bound method: Forge deep-copies model options
    on every clone, and a bound method would copy the run with them."""
    from backend.attention import attention_function

    def attn1(q, k, v, transformer_options):
        heads = transformer_options["n_heads"]
        if switch.active:
            return attention_function(q, k, v, heads)
        frames = anchors.frames
        _require_whole_clips(transformer_options, q.shape[0], frames)
        layer = (transformer_options.get("block"), transformer_options.get("block_index", 0))
        kinds = transformer_options.get("cond_or_uncond") or [0]

        def context(name, rows):
            return torch.cat([anchors.context((layer, kind, name), clip) for kind, clip in zip(kinds, rows.split(frames))])

        return attention_function(q, context("k", k), context("v", v), heads)

    return attn1


def motion_modifier(slots, switch: T2VSwitch):
    """The block inner modifier running each motion module after its host layer, during T2V calls."""
    modules = {slot.host: slot.module for slot in slots}
    max_frames = positional_limit(modules.values())

    def apply_motion(x, position, layer, layer_index, block, transformer_options):
        module = modules.get(layer) if position == "after" and switch.active else None
        if module is None:
            return x
        _require_whole_clips(transformer_options, x.shape[0], switch.frames)  # a context window's length
        return run_motion_module(module, x, switch, max_frames)

    return apply_motion


def conditional_recorder(capture: run.CondCapture):
    """A post-CFG function that hands the conditional x̂0 to ``capture`` and changes nothing."""
    def record(args):
        capture.record(args["cond_denoised"])
        return args["denoised"]

    return record


@contextmanager
def t2v_sigmas(predictor, schedule: VPSchedule):
    """The motion model's σ table (its training schedule) in Forge's predictor (σ→t for the UNet), restored exactly."""
    sigmas, log_sigmas = predictor.sigmas, predictor.log_sigmas
    predictor.set_sigmas(schedule.sigmas.to(sigmas.device))
    try:
        yield
    finally:
        predictor.sigmas, predictor.log_sigmas = sigmas, log_sigmas


class ForgeRun(run.ElevatorRun):
    """Patches on a clone of Forge's UnetPatcher for one sampling, plus the gated T2V LoRA."""

    def __post_init__(self):
        super().__post_init__()
        self.token = uuid.uuid4().hex
        self.unet_before = None
        self._capture = run.CondCapture()
        self._anchors = FrameAnchors(self.params.frames)

    @property
    def anchors(self) -> FrameAnchors:
        return self._anchors

    @property
    def capture(self) -> run.CondCapture:
        return self._capture

    def _install(self, patches: ExitStack) -> None:
        low_vram = forge_low_vram()
        if low_vram:
            patches.callback(self._release_motion_modules)
        if self.params.motion_norm == "per_frame":
            patches.enter_context(PerFrameNorm([self.motion.adapter]))
        if self.motion.info.frame_pooled_spatial_norms:
            patches.enter_context(SpatialNormsOverFrames(diffusion_model(self.p.sd_model), self.switch))
        if self.motion.lora is not None:
            unet = diffusion_model(self.p.sd_model)
            store_on = self.p.sd_model.forge_objects.unet.offload_device if low_vram else None
            patches.enter_context(GatedLora(unet, self.motion.lora, self.switch, self.params.t2v_lora_scale,
                                            store_on=store_on))
        if self.motion.motion_loras:
            patches.enter_context(MotionLoras(self.motion.adapter, self.motion.motion_loras))
        patches.callback(self._hand_back_unet)

    def _release_motion_modules(self) -> None:
        """Unload the motion modules' patcher to its offload device through Forge's memory management.

        Left alone, Forge drops the patcher once it is abandoned (after this run) *without moving* it, so
        the cached motion modules would stay on the GPU, outside Forge's bookkeeping."""
        from backend import memory_management

        for loaded in [m for m in memory_management.current_loaded_models if m.model.model is self.motion.adapter]:
            memory_management.current_loaded_models.remove(loaded)
            loaded.model_unload()

    def before_sampling(self, p) -> None:
        """Clone the UnetPatcher Forge is about to sample with and add our patches to the clone."""
        objects = p.sd_model.forge_objects
        unet = objects.unet.clone()
        kmodel = unet.model
        slots = plan_motion_slots(kmodel.diffusion_model, self.motion.adapter)
        if next(self.motion.adapter.parameters()).dtype != kmodel.computation_dtype:
            self.motion.adapter.to(dtype=kmodel.computation_dtype)
        unet.add_extra_torch_module_during_sampling(self.motion.adapter, cast_to_unet_dtype=False)
        unet.set_transformer_option(RUN_OPTION, self.token)
        unet.set_model_replace_all(first_frame_attention(self.switch, self._anchors), "attn1")
        unet.add_block_inner_modifier(motion_modifier(slots, self.switch))
        unet.set_model_sampler_post_cfg_function(conditional_recorder(self._capture))
        self.unet_before = objects.unet
        objects.unet = unet

    def _hand_back_unet(self) -> None:
        if self.unet_before is not None:
            self.p.sd_model.forge_objects.unet = self.unet_before

    def _sampling_unet(self, model):
        """The UnetPatcher Forge's ``sampling_function`` uses for this CFGDenoiser."""
        return model.inner_model.inner_model.forge_objects.unet

    def check_ready(self, model) -> None:
        options = self._sampling_unet(model).model_options.get("transformer_options", {})
        if options.get(RUN_OPTION) != self.token:
            raise VideoElevator(
                "VideoElevator: the UNet patches were not applied before sampling (see the console for an "
                "error in process_before_every_sampling)")

    def t2i_schedule(self) -> VPSchedule:
        return VPSchedule("checkpoint", self.p.sd_model.forge_objects.unet.model.predictor.alphas_cumprod)

    @contextmanager
    def t2v_call(self, model, frames: int):
        with self.switch.on(frames), t2v_sigmas(self._sampling_unet(model).model.predictor, self.motion.info.schedule):
            yield

    @contextmanager
    def t2v_throughout(self):
        """Motion on for every call and the motion model's σ table in the predictor the sampler's
        ladder and σ→t come from (the clones share it); attn1 is plain self-attention while on."""
        with self.switch.on(), t2v_sigmas(self.p.sd_model.forge_objects.unet.model.predictor,
                                          self.motion.info.schedule):
            yield

    def single_branch(self, model, extra_args, x, sigma_in, conditioning, step):
        from backend.sampling.condition import compile_conditions
        from backend.sampling.sampling_function import calc_cond_uncond_batch
        from modules import prompt_parser

        unet = self._sampling_unet(model)
        if conditioning == "cond":
            _, tensor = prompt_parser.reconstruct_multicond_batch(extra_args["cond"], step)
            prediction, _ = calc_cond_uncond_batch(unet.model, compile_conditions(tensor), None, x, sigma_in,
                                                   unet.model_options)
        else:
            tensor = prompt_parser.reconstruct_cond_batch(extra_args["uncond"], step)
            _, prediction = calc_cond_uncond_batch(unet.model, [], compile_conditions(tensor), x, sigma_in,
                                                   unet.model_options)
        return prediction


Run = ForgeRun  # what dispatch.wrap_sample instantiates for this host
