"""The motion model alone (``mode=t2v``): plain AnimateDiff / AnimateLCM sampling in σ-space.

Used by the standalone host; in the WebUI the host's own sampler runs the T2V instead. The ladder
is the T2V's own: DDIM "leading" timesteps on its ᾱ table ending at ᾱ(0), as diffusers'
``DDIMScheduler(set_alpha_to_one=False)``, or AnimateLCM's LCM ladder ending at x̂0, as
``LCMScheduler``. Same conventions as ``sampler.py``: the denoiser's ``guided`` is one CFG call.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .sampler import PassCounter, ddim_step, default_noise_sampler, lcm_boundary
from .schedules import VPSchedule, c_in, ddim_leading_timesteps, ddim_sigmas, lcm_timesteps


def t2v_timesteps_and_sigmas(schedule: VPSchedule, solver: str, steps: int) -> tuple[list[float], list[float]]:
    """The T2V's N timesteps and its N+1 σ levels (the last is where the output latent sits)."""
    if solver == "lcm":
        timesteps = [float(t) for t in lcm_timesteps(steps)]
        return timesteps, [schedule.sigma(t) for t in timesteps] + [0.0]
    if solver == "ddim":
        return [float(t) for t in ddim_leading_timesteps(steps)], [float(s) for s in ddim_sigmas(schedule, steps)]
    raise ValueError(f"unknown T2V solver {solver!r}; use 'ddim' or 'lcm'")


def sample_t2v(t2v, x: torch.Tensor, timesteps: list[float], sigmas: list[float], extra_args=None, callback=None,
               disable=None, noise_sampler=None, counter: PassCounter | None = None) -> torch.Tensor:
    """Denoise x (VE, at ``sigmas[0]``) with the guided T2V alone; returns x at ``sigmas[-1]``.

    LCM steps: ``denoised = c_out·x̂0 + c_skip·z``, re-noised to the next level with a fresh draw
    except after the last step (the output is ``denoised``, at σ = 0).
    """
    extra = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x)
    counter = counter if counter is not None else PassCounter()
    steps = len(timesteps)
    for k in tqdm(range(steps), disable=disable, desc="T2V"):
        getattr(t2v, "begin_step", lambda step: None)(k)
        sigma, sigma_next = sigmas[k], sigmas[k + 1]
        denoised, _ = t2v.guided(x, sigma, **extra)
        counter.add("t2v", 2)
        if t2v.solver == "lcm":
            c_skip, c_out = lcm_boundary(timesteps[k])
            denoised = c_out * denoised + c_skip * (x * c_in(sigma))
            x = denoised + sigma_next * noise_sampler(sigma, sigma_next) if k < steps - 1 else denoised
        else:
            x = ddim_step(x, denoised, sigma, sigma_next)
        if callback is not None:
            callback({"x": x, "i": k, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
    return x
