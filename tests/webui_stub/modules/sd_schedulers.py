"""Stand-in for A1111 ``modules/sd_schedulers.py`` (1.10's "Schedule type"), written for these tests.

Provided: Automatic (no function: the sampler's own default), Uniform, Karras, Exponential, SGM Uniform.
A scheduler function is called as ``function(n, sigma_min, sigma_max, device=...)``, plus
``inner_model=`` when ``need_inner_model``; ``default_rho`` is -1 when the function takes no ρ.
The other schedules of 1.10 are not provided.
"""
import k_diffusion.sampling
import torch


class Scheduler:
    def __init__(self, name, label, function, default_rho=-1, need_inner_model=False, aliases=None):
        self.name, self.label, self.function = name, label, function
        self.default_rho, self.need_inner_model, self.aliases = default_rho, need_inner_model, aliases

    def __repr__(self):
        return f"Scheduler({self.name!r}, {self.label!r})"


def uniform(n, sigma_min, sigma_max, inner_model, device):
    """The model's own ladder: t evenly spaced over the whole table."""
    return inner_model.get_sigmas(n).to(device)


def sgm_uniform(n, sigma_min, sigma_max, inner_model, device):
    """t evenly spaced from t(σ_max) towards t(σ_min), n points with the far end left out, then 0."""
    t_first, t_last = inner_model.sigma_to_t(torch.tensor([float(sigma_max), float(sigma_min)])).tolist()
    ladder = inner_model.t_to_sigma(torch.linspace(t_first, t_last, n + 1)[:n])
    return torch.cat([ladder.float(), ladder.new_zeros(1)]).to(device)


schedulers = [
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", uniform, need_inner_model=True),
    Scheduler("karras", "Karras", k_diffusion.sampling.get_sigmas_karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", k_diffusion.sampling.get_sigmas_exponential),
    Scheduler("sgm_uniform", "SGM Uniform", sgm_uniform, need_inner_model=True, aliases=["SGMUniform"]),
]
schedulers_map = {key: scheduler for scheduler in schedulers for key in (scheduler.name, scheduler.label)}
