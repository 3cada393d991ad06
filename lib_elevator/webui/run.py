"""What VideoElevator does the same way on every WebUI host (AUTOMATIC1111 1.9/1.10, Forge 2).

Frames are the WebUI batch. ``p.sample`` is wrapped (never replaced): for its duration the
sampler the WebUI creates gets ``sample_elevator`` as its k-diffusion function, so the WebUI's
``CFGDenoiser`` (prompt editing, ControlNet hooks, interrupt, skip, progress, live preview) serves
both the T2I and the T2V passes, and the user's Schedule type picks the σ ladder. How the UNet is
patched, how the T2V's σ→t table is swapped and how a single-branch pass is made differ per host:
``ElevatorRun`` leaves those to ``a1111.A1111Run`` and ``forge.ForgeRun``; ``host_for`` picks one
by looking at the loaded model (``dispatch.host_for``). WebUI modules are imported inside
functions only; nothing here runs at import time.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace

import torch

from ..context import resolve_context, windowed
from ..motion.inject import T2VSwitch
from ..params import ElevatorParams
from ..sampler import ElevatorPlan, PassCounter, sample_elevator
from ..schedules import VPSchedule, c_in, ddim_sigmas
from .request import MotionModel

NOISE_SEED_SALT = 0x5EED_E1E7
ELEVATOR_SAMPLER = "Euler"
AUTOMATIC = "Automatic"


def elevator_sampler_and_schedule(sampler_name, scheduler) -> tuple[str, str]:
    """The (sampler, Schedule type) a VideoElevator request runs with, for ``p`` before its prompt
    schedules are built.

    The elevator makes its own first-order steps, so whatever the dropdown says it runs on Euler's
    k-diffusion sampler object: prompt editing is then scheduled over exactly N steps (second-order
    samplers would schedule 2N) and no sampler-specific arguments (``noise_sampler``, ``n``…) are
    passed. The Schedule type stays the user's, including one named in an old-style sampler name
    ("DPM++ 2M Karras"); "Automatic" stays "Automatic" and means the paper's ladder (``paper_ladder``).
    The infotext then says what ran, and pasting it back reproduces the video.
    """
    from modules import sd_samplers

    _, schedule = sd_samplers.get_sampler_and_scheduler(sampler_name, scheduler, convert_automatic=False)
    return ELEVATOR_SAMPLER, schedule


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
        """Arm for one call; the rows are dropped afterwards, so no tensor outlives the call."""
        self.armed, self.rows = True, None
        try:
            yield self
        finally:
            self.armed, self.rows = False, None


def raise_if_interrupted() -> None:
    from modules import sd_samplers_common, shared

    if shared.state.interrupted or shared.state.skipped:
        raise sd_samplers_common.InterruptedException


@dataclass
class PassProgress:
    """The WebUI's progress counted in UNet passes, so the bar, the ETA and the live preview move
    through the T2V and inversion passes too (they happen inside one T2I step).

    ``state.sampling_steps`` is the run's pass total (``ElevatorPlan.passes``) and the sampler's own
    ``callback`` is called once per pass with ``i`` = the pass just done, as k-diffusion calls it once
    per step: that sets ``state.sampling_step`` and ticks the console's total bar.
    """

    callback: object
    total: int
    done: float = 0.0

    def start(self) -> None:
        from modules import shared

        shared.state.sampling_steps, shared.state.sampling_step = self.total, 0
        shared.total_tqdm.updateTotal(max(shared.state.job_count, 1) * self.total)

    def __call__(self, x, denoised, sigma, passes: float) -> None:
        """``passes`` F-frame passes done (a context window's call is a fraction of one)."""
        before = int(self.done + 1e-6)  # window shares (e.g. thirds) need not add up exactly in floats
        self.done += passes
        for done in range(before + 1, int(self.done + 1e-6) + 1):
            if self.callback is not None:
                self.callback({"x": x, "i": min(done, self.total) - 1, "sigma": sigma, "sigma_hat": sigma,
                               "denoised": denoised})


@dataclass
class WebUIDenoiser:
    """The WebUI's ``CFGDenoiser`` as a ``sample_elevator`` denoiser.

    CFG calls go through the CFGDenoiser itself (with its step reset to the current T2I step, for
    prompt editing); single-branch calls (correction, inversion) go to the host's
    ``single_branch(extra_args, x, σ, "cond"|"uncond", step)``, one F-frame pass each. With
    ``frames_per_batch`` every call goes through them ``frames_per_batch`` frames at a time, each chunk
    with its frames' rows of the batch conditioning and frame 0's attention keys/values held by
    ``anchors`` (the T2I passes: the one-batch result with bounded memory). Interrupt and skip are
    checked before every call of every stage, so a stop takes effect within one UNet call.
    """

    model: object
    extra_args: dict
    schedule: VPSchedule
    frames: int
    single_branch: object
    capture: CondCapture
    progress: object  # ``progress(x, denoised, sigma, passes)`` after every call
    solver: str = "ddim"
    cond_scale: float | None = None
    around_call: object = nullcontext  # a context for every model call, given its clip length (the T2V's switches)
    anchors: object = None  # ``attention.FrameAnchors`` of the inflated T2I, for frame chunks
    frames_per_batch: int = 0
    step: int = 0

    def begin_step(self, k: int) -> None:
        self.step = k

    def _sigma_in(self, x, sigma):
        return torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)

    def _in_chunks(self, x, call) -> list:
        """``call(x_rows, extra_args)`` (a tuple of tensors or None) over the whole clip, or over frame
        chunks with frame 0 anchored, the chunks' results joined along the frames."""
        size = self.frames_per_batch
        if not size or size >= self.frames:
            return list(call(x, self.extra_args))
        parts = []
        with self.anchors.anchored():
            for start in range(0, self.frames, size):
                indices = list(range(start, min(start + size, self.frames)))
                with self.anchors.frame_chunk(len(indices)):
                    parts.append(call(x[indices], _frame_rows(self.extra_args, indices)))
        return [None if any(part is None for part in joined) else torch.cat(joined) for joined in zip(*parts)]

    def guided(self, x, sigma):
        raise_if_interrupted()  # the hosts' CFGDenoiser checks too; this keeps the promise on any host

        def call(x_rows, extra_args):
            args = dict(extra_args)
            if self.cond_scale is not None:
                args["cond_scale"] = self.cond_scale
            self.model.step = self.step
            with self.capture.recording() as capture:
                denoised = self.model(x_rows, self._sigma_in(x_rows, sigma), **args)
                return denoised, capture.rows[: x_rows.shape[0]] if capture.rows is not None else None

        with self.around_call(self.frames):
            denoised, cond_rows = self._in_chunks(x, call)
        self.progress(x, denoised, sigma, 2 * x.shape[0] / self.frames)
        return denoised, cond_rows

    def _branch(self, x, sigma, conditioning):
        raise_if_interrupted()

        def call(x_rows, extra_args):
            return (self.single_branch(extra_args, x_rows, self._sigma_in(x_rows, sigma), conditioning, self.step),)

        with self.around_call(self.frames):
            denoised, = self._in_chunks(x, call)
        self.progress(x, denoised, sigma, x.shape[0] / self.frames)
        return denoised

    def window(self, indices: list[int]) -> "WebUIDenoiser":
        """This denoiser over the frames ``indices`` only (a T2V context window): the CFGDenoiser
        gets those frames' rows of the WebUI's batch conditioning; its calls count as their share of a
        pass over the whole clip in the progress bar."""
        return replace(self, extra_args=_frame_rows(self.extra_args, indices), frames=len(indices),
                       progress=_scaled(self.progress, len(indices) / self.frames))

    def conditional(self, x, sigma):
        return self._branch(x, sigma, "cond")

    def unconditional(self, x, sigma):
        return self._branch(x, sigma, "uncond")


