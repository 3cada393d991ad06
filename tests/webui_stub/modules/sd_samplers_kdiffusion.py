"""Stand-in for A1111 ``modules/sd_samplers_kdiffusion.py``, written for the tests from A1111's observable
behaviour: the sampler list (names, aliases, options — default ``scheduler``, ``second_order``,
``discard_next_to_last_sigma``, ``brownian_noise``, ``solver_type`` — in 1.10.1's order; Forge 2 adds HeunPP2,
IPNDM, IPNDM_V and DEIS), the ``CFGDenoiserKDiffusion`` denoiser and ``KDiffusionSampler``. Only Euler, Euler a
and DPM++ 2M can actually sample (see ``k_diffusion.sampling``).

Kept because extensions depend on it:

* ``KDiffusionSampler(funcname, sd_model)`` accepts a ``k_diffusion.sampling`` function name or any
  callable with k-diffusion's signature, and ``sampler.func`` may be swapped before ``sample``;
* the denoiser's ``inner_model`` is a ``k_diffusion.external.CompVisDenoiser`` of ``shared.sd_model``
  (``CompVisVDenoiser`` when its ``parameterization`` is "v"),
  built when the sampler is created (its σ table follows ``sd_model.alphas_cumprod`` at that moment)
  and also exposed as ``sampler.model_wrap``;
* ``get_sigmas(p, steps)``: one step more for ``discard_next_to_last_sigma`` samplers (or with
  ``opts.always_discard_next_to_last_sigma``, reported as "Discard penultimate sigma"), whose
  next-to-last σ is then dropped; ``p.sampler_noise_scheduler_override(steps)`` wins; otherwise
  ``p.scheduler`` ("Automatic" → the sampler's default schedule, or none), a schedule of ``sd_schedulers``
  spanning the model's σ range (reported as "Schedule type"), or the model's own uniform-in-t ladder;
* ``sample(...)`` scales the unit noise by σ₀ (by √(1+σ₀²) with ``opts.sgm_noise_multiplier``), then
  calls ``func(model_wrap_cfg, x, extra_args={cond, image_cond, uncond, cond_scale, s_min_uncond},
  disable=False, callback=callback_state, **options)`` through ``launch_sampling``, where the options
  follow the function's signature and the sampler's options as in 1.10: ``n`` (the steps), ``sigma_min``
  / ``sigma_max`` (the model's table ends), ``sigmas``, ``noise_sampler`` (``brownian_noise``:
  ``create_noise_sampler``), ``solver_type="heun"``.

Forge 2 host (``stub_host.is_forge()``): the denoiser's ``inner_model`` / ``sampler.model_wrap`` is a
``k_diffusion.external.ForgeScheduleLinker`` of ``shared.sd_model.forge_objects.unet.model.predictor`` whose
``inner_model`` is ``shared.sd_model``; ``sample`` first calls ``backend.sampling.sampling_function.
sampling_prepare(unet, x=x)`` (the working ``forge_objects.unet`` at that moment), takes the σ ladder from
the linker (so from the predictor's current table), scales the noise with ``predictor.noise_scaling``,
runs the function the same way and ends with ``sampling_cleanup(unet)`` (not on exceptions, as in Forge).

Not provided: custom ``create_denoiser`` models, the σ-range / ρ settings, hires-pass
schedules, img2img.
"""
import inspect

import k_diffusion.external
import k_diffusion.sampling
import torch

from modules import (
    devices,
    sd_samplers_cfg_denoiser,
    sd_samplers_common,
    sd_samplers_extra,
    sd_schedulers,
    shared,
    stub_host,
)
from modules.sd_samplers_cfg_denoiser import CFGDenoiser  # noqa: F401  (A1111 re-exports it here)

