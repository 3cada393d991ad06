"""Standalone host: VideoElevator on diffusers models (CPU tests, headless scripting, the CLI).

The T2I is a ``UNet2DConditionModel`` with its VAE and CLIP text encoder. The T2V is, by
default, AnimateDiff/AnimateLCM motion modules injected into that same UNet behind a switch (one
UNet in memory); a separate ``UNetMotionModel`` copy or a ``UNet3DConditionModel`` with its own
text encoder (ZeroScope/ModelScope) also serve. Every patch is installed for one generation and
removed in ``finally``. Models are wrapped as ε→x̂0 (or v→x̂0) denoisers for ``sample_elevator``.
SDXL T2Is (two text encoders, pooled and size conditioning) run the same way, with an SDXL motion
model (AnimateDiff-SDXL, Hotshot-XL) injected into the SDXL UNet.
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Callable

import torch

from ..attention import inflated
from ..context import resolve_context, windowed
from ..compare import COMPARE_ORDER
from ..lora import AlwaysOn, GatedLora
from ..motion.inject import MotionInjection, T2VSwitch, positional_limit
from ..motion.motion_lora import MotionLoras
from ..motion.groupnorm import PerFrameNorm
from ..noise import mixed_noise
from ..params import ElevatorParams, GenerationSettings, ParamError
from ..prompt_travel import interpolate_conditioning, parse_prompt_travel
from ..sampler import PassCounter, sample_elevator
from ..t2v_sampler import sample_t2v, t2v_timesteps_and_sigmas
from ..schedules import ANIMATEDIFF_SCHEDULE, SD_SCHEDULE, VPSchedule, c_in, ddim_sigmas
from .conditioning import TextConditioning
from .resources import ModelShape, RunSize, available_bytes, check_memory

LCM_MAX_STEPS = 50  # AnimateLCM's ladder has 50 original steps

# (z [G·F, C, h, w], t, conditioning with a row per frame [G·F], frames F) -> model output (ε or v) [G·F, C, h, w]
EpsModel = Callable[[torch.Tensor, torch.Tensor, TextConditioning, int], torch.Tensor]
PREDICTION_TYPES = ("epsilon", "v_prediction")


def unet2d_eps(unet) -> EpsModel:
    """A per-frame 2D UNet: each frame is a batch item with its own conditioning row (and SDXL's added conditioning)."""
    def eps(z, t, contexts, frames):
        return unet(z, t, **contexts.unet_kwargs()).sample
    return eps


def video_unet_eps(unet, context_per_frame: bool) -> EpsModel:
    """A video UNet on [G, C, F, h, w]. ``UNetMotionModel`` takes a context row per frame (its added
    conditioning per clip); ``UNet3DConditionModel`` takes one per clip and repeats it itself, so it
    cannot follow a prompt that changes over the frames."""
    def eps(z, t, contexts, frames):
        video = z.unflatten(0, (-1, frames)).transpose(1, 2)
        per_clip = contexts.take(slice(None, None, frames))
        context = contexts.context
        if not context_per_frame:
            if not torch.equal(context, per_clip.context.repeat_interleave(frames, dim=0)):
                raise ValueError("a UNet3D T2V takes one prompt per clip; prompt travel needs a motion-module T2V")
            context = per_clip.context
        out = unet(video, t, encoder_hidden_states=context, **per_clip.added_cond_kwargs()).sample
        return out.transpose(1, 2).flatten(0, 1)
    return eps


@dataclass
class EpsDenoiser:
    """ε- (or v-) prediction model → k-diffusion denoiser with CFG over [negative×F; prompt×F].

    ``cond``/``uncond`` are one prompt's ``TextConditioning`` or, for SD1.x, its context tensor:
    one row for the whole clip, or one per frame (prompt travel). With ``frames_per_batch`` and
    the T2I's ``inflation``, the frames go through the UNet a chunk at a time, frame 0's attention
    context computed once per layer and call (the one-batch result, bounded memory).
    """

    eps_model: EpsModel
    schedule: VPSchedule
    cond: TextConditioning | torch.Tensor  # context [1 or F, seq, dim]
    uncond: TextConditioning | torch.Tensor
    cfg_scale: float
    frames: int
    solver: str = "ddim"
    dtype: torch.dtype = torch.float32
    prediction_type: str = "epsilon"
    inflation: object = None
    frames_per_batch: int = 0

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {self.prediction_type!r} is not supported; one of {PREDICTION_TYPES}")
        self.cond, self.uncond = TextConditioning.of(self.cond), TextConditioning.of(self.uncond)

    def _frame_rows(self, conditioning: TextConditioning) -> TextConditioning:
        return conditioning if conditioning.rows == self.frames else conditioning.repeated(self.frames)

    def window(self, indices: list[int]) -> "EpsDenoiser":
        """This denoiser over the frames ``indices`` only (a context window of the T2V)."""
        def pick(conditioning):
            return conditioning if conditioning.rows == 1 else conditioning.take(indices)
        return replace(self, cond=pick(self.cond), uncond=pick(self.uncond), frames=len(indices))

    def _model(self, z, t, contexts):
        chunk = self.frames_per_batch
        if self.inflation is None or not chunk or chunk >= self.frames:
            return self.eps_model(z, t, contexts, self.frames)
        clips = z.unflatten(0, (-1, self.frames))
        rows = torch.arange(contexts.rows, device=z.device).unflatten(0, (-1, self.frames))
        outputs = []
        with self.inflation.anchored():
            for start in range(0, self.frames, chunk):
                part = slice(start, min(start + chunk, self.frames))
                size = part.stop - part.start
                with self.inflation.frame_chunk(size):
                    out = self.eps_model(clips[:, part].flatten(0, 1), t, contexts.take(rows[:, part].flatten()), size)
                outputs.append(out.unflatten(0, (-1, size)))
        return torch.cat(outputs, dim=1).flatten(0, 1)

    def _denoise(self, x, sigma, contexts):
        t = torch.tensor(self.schedule.timestep(sigma), dtype=torch.float32, device=x.device)
        scale = c_in(sigma)
        out = self._model((x * scale).to(self.dtype), t, contexts.to(self.dtype)).to(x.dtype)
        if self.prediction_type == "v_prediction":  # x̂0 = √ᾱ·z − √(1−ᾱ)·v with √ᾱ = c_in, √(1−ᾱ) = σ·c_in
            return x * scale**2 - out * (sigma * scale)
        return x - sigma * out

    def guided(self, x, sigma):
        both = self._denoise(torch.cat([x, x]), sigma,
                             TextConditioning.cat([self._frame_rows(self.uncond), self._frame_rows(self.cond)]))
        uncond_x0, cond_x0 = both.chunk(2)
        return uncond_x0 + self.cfg_scale * (cond_x0 - uncond_x0), cond_x0

    def conditional(self, x, sigma):
        return self._denoise(x, sigma, self._frame_rows(self.cond))

    def unconditional(self, x, sigma):
        return self._denoise(x, sigma, self._frame_rows(self.uncond))


@dataclass
class TextEncoder:
    tokenizer: object
    model: torch.nn.Module

    @torch.no_grad()
    def __call__(self, prompt: str) -> torch.Tensor:
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.model(ids.to(self.model.device))[0]


@dataclass
class SeparateT2V:
    """A T2V with its own UNet (a ``UNetMotionModel`` copy, or a UNet3D with its own CLIP)."""

    eps_model: EpsModel
    schedule: VPSchedule
    solver: str
    modules: tuple = ()  # the torch modules behind eps_model, for moving between devices
    text_encoder: TextEncoder | None = None
    description: str = ""
    lora: dict | None = None  # a T2V-only LoRA state dict (e.g. AnimateLCM's t2v LoRA)
    motion_loras: tuple = ()  # (MotionLora, weight) pairs, for a UNetMotionModel

    @property
    def frame_limit(self) -> int | None:
        """The longest clip one call can take (the motion modules' positional encoding), if any."""
        return positional_limit(self.modules[:1])

    def prepare(self, stack: ExitStack, t2i_unet, inflation, params: ElevatorParams) -> EpsModel:
        """The ε model for this run; a T2V LoRA is hooked on for the run (always on: the UNet is T2V-only)."""
        if params.motion_norm == "per_frame":
            stack.enter_context(PerFrameNorm(self.modules[:1]))
        if self.lora is not None:
            stack.enter_context(GatedLora(self.modules[0], self.lora, AlwaysOn(), params.t2v_lora_scale))
        if self.motion_loras:
            stack.enter_context(MotionLoras(self.modules[0], self.motion_loras))
        return self.eps_model


@dataclass
class InjectedMotionT2V:
    """AnimateDiff/AnimateLCM (or SDXL) motion modules run inside the T2I's own UNet: one UNet in memory.

    During a T2V call the motion modules (and the T2V LoRA) are switched on and the T2I's
    cross-frame attention off; between calls the UNet is exactly the T2I. Hotshot-XL also has the
    UNet's ResNet GroupNorms pool over frames during T2V calls (``frame_pooled_spatial_norms``).
    """

    adapter: torch.nn.Module
    schedule: VPSchedule = ANIMATEDIFF_SCHEDULE
    solver: str = "lcm"
    description: str = "motion modules in the T2I UNet"
    lora: dict | None = None  # a T2V-only LoRA state dict (e.g. AnimateLCM's t2v LoRA)
    frame_pooled_spatial_norms: bool = False
    motion_loras: tuple = ()  # (MotionLora, weight) pairs, hooked on the adapter's motion modules
    text_encoder = None

    @classmethod
    def for_motion_model(cls, adapter, info, solver: str = "auto", lora: dict | None = None) -> "InjectedMotionT2V":
        """The T2V for a loaded motion model: its training schedule, its solver, its GroupNorm placement."""
        solver = info.default_solver if solver == "auto" else solver
        return cls(adapter, info.schedule, solver, f"{info.kind.label} ({solver})", lora,
                   info.frame_pooled_spatial_norms)

    @property
    def modules(self) -> tuple:
        return (self.adapter,)

    @property
    def frame_limit(self) -> int | None:
        return positional_limit([self.adapter])

    def prepare(self, stack: ExitStack, t2i_unet, inflation, params: ElevatorParams) -> EpsModel:
        switch = T2VSwitch(params.frames)
        stack.enter_context(MotionInjection(t2i_unet, self.adapter, switch, self.frame_pooled_spatial_norms,
                                            motion_norm=params.motion_norm))
        if self.lora is not None:
            stack.enter_context(GatedLora(t2i_unet, self.lora, switch, params.t2v_lora_scale))
        if self.motion_loras:
            stack.enter_context(MotionLoras(self.adapter, self.motion_loras))
        per_frame = unet2d_eps(t2i_unet)

        def eps(z, t, contexts, frames):
            with switch.on(frames), inflation.paused():
                return per_frame(z, t, contexts, frames)
        return eps


T2VModel = SeparateT2V | InjectedMotionT2V


def t2v_from_motion_unet(unet_motion, solver: str = "lcm", schedule: VPSchedule = ANIMATEDIFF_SCHEDULE) -> SeparateT2V:
    """A diffusers ``UNetMotionModel`` copy (AnimateDiff/AnimateLCM): shares the T2I's prompt embeddings."""
    return SeparateT2V(video_unet_eps(unet_motion, context_per_frame=True), schedule, solver, (unet_motion,),
                       description=f"UNetMotionModel copy ({solver})")


def t2v_from_unet3d(unet3d, text_encoder: TextEncoder, schedule: VPSchedule = SD_SCHEDULE,
                    solver: str = "ddim") -> SeparateT2V:
    """A diffusers ``UNet3DConditionModel`` (ZeroScope/ModelScope) with its own CLIP."""
    return SeparateT2V(video_unet_eps(unet3d, context_per_frame=False), schedule, solver,
                       (unet3d, text_encoder.model), text_encoder, description="UNet3D")


@dataclass
class ElevatorPipeline:
    """The T2I's components plus a T2V; everything the standalone generation needs."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: TextEncoder
    t2v: T2VModel
    t2i_schedule: VPSchedule = SD_SCHEDULE
    vae_chunk: int = 4
    prediction_type: str = "epsilon"  # the T2I checkpoint's; the injected T2V shares its UNet and so its output

    def to(self, device) -> "ElevatorPipeline":
        """Move every model, the T2V's included, to ``device``."""
        for model in (self.unet, self.vae, self.text_encoder.model, *self.t2v.modules):
            model.to(device)
        return self

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VP latents → images in [-1, 1], a few frames at a time to bound memory."""
        scaled = latents / self.vae.config.scaling_factor
        dtype = next(self.vae.parameters()).dtype
        return torch.cat([self.vae.decode(chunk.to(dtype)).sample.float()
                          for chunk in scaled.split(self.vae_chunk)])


@dataclass
class ElevatorResult:
    latents: torch.Tensor  # final VP latents [F, 4, h, w]
    images: torch.Tensor | None  # decoded frames [F, 3, H, W] in [-1, 1]
    counter: PassCounter
    seconds: float
    params: ElevatorParams  # as run: fitted to the step count (see ``notes``)
    seed: int | None
    notes: tuple[str, ...] = ()  # how parameters left at their defaults were fitted to the step count


def encode_prompt(encoder, prompt: str, params: ElevatorParams) -> TextConditioning:
    """One row for a plain prompt; a row per frame for a prompt with frame keys (prompt travel)."""
    keys = parse_prompt_travel(prompt, params.frames)
    if keys is None:
        return TextConditioning.of(encoder(prompt))
    key_rows = TextConditioning.cat([TextConditioning.of(encoder(key.prompt)) for key in keys])
    frames = [key.frame for key in keys]
    return key_rows.map(lambda rows: interpolate_conditioning(rows, frames, params.frames, params.closed_loop,
                                                              params.prompt_interpolation))


def generator_noise_sampler(shape, generator: torch.Generator, device, dtype):
    """Seeded SDEdit/LCM noise, drawn from the same generator as the initial latents."""
    return lambda sigma, sigma_next: torch.randn(shape, generator=generator, device=device, dtype=dtype)


class NonFiniteError(ValueError):
    """The sampler produced NaN or infinite values; nothing is written from them."""


def as_params(params) -> ElevatorParams:
    """``ElevatorParams`` from an instance, an API-style dict, or None (the defaults)."""
    if params is None:
        return ElevatorParams()
    if isinstance(params, ElevatorParams):
        return params
    if isinstance(params, dict):
        return ElevatorParams.from_dict(params)
    raise ParamError("params", params, "an ElevatorParams, a dict of its fields, or None for the defaults")


def largest_unet_batch(params: ElevatorParams, context) -> int:
    """Frames in the largest UNet call: the T2I's frame chunk or the T2V's window (the whole clip without one)."""
    return max(params.unet_batch_frames(), context.length if context else params.frames)


def check_generation_memory(pipe: ElevatorPipeline, settings: GenerationSettings, params: ElevatorParams,
                            context) -> None:
    """Refuse a run whose activations exceed the free memory of the pipeline's device."""
    device = next(pipe.unet.parameters()).device
    unet_config, vae_config = pipe.unet.config, pipe.vae.config
    shape = ModelShape(tuple(unet_config.block_out_channels), unet_config.layers_per_block,
                       tuple(vae_config.block_out_channels), unet_config.in_channels, pipe.vae_chunk)
    size = RunSize(params.frames, settings.width, settings.height, settings.steps, largest_unet_batch(params, context))
    dtype_bytes = next(pipe.unet.parameters()).element_size()
    check_memory(shape, size, dtype_bytes, 0, available_bytes(device), f"the {device.type} device")


@torch.no_grad()
def generate(pipe: ElevatorPipeline, prompt: str, negative_prompt: str = "", *,
             params: ElevatorParams | dict | None = None, width: int = 512, height: int = 512, steps: int = 30,
             cfg_scale: float = 7.5, seed: int | None = 0, latents: torch.Tensor | None = None,
             noise_sampler=None, decode: bool = True, callback=None, disable_progress: bool | None = None,
             check_memory: bool = True) -> ElevatorResult:
    """Generate one video in ``params.mode``. ``latents`` (VP, [F, 4, h, w]) and ``noise_sampler``
    override the seed.

    Every argument is checked before the first UNet call, with the same errors as the CLI. At a
    low step count the parameters left at their defaults are fitted (``ElevatorParams.fitted_to_steps``;
    ``result.notes`` says what changed); values a caller changed from the defaults are kept or refused.
    Mode ``elevate`` runs VideoElevator; ``t2i`` the same inflated T2I with no refinement (the
    baseline the elevator is compared with); ``t2v`` the T2V alone on its own ladder (its solver,
    ``t2v_cfg_scale``) from the same initial latents. ``check_memory=False`` skips the peak-memory estimate.
    """
    params = as_params(params)
    settings = GenerationSettings(width=width, height=height, steps=steps, cfg_scale=cfg_scale,
                                  seed=0 if seed is None else seed)
    for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if not isinstance(text, str):
            raise ParamError(name, text, "text")
    params, notes = params.fitted_to_steps(settings.steps, keep=params.non_default_fields())
    if params.mode == "t2v" and pipe.t2v.solver == "lcm" and settings.steps > LCM_MAX_STEPS:
        raise ParamError("steps", settings.steps, f"the LCM solver takes at most {LCM_MAX_STEPS} steps in mode t2v")
    width, height, steps, cfg_scale = settings.width, settings.height, settings.steps, settings.cfg_scale
    seed = settings.seed if seed is not None else None
    device = next(pipe.unet.parameters()).device
    dtype = next(pipe.unet.parameters()).dtype
    frames = params.frames
    latent_shape = (pipe.unet.config.in_channels, height // pipe.vae_scale, width // pipe.vae_scale)
    if latents is not None and (not isinstance(latents, torch.Tensor) or latents.shape != (frames, *latent_shape)):
        raise ParamError("latents", tuple(getattr(latents, "shape", ())) or type(latents).__name__,
                         f"a tensor of shape {(frames, *latent_shape)}")
    if latents is not None and not torch.isfinite(latents).all():
        raise ParamError("latents", "a tensor with NaN or infinite values", "finite values")
    context = resolve_context(params, pipe.t2v.frame_limit)
    if check_memory:
        check_generation_memory(pipe, settings, params, context)
    generator = torch.Generator("cpu").manual_seed(seed) if seed is not None else None
    if latents is None:
        latents = mixed_noise(frames, latent_shape, params.noise_alpha, generator=generator)
    if noise_sampler is None and generator is not None:
        noise_sampler = generator_noise_sampler((frames, *latent_shape), generator, "cpu", torch.float32)

    cond = encode_prompt(pipe.text_encoder, prompt, params).sized(width, height)
    uncond = TextConditioning.of(pipe.text_encoder(negative_prompt)).sized(width, height)
    t2v_text = pipe.t2v.text_encoder
    t2v_cond, t2v_uncond = ((encode_prompt(t2v_text, prompt, params), t2v_text(negative_prompt)) if t2v_text
                            else (cond, uncond))
    t2v_prediction = "epsilon" if t2v_text else pipe.prediction_type
    device_noise = (lambda s, sn, inner=noise_sampler: inner(s, sn).to(device)) if noise_sampler else None
    counter = PassCounter()
    started = time.perf_counter()
    with ExitStack() as patches:
        inflation = patches.enter_context(inflated(pipe.unet, frames))
        t2i = EpsDenoiser(unet2d_eps(pipe.unet), pipe.t2i_schedule, cond, uncond, cfg_scale, frames, dtype=dtype,
                          prediction_type=pipe.prediction_type, inflation=inflation,
                          frames_per_batch=params.unet_batch_frames())
        t2v_eps = pipe.t2v.prepare(patches, pipe.unet, inflation, params)
        t2v = windowed(EpsDenoiser(t2v_eps, pipe.t2v.schedule, t2v_cond, t2v_uncond, params.t2v_cfg_scale, frames,
                                   solver=pipe.t2v.solver, dtype=dtype, prediction_type=t2v_prediction),
                       context, frames)
        if params.mode == "t2v":
            timesteps, sigmas = t2v_timesteps_and_sigmas(pipe.t2v.schedule, pipe.t2v.solver, steps)
            x = latents.to(device, torch.float32) / c_in(sigmas[0])
            x = sample_t2v(t2v, x, timesteps, sigmas, callback=callback, disable=disable_progress,
                           noise_sampler=device_noise, counter=counter)
        else:
            sigmas = [float(s) for s in ddim_sigmas(pipe.t2i_schedule, steps)]
            x = latents.to(device, torch.float32) / c_in(sigmas[0])
            x = sample_elevator(t2i, t2v, x, sigmas, params, callback=callback, disable=disable_progress,
                                noise_sampler=device_noise, counter=counter)
    final = x * c_in(sigmas[-1])
    _require_finite(final, "latents", dtype)
    images = pipe.decode(final) if decode else None
    if images is not None:
        _require_finite(images, "decoded frames", dtype)
    return ElevatorResult(final, images, counter, time.perf_counter() - started, params, seed, tuple(notes))


def generate_comparison(pipe: ElevatorPipeline, prompt: str, negative_prompt: str = "", *,
                        params: ElevatorParams | dict | None = None, **options) -> dict[str, ElevatorResult]:
    """One video per mode (``COMPARE_ORDER``) from the same seed, so the same initial noise.

    ``options`` are ``generate``'s keyword arguments (give a seed, not a stateful ``noise_sampler``);
    ``params.mode`` is ignored.
    """
    params = as_params(params)
    return {mode: generate(pipe, prompt, negative_prompt, params=dataclasses.replace(params, mode=mode), **options)
            for mode in COMPARE_ORDER}


def _require_finite(values: torch.Tensor, what: str, dtype: torch.dtype) -> None:
    if not torch.isfinite(values).all():
        hint = "use float32" if dtype != torch.float32 else "lower cfg_scale or check the model files"
        raise NonFiniteError(f"the {what} came out with NaN or infinite values (nothing was written); {hint}")
