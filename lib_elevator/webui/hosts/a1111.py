"""AUTOMATIC1111 1.9/1.10 adapter: how VideoElevator patches an ldm ``LatentDiffusion`` (SD1.x) or an sgm
``DiffusionEngine`` (SDXL) model; both UNets have ldm's block tree.

Installed around ``p.sample`` (see ``run.ElevatorRun``) and removed in ``finally`` whatever
happens:

- first-frame cross-frame attention: per-instance ``attn1`` pre-hooks (``attention.Inflation``);
- the motion modules, hooked into the loaded UNet behind a switch (``motion.inject``), with Hotshot-XL's
  frame-pooled ResNet GroupNorms during T2V calls; under
  ``--medvram``/``--lowvram`` they are on the GPU only for the run / each call (``low_vram_offload``);
- the T2V-only LoRA, through hooks gated by the same switch (``lora.GatedLora``), its pairs kept on the
  CPU under low VRAM;
- the T2V's σ→t table (the motion model's training schedule), swapped into the k-diffusion denoiser only
  around T2V calls.

The conditional branch of a CFG call is read from ``on_cfg_denoised``; single-branch passes go
to the k-diffusion denoiser with the step's conditioning (SDXL's is a dict: ``crossattn`` and ``vector``
per frame, passed the way the WebUI's ``CFGDenoiser`` passes it). WebUI modules are imported inside
functions only.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager

from ...attention import Inflation
from ...lora import GatedLora
from ...motion.inject import MotionInjection, Offload
from ...motion.motion_lora import MotionLoras
from ...params import ElevatorParams
from ...schedules import VPSchedule
from .. import refusals, run
from ..request import MotionModel


def unet_of(sd_model):
    return sd_model.model.diffusion_model


def refusal_reasons(p, params: ElevatorParams, motion: MotionModel | None) -> list[str]:
    """Everything about this request VideoElevator cannot honour on A1111, in words a user understands."""
    from modules import sd_unet

    reasons = []
    model = p.sd_model
    if getattr(model, "is_sd3", False) or not hasattr(model, "model"):
        reasons.append("only SD1.x and SDXL checkpoints are supported (this one is SD3, Flux or another kind)")
    elif getattr(model, "is_sdxl", False):
        reasons += refusals.sdxl_checkpoint_reasons(motion, unet_of(model), getattr(model, "is_sdxl_inpaint", False))
    elif getattr(model, "parameterization", "eps") != "eps":
        reasons.append("v-prediction checkpoints (SD2-v) are not supported")
    else:
        reasons += refusals.motion_fit_reasons(motion, unet_of(model))
    if getattr(sd_unet, "current_unet", None) is not None:
        reasons.append("an alternative UNet (e.g. TensorRT) is active; select 'None' for SD Unet")
    return reasons + refusals.request_refusal_reasons(p, params, motion)


CAPTURE = run.CondCapture()


def low_vram_offload(sd_model) -> Offload | None:
    """How the motion modules follow A1111's ``--medvram``/``--lowvram`` (``modules/lowvram.py`` moves the
    model's parts on and off the GPU with forward pre-hooks): on the GPU for the run (medvram) or for each
    call (lowvram), on the CPU otherwise. None on a normal-VRAM host: they stay where the UNet is, cached."""
    from modules import devices, lowvram, shared

    if not lowvram.is_enabled(sd_model):
        return None
    return Offload(devices.cpu, each_call=bool(shared.cmd_opts.lowvram))


def register_callbacks() -> None:
    """Called once by the script at load time (Forge never calls ``on_cfg_denoised``; harmless there)."""
    from modules import script_callbacks

    script_callbacks.on_cfg_denoised(lambda params: CAPTURE.record(params.x), name="videoelevator")


@contextmanager
def swapped_sigmas(inner_model, schedule: VPSchedule):
    """The T2V's σ table in the k-diffusion denoiser, so σ→t follows the motion module's schedule."""
    sigmas, log_sigmas = inner_model.sigmas, inner_model.log_sigmas
    inner_model.sigmas = schedule.sigmas.to(sigmas.device, sigmas.dtype)
    inner_model.log_sigmas = schedule.log_sigmas.to(log_sigmas.device, log_sigmas.dtype)
    try:
        yield
    finally:
        inner_model.sigmas, inner_model.log_sigmas = sigmas, log_sigmas


@contextmanager
def swapped_alphas_cumprod(sd_model, schedule: VPSchedule):
    names = [name for name in ("alphas_cumprod", "alphas_cumprod_original") if hasattr(sd_model, name)]
    originals = {name: getattr(sd_model, name) for name in names}
    table = originals["alphas_cumprod"]
    replacement = schedule.alphas_cumprod.to(table.device, table.dtype)
    try:
        for name in names:
            setattr(sd_model, name, replacement)
        yield
    finally:
        for name, value in originals.items():
            setattr(sd_model, name, value)


class A1111Run(run.ElevatorRun):
    """Hooks on the shared ldm UNet for the duration of ``p.sample``."""

    def _install(self, patches: ExitStack) -> None:
        unet = unet_of(self.p.sd_model)
        offload = low_vram_offload(self.p.sd_model)
        self.inflation = patches.enter_context(Inflation(unet, self.params.frames))
        patches.enter_context(MotionInjection(unet, self.motion.adapter, self.switch,
                                              self.motion.info.frame_pooled_spatial_norms,
                                              motion_norm=self.params.motion_norm, offload=offload))
        if self.motion.lora is not None:
            patches.enter_context(GatedLora(unet, self.motion.lora, self.switch, self.params.t2v_lora_scale,
                                            store_on=offload.device if offload else None))
        if self.motion.motion_loras:
            patches.enter_context(MotionLoras(self.motion.adapter, self.motion.motion_loras))

    def t2i_schedule(self) -> VPSchedule:
        return VPSchedule("checkpoint", self.p.sd_model.alphas_cumprod)

    @contextmanager
    def t2v_call(self, model, frames: int):
        with self.switch.on(frames), self.inflation.paused(), swapped_sigmas(model.inner_model, self.motion.info.schedule):
            yield

    @contextmanager
    def t2v_throughout(self):
        """Motion on, inflation off and the motion model's ᾱ table in the checkpoint for the whole
        sampling: the sampler the WebUI creates inside ``p.sample`` builds its σ ladder (and DDIM/PLMS/
        UniPC their ᾱ) from ``sd_model.alphas_cumprod``. ``alphas_cumprod_original`` is swapped too, as
        the WebUI resets from it; both original tensors are put back."""
        with self.switch.on(), self.inflation.paused(), swapped_alphas_cumprod(self.p.sd_model, self.motion.info.schedule):
            yield

    @property
    def capture(self) -> run.CondCapture:
        return CAPTURE

    @property
    def anchors(self) -> Inflation:
        return self.inflation

    def single_branch(self, model, extra_args, x, sigma_in, conditioning, step):
        from modules import prompt_parser

        if conditioning == "cond":
            _, tensor = prompt_parser.reconstruct_multicond_batch(extra_args["cond"], step)
        else:
            tensor = prompt_parser.reconstruct_cond_batch(extra_args["uncond"], step)
        image_cond = [extra_args["image_cond"]]
        if isinstance(tensor, dict):  # SDXL: crossattn and vector, as the CFGDenoiser passes them
            cond = {**tensor, "c_concat": image_cond}
        else:
            cond = {"c_crossattn": [tensor], "c_concat": image_cond}
        return model.inner_model(x, sigma_in, cond=cond)


Run = A1111Run  # what dispatch.wrap_sample instantiates for this host
