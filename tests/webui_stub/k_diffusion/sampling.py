"""The samplers and σ schedules A1111 takes from k-diffusion's ``sampling.py``, with the same call signatures.

Provided: ``get_sigmas_karras``, ``get_sigmas_exponential``, ``get_sigmas_polyexponential``, ``sample_euler``,
``sample_euler_ancestral``, ``sample_dpmpp_2m``. Every other sampler A1111 1.10 and Forge 2 list (LMS, Heun,
DPM2, DPM2 a, DPM++ 2S a, DPM++ SDE, DPM++ 2M SDE, DPM++ 3M SDE, DPM fast, DPM adaptive, HeunPP2, IPNDM,
IPNDM_V, DEIS) is here with k-diffusion's signature only, so the WebUI's signature-driven arguments
(``n``/``sigma_min``/``sigma_max``, ``noise_sampler``, ``solver_type``, ``eta``, ``s_noise``) can be observed;
calling one raises ``NotImplementedError``. ``BrownianTreeNoiseSampler`` has the constructor only
(the same). Samplers take ``(model, x, sigmas, extra_args=None, callback=None, disable=None, ...)``,
call ``model(x, σ·ones(batch), **extra_args)`` for a denoised estimate, report every step to ``callback``
as ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` and ignore ``disable`` (no progress bars).

Noise is drawn with ``torch.randn_like`` looked up through this module's global ``torch``: A1111 replaces
``k_diffusion.sampling.torch`` with ``TorchHijack(p)`` so the noise comes from the per-seed ``p.rng``.
As in k-diffusion, ``sample_euler`` draws one noise tensor every step even when churn is off, so the
``p.rng`` stream advances the same way.
"""
import math
from itertools import pairwise

import torch


def _with_final_zero(sigmas):
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0, device="cpu"):
    """Karras et al. (2022): σ^(1/ρ) evenly spaced from σ_max to σ_min, then a final 0."""
    ladder = torch.linspace(float(sigma_max) ** (1 / rho), float(sigma_min) ** (1 / rho), n) ** rho
    return _with_final_zero(ladder).to(device)


def get_sigmas_exponential(n, sigma_min, sigma_max, device="cpu"):
    """log σ evenly spaced from σ_max to σ_min, then a final 0."""
    return _with_final_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp()).to(device)


def get_sigmas_polyexponential(n, sigma_min, sigma_max, rho=1.0, device="cpu"):
    """log σ from σ_max to σ_min along a ρ-th power ramp, then a final 0."""
    ramp = torch.linspace(1, 0, n) ** rho
    ladder = (ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)).exp()
    return _with_final_zero(ladder).to(device)


class BrownianTreeNoiseSampler:
    """Constructor only: the DPM++ SDE samplers that would draw from it are not provided."""

    def __init__(self, x, sigma_min, sigma_max, seed=None, transform=lambda x: x):
        self.shape, self.sigma_min, self.sigma_max, self.seed = x.shape, sigma_min, sigma_max, seed

    def __call__(self, sigma, sigma_next):
        raise NotImplementedError("the stand-in has no Brownian-tree noise")


def _not_provided(name):
    raise NotImplementedError(f"the k-diffusion stand-in does not implement {name}")


def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    _not_provided("sample_lms")


def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None,
                s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    _not_provided("sample_heun")


def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    _not_provided("sample_dpm_2")


def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                           noise_sampler=None):
    _not_provided("sample_dpm_2_ancestral")


def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                              noise_sampler=None):
    _not_provided("sample_dpmpp_2s_ancestral")


def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                     noise_sampler=None, r=1 / 2):
    _not_provided("sample_dpmpp_sde")


def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None, solver_type="midpoint"):
    _not_provided("sample_dpmpp_2m_sde")


def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None):
    _not_provided("sample_dpmpp_3m_sde")


def sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=None, callback=None, disable=None, eta=0.0,
                    s_noise=1.0, noise_sampler=None):
    _not_provided("sample_dpm_fast")


def sample_dpm_adaptive(model, x, sigma_min, sigma_max, extra_args=None, callback=None, disable=None, order=3,
                        rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81,
                        eta=0.0, s_noise=1.0, noise_sampler=None, return_info=False):
    _not_provided("sample_dpm_adaptive")


def sample_heunpp2(model, x, sigmas, extra_args=None, callback=None, disable=None,
                   s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    _not_provided("sample_heunpp2")


def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    _not_provided("sample_ipndm")


def sample_ipndm_v(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    _not_provided("sample_ipndm_v")


def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=3, deis_mode="tab"):
    _not_provided("sample_deis")


def _step_callback(callback, x, i, sigma, sigma_hat, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """First-order Euler steps of the probability-flow ODE, with optional Karras "churn" (σ raised by
    γ = min(s_churn / steps, √2 - 1) for σ in [s_tmin, s_tmax] by adding fresh noise)."""
    kwargs = extra_args or {}
    ones = x.new_ones(x.shape[0])
    steps = len(sigmas) - 1
    for i, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
        churn = min(s_churn / steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        fresh = torch.randn_like(x) * s_noise
        raised = sigma * (1 + churn)
        if churn > 0:
            x = x + fresh * (raised**2 - sigma**2).sqrt()
        denoised = model(x, raised * ones, **kwargs)
        _step_callback(callback, x, i, sigma, raised, denoised)
        slope = (x - denoised) / raised
        x = x + slope * (sigma_next - raised)
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                           eta=1.0, s_noise=1.0, noise_sampler=None):
    """Euler steps down to a lower σ_down, then fresh noise of size σ_up so the marginal is at σ_next
    (σ_up² + σ_down² = σ_next², σ_up = eta·σ_next·√(1 - σ_next²/σ²), capped at σ_next)."""
    kwargs = extra_args or {}
    if noise_sampler is None:
        def noise_sampler(sigma, sigma_next):
            return torch.randn_like(x)
    ones = x.new_ones(x.shape[0])
    for i, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
        denoised = model(x, sigma * ones, **kwargs)
        _step_callback(callback, x, i, sigma, sigma, denoised)
        if eta:
            sigma_up = min(sigma_next, eta * sigma_next * (1 - (sigma_next / sigma) ** 2).sqrt())
            sigma_down = (sigma_next**2 - sigma_up**2).sqrt()
        else:
            sigma_up, sigma_down = 0.0, sigma_next
        x = denoised + (x - denoised) * (sigma_down / sigma)
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * (s_noise * sigma_up)
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M) (Lu et al. 2022), deterministic. With λ = -log σ and h = λ_next - λ, each step is
    x ← (σ_next/σ)·x + (1 - σ_next/σ)·D, where D is the denoised estimate, corrected after the first
    step by the previous one: D = (1 + 1/2r)·denoised - (1/2r)·previous, r = h_previous / h.
    The step to σ = 0 returns the plain estimate."""
    kwargs = extra_args or {}
    ones = x.new_ones(x.shape[0])
    previous, previous_h = None, None
    for i, (sigma, sigma_next) in enumerate(pairwise(sigmas)):
        denoised = model(x, sigma * ones, **kwargs)
        _step_callback(callback, x, i, sigma, sigma, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = (sigma / sigma_next).log()
        estimate = denoised
        if previous is not None:
            half_inverse_r = h / (2 * previous_h)
            estimate = denoised + half_inverse_r * (denoised - previous)
        keep = sigma_next / sigma
        x = keep * x + (1 - keep) * estimate
        previous, previous_h = denoised, h
    return x