def _scaled(progress, factor: float):
    """``progress`` with every call's passes multiplied by ``factor``."""
    def scaled(x, denoised, sigma, passes):
        progress(x, denoised, sigma, passes * factor)
    return scaled


def _frame_rows(extra_args: dict, indices: list[int]) -> dict:
    """The CFGDenoiser's arguments for a subset of the batch: prompt i of the batch is frame i."""
    from modules.prompt_parser import MulticondLearnedConditioning

    cond, uncond = extra_args["cond"], extra_args["uncond"]
    rows = dict(extra_args)
    rows["cond"] = MulticondLearnedConditioning(shape=(len(indices),), batch=[cond.batch[i] for i in indices])
    rows["uncond"] = [uncond[i] for i in indices]
    image_cond = extra_args.get("image_cond")
    if image_cond is not None:
        rows["image_cond"] = image_cond[indices]
    return rows


@dataclass
class ElevatorRun:
    """One ``p.sample`` call with VideoElevator: installs every patch, samples, removes them.

    A host subclass says how: ``_install`` (patches entered on the ExitStack, so all are removed
    in ``finally``), ``t2i_schedule``, ``t2v_call`` (the context around every T2V call),
    ``t2v_throughout`` (mode t2v: the whole sampling is one T2V run by the host's own sampler),
    ``single_branch`` and ``anchors``. ``before_sampling`` runs from the script's ``process_before_every_sampling``.
    ``noise`` is the WebUI's unit noise for this batch; a comparison hands the first run's noise to
    the others so every mode starts from the same latents.
    """

    p: object
    params: ElevatorParams
    motion: MotionModel
    seeds: list
    counter: PassCounter = field(default_factory=PassCounter)
    switch: T2VSwitch = field(init=False)
    noise: torch.Tensor | None = None

    def __post_init__(self):
        self.switch = T2VSwitch(self.params.frames)

    def prior_generator(self) -> torch.Generator:
        """The generator of the mixed prior's shared noise: seeded from the batch's first seed."""
        return torch.Generator("cpu").manual_seed((int(self.seeds[0]) ^ NOISE_SEED_SALT) & 0xFFFFFFFF)

    def take_noise(self, p, noise: torch.Tensor) -> None:
        """Called with the WebUI's noise before sampling: keep it (or use the comparison's) and, in
        mode t2v, hand the host's sampler the mixed prior (the elevator mixes it itself)."""
        if self.noise is None:
            self.noise = noise
        if self.params.mode == "t2v":
            p.modified_noise = _mixed_prior(self.noise, self.params.noise_alpha, 1.0, self.prior_generator())
        elif self.noise is not noise:
            p.modified_noise = self.noise

    def _count_t2v_passes(self):
        """The host's sampler calls the UNet itself in mode t2v: count F-frame passes at the first motion module."""
        first = next(module for name, module in self.motion.adapter.named_modules() if name.endswith("motion_modules.0"))
        frames = self.params.frames

        def count(module, args):
            self.counter.add("t2v", args[0].shape[0] // frames)

        return first.register_forward_pre_hook(count)

    def t2v_throughout(self):
        """A context manager making every UNet call of the host's sampler a T2V call."""
        raise NotImplementedError

    def _install(self, patches: ExitStack) -> None:
        raise NotImplementedError

    def t2i_schedule(self) -> VPSchedule:
        raise NotImplementedError

    def t2v_call(self, model, frames: int):
        """A context manager for one T2V call of the CFGDenoiser ``model`` over ``frames``-frame clips."""
        raise NotImplementedError

    def single_branch(self, model, extra_args, x, sigma_in, conditioning, step):
        raise NotImplementedError

    @property
    def capture(self) -> CondCapture:
        raise NotImplementedError

    @property
    def anchors(self):
        """The ``attention.FrameAnchors`` the inflated T2I's first-frame attention reads."""
        raise NotImplementedError

    def before_sampling(self, p) -> None:
        """Nothing to do by default: A1111 patches in ``installed``."""

    def check_ready(self, model) -> None:
        """Raise if a patch the host applies late is missing when sampling starts."""

    def sampler_function(self):
        """The k-diffusion sampler function the WebUI's ``KDiffusionSampler`` will call."""
        run = self

        def sample_videoelevator(model, x, sigmas, extra_args=None, callback=None, disable=None):
            """k-diffusion's signature; returns the VP latent at the ladder's last level (x itself at σ = 0)."""
            from modules import shared

            run.check_ready(model)
            frames = run.params.frames
            extra = extra_args or {}
            generator = run.prior_generator()
            sigma_max = float(sigmas[0])
            noise_scale = (1 + sigma_max**2) ** 0.5 if shared.opts.sgm_noise_multiplier else sigma_max
            x = _mixed_prior(x, run.params.noise_alpha, noise_scale, generator)

            def branch(extra_args, x_in, sigma_in, conditioning, step):
                return run.single_branch(model, extra_args, x_in, sigma_in, conditioning, step)

            progress = PassProgress(callback, ElevatorPlan.build(len(sigmas) - 1, run.params).passes)
            t2i = WebUIDenoiser(model, extra, run.t2i_schedule(), frames, branch, run.capture, progress,
                                anchors=run.anchors, frames_per_batch=run.params.unet_batch_frames())
            context = resolve_context(run.params, run.motion.info.positional_encoding_length)
            # overlapping windows see some frames twice: the bar counts a windowed call as one call, as planned
            window_frames = frames if context is None else sum(map(len, context.windows(frames)))
            t2v = windowed(WebUIDenoiser(model, extra, run.motion.info.schedule, frames, branch, run.capture,
                                         _scaled(progress, frames / window_frames), run.motion.resolved_solver,
                                         cond_scale=run.params.t2v_cfg_scale,
                                         around_call=lambda clip: run.t2v_call(model, clip)), context, frames)

            def noise(sigma, sigma_next):
                return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)

            shared.state.textinfo = "VideoElevator"
            progress.start()
            x = sample_elevator(t2i, t2v, x, sigmas, run.params, disable=disable, noise_sampler=noise,
                                counter=run.counter)
            return x * c_in(float(sigmas[-1]))

        return sample_videoelevator

    def paper_ladder(self, steps: int) -> torch.Tensor:
        """The "Automatic" Schedule type: the paper's DDIM-leading ladder for the loaded checkpoint, ending at σ(0)."""
        return ddim_sigmas(self.t2i_schedule(), steps).float()

    @contextmanager
    def installed(self):
        """Every patch for this sampling call, removed in ``finally`` (the ExitStack unwinds all).

        Modes elevate and t2i sample with ``sample_elevator`` (t2i without refinement); mode t2v keeps
        the WebUI's own sampler, CFG and Schedule type, with the motion modules on for every call.
        """
        from modules import sd_samplers

        made = []
        with ExitStack() as patches:
            patches.callback(_restore_functions, made)
            self._install(patches)
            if self.params.mode == "t2v":
                patches.enter_context(self.t2v_throughout())
                patches.callback(self._count_t2v_passes().remove)
            else:
                patches.enter_context(_patched(sd_samplers, "create_sampler", _elevator_sampler_factory(
                    sd_samplers.create_sampler, self.sampler_function(), made)))
                if (self.p.scheduler or AUTOMATIC) == AUTOMATIC and self.p.sampler_noise_scheduler_override is None:
                    patches.enter_context(_patched(self.p, "sampler_noise_scheduler_override", self.paper_ladder))
            yield