_KARRAS, _EXPONENTIAL = {"scheduler": "karras"}, {"scheduler": "exponential"}
_SDE = {"brownian_noise": True}
samplers_k_diffusion = [
    ("DPM++ 2M", "sample_dpmpp_2m", ["k_dpmpp_2m"], _KARRAS),
    ("DPM++ SDE", "sample_dpmpp_sde", ["k_dpmpp_sde"], {**_KARRAS, "second_order": True, **_SDE}),
    ("DPM++ 2M SDE", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde"], {**_EXPONENTIAL, **_SDE}),
    ("DPM++ 2M SDE Heun", "sample_dpmpp_2m_sde", ["k_dpmpp_2m_sde_heun"], {**_EXPONENTIAL, **_SDE, "solver_type": "heun"}),
    ("DPM++ 2S a", "sample_dpmpp_2s_ancestral", ["k_dpmpp_2s_a"], {**_KARRAS, "uses_ensd": True, "second_order": True}),
    ("DPM++ 3M SDE", "sample_dpmpp_3m_sde", ["k_dpmpp_3m_sde"], {**_EXPONENTIAL, "discard_next_to_last_sigma": True, **_SDE}),
    ("Euler a", "sample_euler_ancestral", ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": True}),
    ("Euler", "sample_euler", ["k_euler"], {}),
    ("LMS", "sample_lms", ["k_lms"], {}),
    ("Heun", "sample_heun", ["k_heun"], {"second_order": True}),
    ("DPM2", "sample_dpm_2", ["k_dpm_2"], {**_KARRAS, "discard_next_to_last_sigma": True, "second_order": True}),
    ("DPM2 a", "sample_dpm_2_ancestral", ["k_dpm_2_a"],
     {**_KARRAS, "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True}),
    ("DPM fast", "sample_dpm_fast", ["k_dpm_fast"], {"uses_ensd": True}),
    ("DPM adaptive", "sample_dpm_adaptive", ["k_dpm_ad"], {"uses_ensd": True}),
    ("Restart", sd_samplers_extra.restart_sampler, ["restart"], {**_KARRAS, "second_order": True}),
]
if stub_host.is_forge():
    samplers_k_diffusion += [
        ("HeunPP2", "sample_heunpp2", ["heunpp2"], {}),
        ("IPNDM", "sample_ipndm", ["ipndm"], {}),
        ("IPNDM_V", "sample_ipndm_v", ["ipndm_v"], {}),
        ("DEIS", "sample_deis", ["deis"], {}),
    ]

samplers_data_k_diffusion = [
    sd_samplers_common.SamplerData(label, lambda model, funcname=funcname: KDiffusionSampler(funcname, model),
                                   aliases, options)
    for label, funcname, aliases, options in samplers_k_diffusion
    if callable(funcname) or hasattr(k_diffusion.sampling, funcname)
]

_CHURN = ["s_churn", "s_tmin", "s_tmax", "s_noise"]
sampler_extra_params = {  # ``p`` fields passed on when the function takes them
    "sample_euler": _CHURN, "sample_heun": _CHURN, "sample_dpm_2": _CHURN,
    **dict.fromkeys(["sample_dpm_fast", "sample_dpm_2_ancestral", "sample_dpmpp_2s_ancestral", "sample_dpmpp_sde",
                     "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"], ["s_noise"]),
}
k_diffusion_samplers_map = {data.name: data for data in samplers_data_k_diffusion}


class CFGDenoiserKDiffusion(sd_samplers_cfg_denoiser.CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None and stub_host.is_forge():
            self.model_wrap = k_diffusion.external.ForgeScheduleLinker(shared.sd_model.forge_objects.unet.model.predictor)
            self.model_wrap.inner_model = shared.sd_model
        if self.model_wrap is None:
            model = shared.sd_model
            external = k_diffusion.external
            denoiser = external.CompVisVDenoiser if model.parameterization == "v" else external.CompVisDenoiser
            self.model_wrap = denoiser(model, quantize=shared.opts.enable_quantization)
        return self.model_wrap


class KDiffusionSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model, options=None):
        super().__init__(funcname)
        self.func = funcname if callable(funcname) else getattr(k_diffusion.sampling, funcname)
        self.extra_params = list(sampler_extra_params.get(funcname, [])) if isinstance(funcname, str) else []
        self.options = dict(options or {})
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def _scheduler_for(self, p):
        wanted = p.scheduler or "Automatic"
        if wanted == "Automatic" and self.config is not None:
            wanted = self.config.options.get("scheduler")
        return sd_schedulers.schedulers_map.get(wanted)

    def get_sigmas(self, p, steps):
        discard = self.config is not None and self.config.options.get("discard_next_to_last_sigma", False)
        if shared.opts.always_discard_next_to_last_sigma and not discard:
            discard = True
            p.extra_generation_params["Discard penultimate sigma"] = True
        steps += 1 if discard else 0

        scheduler = self._scheduler_for(p)
        if p.sampler_noise_scheduler_override:
            sigmas = p.sampler_noise_scheduler_override(steps)
        elif scheduler is None or scheduler.function is None:
            sigmas = self.model_wrap.get_sigmas(steps)
        else:
            p.extra_generation_params["Schedule type"] = scheduler.label
            table = self.model_wrap.sigmas
            arguments = {"n": steps, "sigma_min": table[0].item(), "sigma_max": table[-1].item(), "device": devices.cpu}
            if scheduler.need_inner_model:
                arguments["inner_model"] = self.model_wrap
            sigmas = scheduler.function(**arguments)
        if discard:
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        return sigmas.cpu()

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        if stub_host.is_forge():
            return self._sample_forge(p, x, conditioning, unconditional_conditioning, steps, image_conditioning)
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)

        if shared.opts.sgm_noise_multiplier:
            p.extra_generation_params["SGM noise multiplier"] = True
            start_scale = (1.0 + sigmas[0] ** 2) ** 0.5
        else:
            start_scale = sigmas[0]
        samples = self._launch(p, x * start_scale, sigmas, steps, conditioning, unconditional_conditioning,
                               image_conditioning)
        if self.model_wrap_cfg.padded_cond_uncond:
            p.extra_generation_params["Pad conds"] = True
        return samples

    def _sample_forge(self, p, x, conditioning, unconditional_conditioning, steps, image_conditioning):
        from backend.sampling.sampling_function import sampling_cleanup, sampling_prepare

        unet = self.model_wrap.inner_model.forge_objects.unet
        sampling_prepare(unet, x=x)
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps).to(x.device)
        multiplier = shared.opts.sgm_noise_multiplier
        if multiplier:
            p.extra_generation_params["SGM noise multiplier"] = True
        x = self.model_wrap.predictor.noise_scaling(sigmas[0], x, torch.zeros_like(x), max_denoise=multiplier)
        samples = self._launch(p, x, sigmas, steps, conditioning, unconditional_conditioning, image_conditioning)
        sampling_cleanup(unet)
        return samples

    def _launch(self, p, x, sigmas, steps, conditioning, unconditional_conditioning, image_conditioning):
        options = self.initialize(p)
        parameters = inspect.signature(self.func).parameters
        if "n" in parameters:
            options["n"] = steps
        if "sigma_min" in parameters:
            options["sigma_min"] = self.model_wrap.sigmas[0].item()
            options["sigma_max"] = self.model_wrap.sigmas[-1].item()
        if "sigmas" in parameters:
            options["sigmas"] = sigmas
        if self.config.options.get("brownian_noise", False):
            options["noise_sampler"] = self.create_noise_sampler(x, sigmas, p)
        if self.config.options.get("solver_type", None) == "heun":
            options["solver_type"] = "heun"

        self.last_latent = x
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning,
                                   "uncond": unconditional_conditioning, "cond_scale": p.cfg_scale,
                                   "s_min_uncond": self.s_min_uncond}

        def run():
            return self.func(self.model_wrap_cfg, x, extra_args=self.sampler_extra_args, disable=False,
                             callback=self.callback_state, **options)

        return self.launch_sampling(steps, run)
