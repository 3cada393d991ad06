"""Variance-preserving noise schedules in k-diffusion's σ form, and the step ladders.

A VP model sees z = √ᾱ·x0 + √(1−ᾱ)·ε; k-diffusion's VE form is x = z/√ᾱ = x0 + σ·ε with
σ = √((1−ᾱ)/ᾱ). Tables are float32 and built exactly as diffusers builds them, so integer
timesteps map to the same ᾱ the reference schedulers use.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

TRAIN_TIMESTEPS = 1000


def alphas_cumprod(beta_schedule: str, beta_start: float, beta_end: float,
                   train_timesteps: int = TRAIN_TIMESTEPS) -> torch.Tensor:
    """ᾱ table as diffusers' DDPM-family schedulers build it (float32 arithmetic)."""
    if beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, train_timesteps, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, train_timesteps, dtype=torch.float32) ** 2
    else:
        raise ValueError(f"unknown beta_schedule {beta_schedule!r}; use 'linear' or 'scaled_linear'")
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class VPSchedule:
    """One model's training schedule (its ᾱ table) with σ↔t maps (k-diffusion's log-σ interpolation)."""

    name: str
    alphas_cumprod: torch.Tensor = field(repr=False, compare=False)
    sigmas: torch.Tensor = field(init=False, repr=False, compare=False)
    log_sigmas: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        table = self.alphas_cumprod.detach().to("cpu", torch.float32)
        sigmas = ((1 - table) / table) ** 0.5
        object.__setattr__(self, "alphas_cumprod", table)
        object.__setattr__(self, "sigmas", sigmas)
        object.__setattr__(self, "log_sigmas", sigmas.log())

    @classmethod
    def from_betas(cls, name: str, beta_schedule: str, beta_start: float, beta_end: float) -> "VPSchedule":
        return cls(name, alphas_cumprod(beta_schedule, beta_start, beta_end))

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma(self, t: float) -> float:
        """σ at a (possibly fractional) timestep."""
        low = int(np.floor(t))
        high = min(low + 1, len(self.log_sigmas) - 1)
        weight = t - low
        log_sigma = (1 - weight) * float(self.log_sigmas[low]) + weight * float(self.log_sigmas[high])
        return float(np.exp(log_sigma))

    def timestep(self, sigma: float) -> float:
        """The (fractional) timestep whose σ is ``sigma``; integer-exact on table values."""
        log_sigmas = self.log_sigmas.double().numpy()
        log_sigma = np.log(sigma)
        low = int(np.clip(np.searchsorted(log_sigmas, log_sigma, side="right") - 1, 0, len(log_sigmas) - 2))
        span = log_sigmas[low + 1] - log_sigmas[low]
        weight = float(np.clip((log_sigma - log_sigmas[low]) / span, 0.0, 1.0))
        return low + weight

    def alpha_bar(self, t: float) -> float:
        return 1.0 / (1.0 + self.sigma(t) ** 2)


SD_SCHEDULE = VPSchedule.from_betas("sd", "scaled_linear", 0.00085, 0.012)
ANIMATEDIFF_SCHEDULE = VPSchedule.from_betas("animatediff", "linear", 0.00085, 0.012)
ANIMATEDIFF_SDXL_SCHEDULE = VPSchedule.from_betas("animatediff-sdxl", "scaled_linear", 0.00085, 0.020)
LAVIE_SCHEDULE = VPSchedule.from_betas("lavie", "linear", 0.0001, 0.02)


def c_in(sigma: float) -> float:
    """VE → VP input scaling: z = x·c_in(σ)."""
    return (1.0 + sigma**2) ** -0.5


def ddim_leading_timesteps(steps: int, steps_offset: int = 1,
                           train_timesteps: int = TRAIN_TIMESTEPS) -> list[int]:
    """DDIM "leading" spacing: τ_k = (N−1−k)·⌊T/N⌋ + offset (SD's scheduler config)."""
    ratio = train_timesteps // steps
    return [(steps - 1 - k) * ratio + steps_offset for k in range(steps)]


def lcm_timesteps(steps: int, original_steps: int = 50, train_timesteps: int = TRAIN_TIMESTEPS) -> list[int]:
    """LCM's ladder: t_j = T−1 − (T/orig)·⌊orig·j/N⌋, as diffusers' LCMScheduler builds it."""
    if steps > original_steps:
        raise ValueError(f"LCM ladder: {steps} steps is more than its {original_steps} original steps")
    ratio = train_timesteps // original_steps
    return [train_timesteps - 1 - ratio * int(np.floor(original_steps * j / steps)) for j in range(steps)]


def ddim_sigmas(schedule: VPSchedule, steps: int) -> torch.Tensor:
    """The DDIM (η=0) ladder in σ: N levels then the final level σ(0), not 0 (ᾱ_final = ᾱ(0))."""
    timesteps = ddim_leading_timesteps(steps) + [0]
    return torch.tensor([float(schedule.sigmas[t]) for t in timesteps], dtype=torch.float64)
