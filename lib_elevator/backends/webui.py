"""What VideoElevator does the same way on every WebUI host (AUTOMATIC1111 1.9/1.10, Forge 2).

Frames are the WebUI batch. ``p.sample`` is wrapped (never replaced): for its duration the
sampler the WebUI creates gets ``sample_elevator`` as its k-diffusion function, so the WebUI's
``CFGDenoiser`` (prompt editing, ControlNet hooks, interrupt, skip, progress, live preview) serves
both the T2I and the T2V passes, and the user's Schedule type picks the σ ladder. How the UNet is
patched, how the T2V's σ→t table is swapped and how a single-branch pass is made differ per host:
``ElevatorRun`` leaves those to ``a1111.A1111Run`` and ``forge.ForgeRun``; ``host_for`` picks one
by looking at the loaded model.

Requests (UI or API), refusals shared by the hosts, model folders and video outputs live here
too. WebUI modules are imported inside functions only; nothing here runs at import time.
"""
from __future__ import annotations

import re
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from ..motion import check_fits_unet
from ..motion.inject import T2VSwitch
from ..params import ElevatorParams
from ..sampler import PassCounter, sample_elevator
from ..schedules import ANIMATEDIFF_SCHEDULE, VPSchedule

NOISE_SEED_SALT = 0x5EED_E1E7
AND_PROMPT = re.compile(r"\bAND\b")
SCRIPT_FIELDS = ("enabled", "motion_model", "t2v_lora", "solver", "formats", "loop")
SOLVERS = ("auto", "ddim", "lcm")
DEFAULT_FORMATS = ("mp4", "gif")


class RefusedError(ValueError):
    """A request VideoElevator cannot run; raised before anything is changed."""


class RequestError(ValueError):
    """A bad VideoElevator request. ``status_code``/``detail`` make the WebUI API answer HTTP 422."""

    def __init__(self, message: str):
        super().__init__(message)
        self.status_code = 422
        self.detail = message


def host_for(sd_model):
    """The adapter module for the loaded model: Forge 2 engines carry ``forge_objects``."""
    if getattr(sd_model, "forge_objects", None) is not None:
        from . import forge

        return forge
    from . import a1111

    return a1111


@dataclass
class MotionModel:
    """What the script resolved for this request: the adapter, what it is, and an optional T2V LoRA."""

    name: str
    adapter: torch.nn.Module
    info: object
    solver: str = "auto"
    lora: dict | None = None
    lora_name: str = ""

    @property
    def resolved_solver(self) -> str:
        if self.solver != "auto":
            return self.solver
        return self.info.default_solver


def _unet_shape(unet) -> tuple:
    """(block channels, text width, layers per block) of an ldm-layout UNet (A1111's and Forge's
    have the same tree), for the motion-module fit check."""
    channels = tuple(unet.model_channels * mult for mult in unet.channel_mult)
    text_width = next(m.attn2.to_k.in_features for m in unet.modules() if hasattr(m, "attn2"))
    return channels, text_width, unet.num_res_blocks[0]


def motion_fit_reasons(motion: MotionModel | None, unet) -> list[str]:
    """Why the motion model cannot run in this ldm-layout UNet (none when it fits or none is chosen)."""
    if motion is None:
        return []
    try:
        check_fits_unet(motion.info, *_unet_shape(unet))
    except ValueError as error:
        return [str(error)]
    return []


def request_refusal_reasons(p, params: ElevatorParams, motion: MotionModel | None) -> list[str]:
    """What no host can honour, whatever the checkpoint: the request's own conflicts."""
    reasons = []
    if motion is None:
        reasons.append("no motion model selected")
    prompts = [p.prompt] if isinstance(p.prompt, str) else list(p.prompt)
    if any(AND_PROMPT.search(prompt) for prompt in prompts):
        reasons.append("composable 'AND' prompts are not supported (the frames must stay whole groups)")
    if getattr(p, "enable_hr", False):
        reasons.append("hires fix is not supported with VideoElevator; upscale the video afterwards")
    if _animatediff_enabled(p):
        reasons.append("AnimateDiff is enabled in the same request; both change the UNet and its schedule, "
                       "so switch one of them off")
    if motion is not None and motion.info.frame_count_problem(params.frames):
        reasons.append(motion.info.frame_count_problem(params.frames))
    return reasons