@contextmanager
def _patched(owner, name, value):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _elevator_sampler_factory(create_sampler, function, made: list):
    """``create_sampler`` that returns Euler's k-diffusion sampler object running our function.

    ``before_process`` already set ``p.sampler_name`` to it (``elevator_sampler_and_schedule``); asking
    for it here too keeps the sampler first-order whatever another script did to the name since. Each
    sampler and its own function go into ``made``, for ``_restore_functions``.
    """
    def create(name, model):
        sampler = create_sampler(ELEVATOR_SAMPLER, model)
        made.append((sampler, sampler.func))
        sampler.func = function
        return sampler
    return create


def _restore_functions(made: list) -> None:
    """Give each sampler its own function back: the WebUI keeps samplers alive in reference cycles
    after the job, and ours would keep the whole run (and the request) with them."""
    for sampler, function in made:
        sampler.func = function
    made.clear()


def _mixed_prior(x: torch.Tensor, alpha: float, noise_scale: float, generator: torch.Generator) -> torch.Tensor:
    """Turn the WebUI's per-frame noise x = r·s (s: the sampler's noise scale) into the mixed prior
    z = (α·b + r)/√(1+α²), with b shared by all frames, keeping the scale."""
    scale = (1.0 + alpha**2) ** -0.5
    shared_noise = torch.randn((1, *x.shape[1:]), generator=generator, dtype=torch.float32).to(x.device, x.dtype)
    return shared_noise * (alpha * scale * noise_scale) + x * scale
