"""Stand-in for A1111 ``modules/sd_schedulers.py`` (1.10.1's "Schedule type"), written for these tests.

Every schedule of 1.10.1, in its order: Automatic (no function: the sampler's own default), Uniform,
Karras, Exponential, Polyexponential, SGM Uniform, KL Optimal, Align Your Steps, Simple, Normal, DDIM,
Beta; the Forge 2 host adds Turbo, Align Your Steps GITS, Align Your Steps 11 and Align Your Steps 32.
A scheduler function is called as ``function(n, sigma_min, sigma_max, device=...)``, plus
``inner_model=`` when ``need_inner_model``; ``default_rho`` is -1 when the function takes no ρ. The
ladders follow 1.10.1's definitions, quirks included: "DDIM" takes every ⌊1000/n⌋-th table entry from
index 1, so it has n + 1 steps whenever 1 + n·⌊1000/n⌋ < 1000 (30 → 31 steps), and
"KL Optimal" ends at σ_min without a final 0. Align Your Steps tables: the SD1.5 ones only.
"""
import dataclasses

import k_diffusion.sampling
import numpy as np
import torch
from scipy import stats

from modules import shared, stub_host


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: object
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list = None


def _with_final_zero(ladder, device):
    ladder = torch.from_numpy(np.array(ladder, dtype=np.float64)).float()
    return torch.cat([ladder, ladder.new_zeros(1)]).to(device)


def uniform(n, sigma_min, sigma_max, inner_model, device):
    """The model's own ladder: t evenly spaced over the whole table."""
    return inner_model.get_sigmas(n).to(device)


def sgm_uniform(n, sigma_min, sigma_max, inner_model, device):
    """t evenly spaced from t(σ_max) towards t(σ_min), n points with the far end left out, then 0."""
    t_first, t_last = inner_model.sigma_to_t(torch.tensor([float(sigma_max), float(sigma_min)])).tolist()
    return _with_final_zero([float(inner_model.t_to_sigma(t)) for t in torch.linspace(t_first, t_last, n + 1)[:n]], device)


def normal(n, sigma_min, sigma_max, inner_model, device, sgm=False, floor=False):
    """t evenly spaced from t(σ_max) to t(σ_min), both ends included, then 0."""
    t_first, t_last = inner_model.sigma_to_t(torch.tensor([float(sigma_max), float(sigma_min)])).tolist()
    points = torch.linspace(t_first, t_last, n + 1)[:n] if sgm else torch.linspace(t_first, t_last, n)
    return _with_final_zero([float(inner_model.t_to_sigma(t)) for t in points], device)


def simple(n, sigma_min, sigma_max, inner_model, device):
    """Table entries from the top down, every len/n-th (rounded down), then 0."""
    table = inner_model.sigmas
    stride = len(table) / n
    return _with_final_zero([float(table[-(1 + int(i * stride))]) for i in range(n)], device)


def ddim(n, sigma_min, sigma_max, inner_model, device):
    """Table entries 1, 1 + s, 1 + 2s, … below the table's length (s = ⌊length/n⌋), highest first, then 0."""
    table = inner_model.sigmas
    stride = max(len(table) // n, 1)
    return _with_final_zero([float(table[i]) for i in range(1, len(table), stride)][::-1], device)


def kl_optimal(n, sigma_min, sigma_max, device):
    """tan of arctan σ evenly spaced from σ_max to σ_min (n + 1 levels, no final 0)."""
    ends = torch.arctan(torch.tensor([float(sigma_max), float(sigma_min)], device=device))
    fraction = torch.arange(n + 1, device=device) / n
    return torch.tan(ends[0] + fraction * (ends[1] - ends[0]))


def beta(n, sigma_min, sigma_max, inner_model, device):
    """σ at the quantiles of a Beta(α, β) distribution (the settings' "beta_dist_alpha/beta"), then 0."""
    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, n), shared.opts.beta_dist_alpha, shared.opts.beta_dist_beta)
    return _with_final_zero(sigma_min + quantiles * (sigma_max - sigma_min), device)


def _log_linear(table, n, device):
    """The published table resampled to n levels by linear interpolation of log σ, then 0."""
    if n == len(table):
        return _with_final_zero(table, device)
    positions = np.linspace(0, 1, len(table))
    resampled = np.exp(np.interp(np.linspace(0, 1, n), positions, np.log(table[::-1])))[::-1]
    return _with_final_zero(resampled, device)


AYS_SD15 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
AYS_GITS_SD15 = [14.615, 4.617, 2.507, 1.236, 0.702, 0.402, 0.240, 0.156, 0.104, 0.094, 0.029]
AYS_32_SD15 = [14.615, 11.2395135, 8.64363081, 6.64729424, 5.57250862, 4.71648546, 3.99196065, 3.5195609,
               3.13490466, 2.79228788, 2.48773628, 2.21663865, 1.97508351, 1.7793172, 1.61475335, 1.46540953,
               1.314849, 1.16642497, 1.03475547, 0.91573744, 0.80748169, 0.71202361, 0.621739, 0.53065202,
               0.4529096, 0.37491455, 0.27461819, 0.2011529, 0.14105873, 0.06682881, 0.03166121, 0.015]


def align_your_steps(n, sigma_min, sigma_max, device):
    return _log_linear(AYS_SD15, n, device)


def align_your_steps_gits(n, sigma_min, sigma_max, device):
    return _log_linear(AYS_GITS_SD15, n, device)


def align_your_steps_32(n, sigma_min, sigma_max, device="cpu"):
    return _log_linear(AYS_32_SD15, n, device)


def turbo(n, sigma_min, sigma_max, inner_model, device):
    """Forge: the predictor's σ at timesteps round(1000·k/n) − 1 for k = n … 1, then 0."""
    predictor = inner_model.inner_model.forge_objects.unet.model.predictor
    timesteps = (torch.arange(n, 0, -1) * (1000.0 / n) - 1).round().long().clamp(0, 999)
    return torch.cat([predictor.sigma(timesteps).float(), torch.zeros(1)]).to(device)


schedulers = [
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", uniform, need_inner_model=True),
    Scheduler("karras", "Karras", k_diffusion.sampling.get_sigmas_karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", k_diffusion.sampling.get_sigmas_exponential),
    Scheduler("polyexponential", "Polyexponential", k_diffusion.sampling.get_sigmas_polyexponential, default_rho=1.0),
    Scheduler("sgm_uniform", "SGM Uniform", sgm_uniform, need_inner_model=True, aliases=["SGMUniform"]),
    Scheduler("kl_optimal", "KL Optimal", kl_optimal),
    Scheduler("align_your_steps", "Align Your Steps", align_your_steps),
    Scheduler("simple", "Simple", simple, need_inner_model=True),
    Scheduler("normal", "Normal", normal, need_inner_model=True),
    Scheduler("ddim", "DDIM", ddim, need_inner_model=True),
    Scheduler("beta", "Beta", beta, need_inner_model=True),
]
if stub_host.is_forge():
    schedulers += [
        Scheduler("turbo", "Turbo", turbo, need_inner_model=True),
        Scheduler("align_your_steps_GITS", "Align Your Steps GITS", align_your_steps_gits),
        Scheduler("align_your_steps_11", "Align Your Steps 11", align_your_steps),
        Scheduler("align_your_steps_32", "Align Your Steps 32", align_your_steps_32),
    ]
schedulers_map = {key: scheduler for scheduler in schedulers for key in (scheduler.name, scheduler.label)}
