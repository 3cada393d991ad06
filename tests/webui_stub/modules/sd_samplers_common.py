"""Stand-in for A1111 ``modules/sd_samplers_common.py``, written for the tests from A1111's observable
behaviour: ``SamplerData``, ``InterruptedException``, ``TorchHijack``, the ``Sampler`` base class,
``store_latent`` and the latent → image helpers.

Kept because extensions depend on it:

* ``Sampler.launch_sampling(steps, func)`` records the step counts on the CFG denoiser and in
  ``shared.state``, runs ``func`` and, if the denoiser raised ``InterruptedException`` (interrupt or
  skip), returns the last latent instead of failing;
* ``Sampler.callback_state`` (the k-diffusion per-step callback) sets ``state.sampling_step`` from
  ``d["i"]`` and ticks ``shared.total_tqdm``;
* ``Sampler.initialize(p)`` resets the denoiser's call counter, resolves eta (``p.eta`` or
  ``opts.eta_ancestral``), routes ``k_diffusion.sampling``'s ``torch.randn_like`` to the seeded
  ``p.rng`` through ``TorchHijack`` and returns the optional keyword arguments the sampler function
  accepts (churn settings for Euler, ``eta`` for ancestral samplers).

Simplified: latents are always decoded with the full VAE (no approximate/TAESD previews), the stand-in
always runs with ``parallel_processing_allowed`` so ``store_latent`` only records the latent (previews
are decoded by ``shared.state.set_current_image``), no ``RecursionError`` recovery, no ``stop_at``,
no refiner; ``create_noise_sampler`` builds k-diffusion's ``BrownianTreeNoiseSampler`` as A1111 does, but the
stand-in's cannot draw.
"""
import inspect
from collections.abc import Callable
from typing import NamedTuple

import k_diffusion.sampling
import numpy as np
import torch
from PIL import Image

from modules import devices, shared


class SamplerData(NamedTuple):
    name: str
    constructor: Callable
    aliases: list
    options: dict

    def total_steps(self, steps):
        """Denoiser calls a run of ``steps`` steps makes (second-order samplers call twice a step)."""
        return 2 * steps if self.options.get("second_order") else steps


class InterruptedException(BaseException):
    """Raised inside sampling to stop it; ``launch_sampling`` turns it into an early return."""


def _vae_decode(model, latents):
    """Latents → RGB tensor in [-1, 1] through the checkpoint's own VAE."""
    with torch.no_grad(), devices.without_autocast():
        vae = getattr(model, "first_stage_model", None)  # None on Forge, whose engine handles dtypes itself
        return model.decode_first_stage(latents if vae is None else latents.to(vae.dtype))


def decode_first_stage(model, x):
    return _vae_decode(model, x)


def _latent_to_pil(latent):
    rgb = _vae_decode(shared.sd_model, latent[None])[0]
    levels = ((rgb.float() + 1.0) * 127.5).clamp(0.0, 255.0)
    return Image.fromarray(levels.permute(1, 2, 0).cpu().numpy().astype(np.uint8))


def sample_to_image(samples, index=0, approximation=None):
    return _latent_to_pil(samples[index])


def samples_to_image_grid(samples, approximation=None):
    from modules import images
    return images.image_grid([_latent_to_pil(latent) for latent in samples])


def store_latent(decoded):
    """Remember the newest preview latent; ``shared.state`` decodes it when a preview is due."""
    shared.state.current_latent = decoded


class TorchHijack:
    """Takes the place of the ``torch`` module inside ``k_diffusion.sampling``: attribute look-ups go to
    torch, except ``randn_like``, which hands out the next per-seed noise from ``p.rng``."""

    def __init__(self, p):
        self.rng = p.rng

    def randn_like(self, x):
        return self.rng.next()

    def __getattr__(self, name):
        return getattr(torch, name)


class Sampler:
    def __init__(self, funcname):
        self.funcname = funcname
        self.func = funcname
        self.config: SamplerData = None
        self.options = {}
        self.extra_params = []  # names of ``p`` attributes passed on when the function takes them
        self.model_wrap_cfg = self.model_wrap = None  # the CFG denoiser and the k-diffusion wrapper it calls
        self.sampler_extra_args = self.last_latent = None
        self.p = self.eta = self.s_min_uncond = None

    def callback_state(self, d):
        shared.state.sampling_step = d["i"]
        shared.total_tqdm.update()

    def launch_sampling(self, steps, func):
        denoiser = self.model_wrap_cfg
        denoiser.steps = steps
        denoiser.total_steps = self.config.total_steps(steps)
        shared.state.sampling_steps, shared.state.sampling_step = steps, 0
        try:
            return func()
        except InterruptedException:
            return self.last_latent

    def initialize(self, p) -> dict:
        self.p = p
        denoiser = self.model_wrap_cfg
        denoiser.p, denoiser.step = p, 0
        self.s_min_uncond = getattr(p, "s_min_uncond", 0.0)
        self.eta = shared.opts.eta_ancestral if p.eta is None else p.eta

        k_diffusion.sampling.torch = TorchHijack(p)

        accepted = inspect.signature(self.func).parameters
        options = {name: getattr(p, name) for name in self.extra_params if name in accepted and hasattr(p, name)}
        if "eta" in accepted:
            options["eta"] = self.eta
            if self.eta != 1.0:
                p.extra_generation_params["Eta"] = self.eta
        return options

    def create_noise_sampler(self, x, sigmas, p):
        """The seeded noise the DPM++ SDE samplers draw from (``None`` when the user turned it off)."""
        if shared.opts.no_dpmpp_sde_batch_determinism:
            return None
        seeds = p.all_seeds[p.iteration * p.batch_size:(p.iteration + 1) * p.batch_size]
        return k_diffusion.sampling.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seeds)

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        raise NotImplementedError()
