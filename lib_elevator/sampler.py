"""The VideoElevator loop in σ-space, k-diffusion style: a function over two denoisers.

Each T2I step is a DDIM (η=0) step of the inflated T2I ("spatial quality elevating"); at the
refinement steps the predicted clean video is low-pass filtered, re-noised and denoised a few
steps by the T2V ("temporal motion refining"), then DDIM-inverted back to the T2I's level. A
direct-inversion correction keeps the following steps on the inverted path. See DESIGN §3.

Denoisers map a VE sample x = x0 + σ·ε to x̂0 and carry their own ``schedule`` (σ↔t):

- ``guided(x, σ, **extra) -> (x̂0 with CFG, x̂0 of the conditional branch or None)``  (2 passes)
- ``conditional(x, σ, **extra) -> x̂0``                                      (1 pass)
- ``unconditional(x, σ, **extra) -> x̂0`` (negative-prompt conditioning)     (1 pass)

The T2V denoiser also has ``solver``: "ddim" (its ladder is the T2I's timesteps) or "lcm"
(AnimateLCM's 50-step-origin ladder). A denoiser may define ``begin_step(k)``: it is told the T2I
step every later call belongs to (the WebUI indexes prompt editing by step). A pass is one UNet
evaluation over the F frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .lpff import low_pass_filter, low_pass_mask
from .params import ElevatorParams
from .schedules import c_in, lcm_timesteps

STAGES = ("t2i", "correction", "t2v", "inversion")
LCM_TIMESTEP_SCALING = 10.0
LCM_SIGMA_DATA = 0.5


@dataclass
class PassCounter:
    """F-frame UNet passes per stage, and the passes saved by reusing an identical call."""

    passes: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    reused: int = 0

    def add(self, stage: str, passes: int) -> None:
        self.passes[stage] += passes

    @property
    def total(self) -> int:
        return sum(self.passes.values())


@dataclass(frozen=True)
class ElevatorPlan:
    """What the loop will do for an N-step ladder: where it refines and how many UNet calls."""

    steps: int
    refine_steps: tuple  # indices k at which motion is refined
    filtered_steps: tuple  # the subset of refine_steps that low-pass filter first
    t2v_steps: int
    correction: bool = True

    @classmethod
    def build(cls, steps: int, params: ElevatorParams) -> "ElevatorPlan":
        remaining = params.refine_steps_remaining(steps)
        refine = tuple(steps - r for r in remaining)
        filtered = tuple(steps - r for r in remaining if r > remaining[-1])
        return cls(steps, refine, filtered, params.t2v_steps, params.correction)

    @property
    def calls(self) -> int:
        """Denoiser calls of the main loop, T2V and inversion (for the progress bar)."""
        return self.steps + sum(self.t2v_steps + self.steps - k - 1 for k in self.refine_steps)

    @property
    def passes(self) -> int:
        """F-frame UNet passes the loop will make when each correction right after an inversion reuses
        the main call (as ``ElevatorLoop.correct`` does when the conditional half is available)."""
        total, path, just_inverted = 0, 0, False
        for k in range(self.steps):
            total += 2
            refining = k in self.refine_steps
            if self.correction and path > 1 and not refining:
                total += 0 if just_inverted else 1
                path -= 1
            just_inverted = refining
            if refining:
                inverted = self.steps - k - 1
                total += 2 * self.t2v_steps + inverted
                path = inverted if self.correction else 0
        return total


def ddim_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """DDIM with η=0 is Euler in σ: keep x̂0, rescale the noise to the next level."""
    return denoised + (x - denoised) * (sigma_next / sigma)


def default_noise_sampler(x: torch.Tensor):
    return lambda sigma, sigma_next: torch.randn_like(x)


def t2v_ladder(t2i, t2v, sigmas: list[float]) -> list[float]:
    """T2V timesteps for each T2I step index: the T2I's own timesteps (DDIM) or LCM's ladder."""
    steps = len(sigmas) - 1
    if t2v.solver == "lcm":
        return [float(t) for t in lcm_timesteps(steps)]
    if t2v.solver == "ddim":
        return [t2i.schedule.timestep(sigma) for sigma in sigmas[:steps]]
    raise ValueError(f"unknown T2V solver {t2v.solver!r}; use 'ddim' or 'lcm'")


def lcm_boundary(t: float) -> tuple[float, float]:
    """AnimateLCM's consistency boundary scalings (c_skip, c_out) at timestep t."""
    scaled = t * LCM_TIMESTEP_SCALING
    c_skip = LCM_SIGMA_DATA**2 / (scaled**2 + LCM_SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + LCM_SIGMA_DATA**2) ** 0.5
    return c_skip, c_out