def _animatediff_enabled(p) -> bool:
    """sd-webui-animatediff's switch: its first argument is an object (UI) or a dict (API) with ``enable``."""
    runner = getattr(p, "scripts", None)
    for script in getattr(runner, "alwayson_scripts", ()):
        if script.title().lower() != "animatediff" or script.args_from is None:
            continue
        first = (p.script_args or [None] * (script.args_from + 1))[script.args_from]
        if first.get("enable", False) if isinstance(first, dict) else getattr(first, "enable", False):
            return True
    return False


class CondCapture:
    """Keeps the conditional branch's x̂0 of the CFGDenoiser's last call while armed, so the
    correction can reuse the main call's conditional half. Each host feeds ``record``."""

    def __init__(self):
        self.armed = False
        self.rows = None

    def record(self, rows) -> None:
        if self.armed:
            self.rows = rows

    @contextmanager
    def recording(self):
        self.armed, self.rows = True, None
        try:
            yield self
        finally:
            self.armed = False


def raise_if_interrupted() -> None:
    from modules import sd_samplers_common, shared

    if shared.state.interrupted or shared.state.skipped:
        raise sd_samplers_common.InterruptedException


@dataclass
class WebUIDenoiser:
    """The WebUI's ``CFGDenoiser`` as a ``sample_elevator`` denoiser.

    CFG calls go through the CFGDenoiser itself (with its step reset to the current T2I step, for
    prompt editing); single-branch calls (correction, inversion) go to the host's
    ``single_branch(x, σ, "cond"|"uncond", step)``, one F-frame pass each.
    """

    model: object
    extra_args: dict
    schedule: VPSchedule
    frames: int
    single_branch: object
    capture: CondCapture
    solver: str = "ddim"
    cond_scale: float | None = None
    around_call: object = nullcontext  # a context for every model call (the T2V's switches)
    step: int = 0

    def begin_step(self, k: int) -> None:
        self.step = k

    def _sigma_in(self, x, sigma):
        return torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)

    def guided(self, x, sigma):
        args = dict(self.extra_args)
        if self.cond_scale is not None:
            args["cond_scale"] = self.cond_scale
        self.model.step = self.step
        with self.around_call(), self.capture.recording() as capture:
            denoised = self.model(x, self._sigma_in(x, sigma), **args)
        cond_rows = capture.rows[: self.frames] if capture.rows is not None else None
        return denoised, cond_rows

    def _branch(self, x, sigma, conditioning):
        raise_if_interrupted()
        with self.around_call():
            return self.single_branch(x, self._sigma_in(x, sigma), conditioning, self.step)

    def conditional(self, x, sigma):
        return self._branch(x, sigma, "cond")

    def unconditional(self, x, sigma):
        return self._branch(x, sigma, "uncond")


@dataclass
class ElevatorRun:
    """One ``p.sample`` call with VideoElevator: installs every patch, samples, removes them.

    A host subclass says how: ``_install`` (patches entered on the ExitStack, so all are removed
    in ``finally``), ``t2i_schedule``, ``t2v_call`` (the context around every T2V call) and
    ``single_branch``. ``before_sampling`` runs from the script's ``process_before_every_sampling``.
    """

    p: object
    params: ElevatorParams
    motion: MotionModel
    seeds: list
    counter: PassCounter = field(default_factory=PassCounter)
    switch: T2VSwitch = field(init=False)

    def __post_init__(self):
        self.switch = T2VSwitch(self.params.frames)

    def _install(self, patches: ExitStack) -> None:
        raise NotImplementedError

    def t2i_schedule(self) -> VPSchedule:
        raise NotImplementedError

    def t2v_call(self, model):
        """A context manager for one T2V call of the CFGDenoiser ``model``."""
        raise NotImplementedError

    def single_branch(self, model, extra_args, x, sigma_in, conditioning, step):
        raise NotImplementedError

    @property
    def capture(self) -> CondCapture:
        raise NotImplementedError

    def before_sampling(self, p) -> None:
        """Nothing to do by default: A1111 patches in ``installed``."""

    def check_ready(self, model) -> None:
        """Raise if a patch the host applies late is missing when sampling starts."""

    def sampler_function(self):
        """The k-diffusion sampler function the WebUI's ``KDiffusionSampler`` will call."""
        run = self

        def sample_videoelevator(model, x, sigmas, extra_args=None, callback=None, disable=None):
            from modules import shared

            run.check_ready(model)
            frames = run.params.frames
            extra = extra_args or {}
            generator = torch.Generator("cpu").manual_seed((int(run.seeds[0]) ^ NOISE_SEED_SALT) & 0xFFFFFFFF)
            sigma_max = float(sigmas[0])
            noise_scale = (1 + sigma_max**2) ** 0.5 if shared.opts.sgm_noise_multiplier else sigma_max
            x = _mixed_prior(x, run.params.noise_alpha, noise_scale, generator)

            def branch(x_in, sigma_in, conditioning, step):
                return run.single_branch(model, extra, x_in, sigma_in, conditioning, step)

            t2i = WebUIDenoiser(model, extra, run.t2i_schedule(), frames, branch, run.capture)
            t2v = WebUIDenoiser(model, extra, ANIMATEDIFF_SCHEDULE, frames, branch, run.capture,
                                run.motion.resolved_solver, cond_scale=run.params.t2v_cfg_scale,
                                around_call=lambda: run.t2v_call(model))

            def noise(sigma, sigma_next):
                return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)

            shared.state.textinfo = "VideoElevator"
            return sample_elevator(t2i, t2v, x, sigmas, run.params, callback=callback, disable=disable,
                                   noise_sampler=noise, counter=run.counter)

        return sample_videoelevator

    @contextmanager
    def installed(self):
        """Every patch for this sampling call, removed in ``finally`` (the ExitStack unwinds all)."""
        from modules import sd_samplers

        with ExitStack() as patches:
            self._install(patches)
            patches.enter_context(_patched(sd_samplers, "create_sampler", _elevator_sampler_factory(
                sd_samplers.create_sampler, self.sampler_function())))
            yield


@contextmanager
def _patched(owner, name, value):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _elevator_sampler_factory(create_sampler, function):
    """``create_sampler`` that returns a plain k-diffusion sampler running our function.

    The elevator makes its own DDIM-equivalent σ-space steps, so only the sampler's σ ladder (the
    user's Schedule type) matters. Samplers in another convention (DDIM/PLMS/UniPC work in
    timesteps, LCM has its own denoiser) are swapped for Euler's k-diffusion sampler.
    """
    def create(name, model):
        from modules import sd_samplers_kdiffusion

        sampler = create_sampler(name, model)
        if type(sampler) is not sd_samplers_kdiffusion.KDiffusionSampler:
            sampler = create_sampler("Euler", model)
        sampler.func = function
        return sampler
    return create


def _mixed_prior(x: torch.Tensor, alpha: float, noise_scale: float, generator: torch.Generator) -> torch.Tensor:
    """Turn the WebUI's per-frame noise x = r·s (s: the sampler's noise scale) into the mixed prior
    z = (α·b + r)/√(1+α²), with b shared by all frames, keeping the scale."""
    scale = (1.0 + alpha**2) ** -0.5
    shared_noise = torch.randn((1, *x.shape[1:]), generator=generator, dtype=torch.float32).to(x.device, x.dtype)
    return shared_noise * (alpha * scale * noise_scale) + x * scale


def refusal_reasons(p, params: ElevatorParams, motion: MotionModel | None) -> list[str]:
    """Everything about this request the loaded model's host cannot honour, in a user's words."""
    return host_for(p.sd_model).refusal_reasons(p, params, motion)


def refuse(p, error: Exception) -> None:
    """Make this request fail with ``error``'s message, changing nothing else.

    The WebUI logs and ignores exceptions raised in ``before_process`` (it would then render a
    plain image), so the refusal is raised from ``p.sample`` instead: txt2img shows it, the API
    answers HTTP 422 with it.
    """
    message = str(error) if str(error).startswith("VideoElevator") else f"VideoElevator: {error}"

    def sample(*args, **kwargs):
        raise RequestError(message)

    p.sample = sample