@dataclass
class ElevatorLoop:
    """What stays fixed during one ``sample_elevator`` run: the denoisers, the T2I σ ladder and the
    T2V ladder, the conditioning extras, the noise source and the counters."""

    t2i: object
    t2v: object
    sigmas: list
    ladder: list  # T2V timesteps per T2I step index (empty when nothing is refined)
    t2v_steps: int
    extra: dict
    t2v_extra: dict
    noise_sampler: object
    counter: PassCounter
    progress: object

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def refine_motion(self, video_x0: torch.Tensor, k: int) -> torch.Tensor:
        """T2V-based SDEdit from the T2I's level at step k, then ``t2v_steps`` T2V steps → x̂0_V.

        Noise is added with the T2V's ᾱ at the T2I's timestep τ_k, and the first T2V call reads the
        sample at its own ladder's timestep (which differs for LCM): as the reference pipeline does.
        """
        t2v, ladder, schedule = self.t2v, self.ladder, self.t2v.schedule
        tau = self.t2i.schedule.timestep(self.sigmas[k])
        first_sigma = schedule.sigma(ladder[k])
        scale = (schedule.alpha_bar(tau) / schedule.alpha_bar(ladder[k])) ** 0.5
        x = scale * (video_x0 + schedule.sigma(tau) * self.noise_sampler(schedule.sigma(tau), first_sigma))
        result = None
        for j in range(k, k + self.t2v_steps):
            sigma = schedule.sigma(ladder[j])
            denoised, _ = t2v.guided(x, sigma, **self.t2v_extra)
            self.counter.add("t2v", 2 * getattr(self.t2v, "clip_passes", 1))
            self.progress.update()
            if t2v.solver == "lcm":
                c_skip, c_out = lcm_boundary(ladder[j])
                result = c_out * denoised + c_skip * (x * c_in(sigma))
                if j != self.steps - 1:
                    next_sigma = schedule.sigma(ladder[j + 1])
                    x = result + next_sigma * self.noise_sampler(sigma, next_sigma)
            else:
                result = denoised
                if j < k + self.t2v_steps - 1:
                    x = ddim_step(x, denoised, sigma, schedule.sigma(ladder[j + 1]))
        return result

    def invert(self, video_x0: torch.Tensor, k: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """DDIM inversion with negative-prompt conditioning, from the final level up to σ_{k+1}.

        ε is evaluated at each *target* level on the current sample (the reference convention).
        Returns the sample at σ_{k+1} and every intermediate latent, lowest noise first, for the
        correction. At the last step (k = N−1) nothing is inverted: the result is x̂0_V itself,
        read at the final level, as in the reference pipeline.
        """
        sigma_current = self.sigmas[self.steps]
        x = video_x0 / c_in(sigma_current)
        path = []
        for index in range(self.steps - 1, k, -1):
            sigma_target = self.sigmas[index]
            x_in = x * (c_in(sigma_current) / c_in(sigma_target))
            denoised = self.t2i.unconditional(x_in, sigma_target, **self.extra)
            self.counter.add("inversion", 1)
            self.progress.update()
            x = x + (sigma_target - sigma_current) * (x_in - denoised) / sigma_target
            sigma_current = sigma_target
            path.append(x)
        return x, path

    def correct(self, x, x_in, cond_denoised, path, k):
        """Direct-inversion correction: shift x by how far the inverted path's own step drifts.

        The conditional branch alone stands in for the reference's CFG-at-scale-1 call (equal up to
        float rounding). Right after an inversion the popped latent *is* this step's input, so the
        main call's conditional half is reused instead of a new pass.
        """
        sigma, sigma_next = self.sigmas[k], self.sigmas[k + 1]
        x_path = path.pop()
        if x_path is x_in and cond_denoised is not None:
            path_denoised = cond_denoised
            self.counter.reused += 1
        else:
            path_denoised = self.t2i.conditional(x_path, sigma, **self.extra)
            self.counter.add("correction", 1)
        return x + (path[-1] - ddim_step(x_path, path_denoised, sigma, sigma_next))


@torch.no_grad()
def sample_elevator(t2i, t2v, x, sigmas, params: ElevatorParams, extra_args=None, callback=None, disable=None,
                    noise_sampler=None, t2v_extra_args=None, counter: PassCounter | None = None):
    """Run VideoElevator from x (VE, at ``sigmas[0]``) down the T2I ladder; returns x at ``sigmas[-1]``.

    ``sigmas`` has N+1 levels; with the reference DDIM ladder the last is σ(0) (ᾱ(0), not 1),
    and the VP output latent is then ``x·c_in(sigmas[-1])``. ``noise_sampler(σ, σ_next)`` draws
    the SDEdit and LCM noise, in that order, so a seeded one reproduces a run exactly.
    """
    extra = extra_args or {}
    sigmas = [float(s) for s in sigmas]
    steps = len(sigmas) - 1
    plan = ElevatorPlan.build(steps, params)
    mask = None
    if plan.filtered_steps:
        frames, _, height, width = x.shape
        mask = low_pass_mask((frames, height, width), params.filter, params.d_s, params.d_t,
                             params.butterworth_order, x.device)
    path: list[torch.Tensor] = []
    with tqdm(total=plan.calls, disable=disable, desc="VideoElevator") as progress:
        loop = ElevatorLoop(
            t2i, t2v, sigmas, t2v_ladder(t2i, t2v, sigmas) if plan.refine_steps else [], params.t2v_steps,
            extra, t2v_extra_args if t2v_extra_args is not None else extra,
            noise_sampler or default_noise_sampler(x), counter if counter is not None else PassCounter(), progress)
        for k in range(steps):
            for denoiser in (t2i, t2v):
                getattr(denoiser, "begin_step", lambda step: None)(k)
            x_in = x
            denoised, cond_denoised = t2i.guided(x, sigmas[k], **extra)
            loop.counter.add("t2i", 2)
            progress.update()
            x = ddim_step(x, denoised, sigmas[k], sigmas[k + 1])
            refining = k in plan.refine_steps
            if params.correction and len(path) > 1 and not refining:
                x = loop.correct(x, x_in, cond_denoised, path, k)
            if callback is not None:
                callback({"x": x, "i": k, "sigma": sigmas[k], "sigma_hat": sigmas[k], "denoised": denoised})
            if refining:
                video_x0 = low_pass_filter(denoised, mask) if k in plan.filtered_steps else denoised
                x, path = loop.invert(loop.refine_motion(video_x0, k), k)
                if not params.correction:
                    path = []
    return x