def wrap_sample(p, params: ElevatorParams, motion: MotionModel, runs: list) -> None:
    """Shadow ``p.sample`` with a wrapper that runs the original inside the host's ``ElevatorRun``."""
    original = p.sample

    def sample(conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        reasons = refusal_reasons(p, params, motion)  # the checkpoint may have changed since before_process
        if reasons:
            raise RefusedError("VideoElevator: " + "; ".join(reasons))
        run = host_for(p.sd_model).Run(p, params, motion, list(seeds))
        runs.append(run)
        with run.installed():
            return original(conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts)

    p.sample = sample


# --- requests, folders and outputs -------------------------------------------------------------

def param_field_names() -> tuple:
    from ..params import field_specs

    return tuple(spec.name for spec in field_specs())


@dataclass(frozen=True)
class ElevatorRequest:
    """The script's arguments: from the UI (positional) or the API (one dict of schema names)."""

    enabled: bool
    motion_model: str
    t2v_lora: str
    solver: str
    formats: tuple
    loop: int
    params: ElevatorParams

    @classmethod
    def from_script_args(cls, args) -> "ElevatorRequest":
        from ..params import ParamError

        if args and isinstance(args[0], dict):
            values = {"enabled": True, **args[0]}
        else:
            values = dict(zip(SCRIPT_FIELDS + param_field_names(), args))
        known = set(SCRIPT_FIELDS) | set(param_field_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise RequestError(f"VideoElevator: unknown field {unknown[0]!r}; known fields are {', '.join(sorted(known))}")
        try:
            params = ElevatorParams.from_dict({k: v for k, v in values.items() if k not in SCRIPT_FIELDS})
        except ParamError as error:
            raise RequestError(str(error)) from None
        formats = values.get("formats", DEFAULT_FORMATS)
        formats = tuple(formats.split(",") if isinstance(formats, str) else formats)
        from ..video import FORMATS

        bad = [fmt for fmt in formats if fmt not in FORMATS]
        if bad or not formats:
            raise RequestError(f"VideoElevator: formats={list(formats)!r} is not allowed; choose from {', '.join(FORMATS)}")
        solver = values.get("solver", "auto") or "auto"
        if solver not in SOLVERS:
            raise RequestError(f"VideoElevator: solver={solver!r} is not allowed; one of {', '.join(SOLVERS)}")
        loop = values.get("loop", 0)
        if not isinstance(loop, (int, float)) or isinstance(loop, bool) or loop < 0 or loop != int(loop):
            raise RequestError(f"VideoElevator: loop={loop!r} is not allowed; a whole number >= 0 (0 = forever)")
        enabled = values.get("enabled", False)
        if not isinstance(enabled, bool):
            raise RequestError(f"VideoElevator: enabled={enabled!r} is not allowed; true or false")
        return cls(enabled, values.get("motion_model") or "", values.get("t2v_lora") or "", solver, formats,
                   int(loop), params)


def motion_folders() -> list:
    """Where motion models are looked for: ours first, then AnimateDiff's usual folders."""
    import os

    from modules import paths, shared

    ours = getattr(shared.cmd_opts, "videoelevator_dir", None) or os.path.join(paths.models_path, "VideoElevator")
    folders = [ours, os.path.join(paths.models_path, "AnimateDiff"),
               os.path.join(paths.script_path, "extensions", "sd-webui-animatediff", "model")]
    animatediff_setting = shared.opts.data.get("animatediff_model_path")
    if animatediff_setting:
        folders.append(animatediff_setting)
    return folders


def lora_folders() -> list:
    """T2V LoRAs: the motion folders and the WebUI's LoRA folder (where AnimateLCM users keep it)."""
    import os

    from modules import paths, shared

    lora_dir = getattr(shared.cmd_opts, "lora_dir", None) or os.path.join(paths.models_path, "Lora")
    return motion_folders() + [lora_dir]


def video_outdir() -> str:
    import datetime
    import os

    from modules import shared

    base = shared.opts.data.get("videoelevator_outdir") or os.path.join(
        os.path.dirname(shared.opts.outdir_txt2img_samples or "outputs/txt2img-images") or "outputs", "txt2vid-videos")
    return os.path.join(base, datetime.date.today().isoformat())


def save_batch_video(p, request: ElevatorRequest, images, batch_number: int) -> list:
    """Write one batch (one video) in every requested format, with the WebUI infotext embedded."""
    import os

    from modules import images as webui_images
    from modules import processing, shared

    from ..video import save_video

    frames = torch.stack([image.detach().float().cpu() for image in images])  # [F, 3, H, W] in [0, 1]
    uint8 = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    outdir = video_outdir()
    os.makedirs(outdir, exist_ok=True)
    number = webui_images.get_next_sequence_number(outdir, "")
    seed = p.all_seeds[batch_number * p.batch_size] if getattr(p, "all_seeds", None) else p.seed
    infotext = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds,
                                          iteration=batch_number, position_in_batch=0)
    formats = list(request.formats)
    if shared.opts.data.get("videoelevator_save_frames", False) and "png" not in formats:
        formats.append("png")
    crf = int(shared.opts.data.get("videoelevator_crf", 18))
    return save_video(uint8, os.path.join(outdir, f"{number:05}-{seed}"), formats, fps=request.params.fps,
                      loop=request.loop, parameters=infotext, crf=crf)
