"""Stand-in for A1111 ``modules/processing.py`` (v1.10.1), txt2img only, written for this project.

Public names kept for extensions: ``StableDiffusionProcessing``, ``StableDiffusionProcessingTxt2Img``
(``StableDiffusionProcessingImg2Img`` only for ``isinstance`` checks), ``Processed``,
``process_images``, ``create_infotext``, ``decode_latent_batch``, ``get_fixed_seed``/``fix_seed``,
``txt2img_image_conditioning``, ``program_version``, ``opt_C``/``opt_f``.

What an extension can observe follows A1111. ``process_images(p)`` calls ``scripts.before_process``,
then applies ``p.override_settings`` (restored afterwards) and token merging
(``p.get_token_merging_ratio()``, set back to 0 at the end), corrects the sampler/scheduler names,
fixes the seeds (-1 → random; image ``i`` gets ``seed + i``), expands the prompts
(``batch_size · n_iter`` copies unless lists are given) and calls ``scripts.process`` and ``p.init``.
Each of the ``n_iter`` batches, under ``torch.no_grad()``: a pending skip is cleared and an interrupt
or stop ends the loop; ``p.prompts/negative_prompts/seeds/subseeds`` are this batch's slice and
``p.rng`` an ``ImageRNG`` over them; ``scripts.before_process_batch``; ``<lora:…>`` tags are taken out
of ``p.prompts`` and ``extra_networks.activate`` runs (it calls ``after_extra_networks_activate``);
``scripts.process_batch``; ``p.setup_conds()`` (conditioning kept across jobs while the prompts,
steps, model and networks are unchanged, like A1111's ``cached_c``/``cached_uc``); ``params.txt`` on
the first batch; ``sd_models.apply_alpha_schedule_override``; ``p.sample(conditioning=…,
unconditional_conditioning=…, seeds=…, subseeds=…, subseed_strength=…, prompts=…)``;
``scripts.post_sample``; VAE decode (skipped when the samples say ``already_decoded``) and mapping to
[0, 1]; ``state.nextjob``; ``scripts.postprocess_batch(images=…)`` and ``postprocess_batch_list``
(after which ``p.prompts`` is the unparsed slice again, as in A1111); then per image
``postprocess_image``, ``postprocess_maskoverlay``, ``postprocess_image_after_composite``, saving
(``p.save_samples()``) and the infotext. Afterwards the grid goes first in the result
(``index_of_first_image = 1``) when ``return_grid`` is on and there are 2+ images,
``extra_networks.deactivate`` runs, and ``scripts.postprocess`` gets the ``Processed``.
``StableDiffusionProcessingTxt2Img.sample`` creates ``p.sampler``, draws the noise from ``p.rng``,
calls ``scripts.process_before_every_sampling(x=, noise=, c=, uc=)`` and samples.
``p.sd_model`` always reads ``shared.sd_model``; assigning to it does nothing (as in A1111).

Forge 2 host (``stub_host.is_forge()``), as Forge's ``process_images`` / ``process_images_inner``:
``process_images`` applies no token merging (the txt2img ``sample`` does, after its reset); the job runs
under ``torch.inference_mode()`` without ``ema_scope``; comments and extra infotext values collect on
``p.sd_model.comments`` / ``.extra_generation_params`` (reset in ``_prepare``); each batch starts with
``sd_models.forge_model_reload()`` and ``forge_objects = forge_objects_original.shallow_copy()``, takes
the latent channels from ``forge_objects.vae``, and after ``extra_networks.activate`` sets ``forge_objects
= forge_objects_after_applying_lora.shallow_copy()`` (before ``scripts.process_batch``); with the
"Zero Terminal SNR" schedule the predictor's σ table is rescaled around ``p.sample``; each batch's latents
are appended to ``p.latents_after_sampling``; the VAE decodes the batch in one call; the infotext has
Forge's version string (``f2.0.1v1.10.1-…``) and no VAE entries.
``StableDiffusionProcessingTxt2Img.sample`` on Forge: ``create_sampler``, ``x = p.rng.next()``, ``forge_objects
= forge_objects_after_applying_lora.shallow_copy()``, token merging, ``scripts.process_before_every_sampling(
x=, noise=, c=, uc=)``, ``p.modified_noise`` (if a script set it) replaces x, then ``sampler.sample``.

The refiner's checkpoint is looked up as in A1111 (an unknown name fails the job), and the per-image face
restoration step is where A1111 has it; neither can run here (the one checkpoint is never switched, see
``sd_samplers_cfg_denoiser``, and restoring faces raises ``NotImplementedError``).
Left out: hires fix (``enable_hr`` raises in ``init``), img2img/inpainting,
tiling, colour correction, overlays, VAE approximations, per-image list/callable infotext values
(``Processed.js()`` gives the API's ``info`` JSON with A1111's fields, ``extra_images`` stays empty); styles pass through ``shared.prompt_styles``, which changes nothing here.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from modules import (
    devices,
    extra_networks,
    images,
    infotext_utils,
    paths,
    prompt_parser,
    rng,
    scripts,
    sd_models,
    sd_samplers,
    sd_samplers_common,
    sd_unet,
    sd_vae,
    shared,
    stub_host,
)
from modules.sd_hijack import model_hijack
from modules.shared import cmd_opts, opts, state

opt_C = 4  # latent channels
opt_f = 8  # VAE downscale factor

PROGRAM_VERSION = "f2.0.1v1.10.1-previous-669-gdfdcbab6" if stub_host.is_forge() else "v1.10.1"

# kind ("c" / "uc") -> (what the conditioning was computed from, the conditioning)
_cond_cache: dict = {}


def program_version():
    return PROGRAM_VERSION


def get_fixed_seed(seed):
    """``seed`` as a usable number; -1, None, "" and text that is not a number mean a random seed."""
    if isinstance(seed, list):
        return seed
    if isinstance(seed, str):
        seed = seed.strip()
        seed = int(seed) if seed.lstrip("-").isdigit() else -1
    if seed is None or seed == -1:
        return int(random.randrange(4294967294))
    return seed


def fix_seed(p):
    p.seed, p.subseed = get_fixed_seed(p.seed), get_fixed_seed(p.subseed)


def txt2img_image_conditioning(sd_model, x, width, height):
    """The image conditioning of a txt2img run: a dummy zero tensor for ordinary (non-inpainting) models."""
    if sd_model.is_inpaint if stub_host.is_forge() else sd_model.model.conditioning_key in ("hybrid", "concat"):
        raise NotImplementedError("inpainting models are not supported by the stand-in")
    return torch.zeros((len(x), 5, 1, 1), dtype=x.dtype, device=x.device)


class DecodedSamples(list):
    """A batch that is already pixels; ``process_images`` does not decode it again."""
    already_decoded = True


def decode_latent_batch(model, batch, target_device=None, check_for_nans=False):
    """Decode latents one image at a time (as A1111 does, to bound VAE memory; Forge decodes the batch in one
    call and does not check for NaNs); values in [-1, 1]."""
    decoded = DecodedSamples()
    forge = stub_host.is_forge()
    for latents in [batch] if forge else batch.split(1):
        pixels = sd_samplers_common.decode_first_stage(model, latents)
        if check_for_nans and not forge:
            devices.test_for_nans(pixels, "vae")
        decoded.extend(pixels if target_device is None else pixels.to(target_device))
    return decoded


class StableDiffusionProcessing:
    """One generation job: what to make (constructor keywords) and, while it runs, where it is."""

    # Keywords the constructor takes, with their defaults: the subset of A1111's fields this stand-in
    # honours or extensions read. ``sd_model`` is accepted too and ignored (see the property).
    _keyword_defaults: ClassVar[dict] = {
        # what to draw
        "prompt": "", "negative_prompt": "", "styles": None,
        "width": 512, "height": 512, "batch_size": 1, "n_iter": 1,
        # how to sample it
        "sampler_name": None, "scheduler": None, "steps": 50, "cfg_scale": 7.0, "eta": None,
        "s_min_uncond": None, "s_churn": None, "s_tmin": None, "s_tmax": None, "s_noise": None,
        "seed": -1, "subseed": -1, "subseed_strength": 0,
        "seed_resize_from_h": -1, "seed_resize_from_w": -1,
        "token_merging_ratio": 0, "token_merging_ratio_hr": 0,
        "restore_faces": None, "tiling": None, "disable_extra_networks": False,
        "refiner_checkpoint": None, "refiner_switch_at": None,
        # settings and output
        "override_settings": None, "override_settings_restore_afterwards": True,
        "extra_generation_params": None,
        "outpath_samples": None, "outpath_grids": None,
        "do_not_save_samples": False, "do_not_save_grid": False,
    }

    def __init__(self, **kwargs):
        kwargs.pop("sd_model", None)
        unknown = sorted(set(kwargs) - set(self._keyword_defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments: {', '.join(unknown)}")
        for name, default in self._keyword_defaults.items():
            setattr(self, name, kwargs.get(name, default))
        self.styles = list(self.styles or [])
        self.extra_generation_params = dict(self.extra_generation_params or {})
        self.override_settings = dict(self.override_settings or {})

        self._scripts = None
        self._script_args = None
        self.scripts_setup_complete = False
        self.is_api = self.is_hr_pass = self.is_using_inpainting_conditioning = False
        self.user = self.sampler_noise_scheduler_override = self.refiner_checkpoint_info = None
        self.comments = {}

        # filled in while the job runs
        self.sampler = self.rng = None
        self.c = self.uc = None
        self.iteration = 0
        self.batch_index = 0
        self.all_prompts = self.all_negative_prompts = self.all_seeds = self.all_subseeds = None
        self.main_prompt = self.main_negative_prompt = None
        self.prompts = self.negative_prompts = self.seeds = self.subseeds = None
        self.extra_network_data = None
        self.sd_model_name = self.sd_model_hash = self.sd_vae_name = self.sd_vae_hash = None
        if stub_host.is_forge():
            self.latents_after_sampling = []
            self.modified_noise = None

    # --- the model and the script runner ---

    @property
    def sd_model(self):
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value):
        pass  # A1111 ignores it too: the loaded model is the one used

    def _triggers_setup(attribute):  # builds a property in the class body (no self)
        """A property over ``attribute`` whose assignment may run the scripts' ``setup`` hooks."""
        def assign(self, value):
            setattr(self, attribute, value)
            self._maybe_setup_scripts()
        return property(lambda self: getattr(self, attribute), assign)

    scripts = _triggers_setup("_scripts")
    script_args = _triggers_setup("_script_args")
    del _triggers_setup

    def _maybe_setup_scripts(self):
        """Once both the runner and its arguments are known, the scripts' ``setup`` hooks run (once)."""
        if not self.scripts_setup_complete and self._scripts and self._script_args:
            self.setup_scripts()

    def setup_scripts(self):
        runner, self.scripts_setup_complete = self._scripts, True
        runner.setup_scrips(self, is_ui=not self.is_api)

    # --- small helpers extensions call ---

    def comment(self, text):
        self.comments[text] = 1

    def get_token_merging_ratio(self, for_hr=False):
        ratio = self.token_merging_ratio or opts.token_merging_ratio
        if for_hr:
            ratio = self.token_merging_ratio_hr or opts.token_merging_ratio_hr or ratio
        return ratio

    def save_samples(self) -> bool:
        if not opts.samples_save or self.do_not_save_samples:
            return False
        return opts.save_incomplete_images or not (state.interrupted or state.skipped)

    def txt2img_image_conditioning(self, x, width=None, height=None):
        if stub_host.is_forge():
            self.is_using_inpainting_conditioning = self.sd_model.is_inpaint
        return txt2img_image_conditioning(self.sd_model, x, width or self.width, height or self.height)

    # --- steps of process_images ---

    def fill_fields_from_opts(self):
        for name in ("s_min_uncond", "s_churn", "s_tmin", "s_tmax", "s_noise"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(opts, name))
        if not self.s_tmax:
            self.s_tmax = float("inf")

    def setup_prompts(self):
        positive, negative = self.prompt, self.negative_prompt
        if isinstance(positive, list):
            count = len(positive)
        elif isinstance(negative, list):
            count = len(negative)
        else:
            count = self.batch_size * self.n_iter
        positive = positive if isinstance(positive, list) else [positive] * count
        negative = negative if isinstance(negative, list) else [negative] * count
        if len(positive) != len(negative):
            raise RuntimeError(f"Received a different number of prompts ({len(positive)}) "
                               f"and negative prompts ({len(negative)})")
        styles = shared.prompt_styles
        self.all_prompts = [styles.apply_styles_to_prompt(text, self.styles) for text in positive]
        self.all_negative_prompts = [styles.apply_negative_styles_to_prompt(text, self.styles) for text in negative]
        self.main_prompt, self.main_negative_prompt = self.all_prompts[0], self.all_negative_prompts[0]

    def init(self, all_prompts, all_seeds, all_subseeds):
        pass

    def parse_extra_network_prompts(self):
        self.prompts, self.extra_network_data = extra_networks.parse_prompts(self.prompts)

    def setup_conds(self):
        config = sd_samplers.find_sampler_config(self.sampler_name)
        steps = self.steps if config is None else config.total_steps(self.steps)
        size = {"width": self.width, "height": self.height}
        negative = prompt_parser.SdConditioning(self.negative_prompts, is_negative_prompt=True, **size)
        positive = prompt_parser.SdConditioning(self.prompts, **size)
        self.uc = self._conditioning("uc", prompt_parser.get_learned_conditioning, negative, steps)
        self.c = self._conditioning("c", prompt_parser.get_multicond_learned_conditioning, positive, steps)

    def _conditioning(self, kind, encode, prompts, steps):
        source = (list(prompts), steps, opts.use_old_scheduling, opts.CLIP_stop_at_last_layers, opts.emphasis,
                  shared.sd_model, self.extra_network_data, self.width, self.height)
        cached = _cond_cache.get(kind)
        if cached is not None and cached[0] == source:
            return cached[1]
        with devices.autocast():
            result = encode(shared.sd_model, prompts, steps, None, opts.use_old_scheduling)
        _cond_cache[kind] = (source, result)
        return result

    def get_conds(self):
        return self.c, self.uc

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        raise NotImplementedError()

    def close(self):
        self.sampler = None
        self.c = self.uc = None
        if not opts.persistent_cond_cache:
            _cond_cache.clear()


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    _keyword_defaults: ClassVar[dict] = {**StableDiffusionProcessing._keyword_defaults, "enable_hr": False, "hr_scheduler": None}

    def init(self, all_prompts, all_seeds, all_subseeds):
        if self.enable_hr:
            raise NotImplementedError("hires fix is not supported by the stand-in")

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        noise = self.rng.next()
        if stub_host.is_forge():
            self.sd_model.forge_objects = self.sd_model.forge_objects_after_applying_lora.shallow_copy()
            sd_models.apply_token_merging(self.sd_model, self.get_token_merging_ratio())
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=noise, noise=noise, c=conditioning,
                                                       uc=unconditional_conditioning)
        if getattr(self, "modified_noise", None) is not None:
            noise, self.modified_noise = self.modified_noise, None
        return self.sampler.sample(self, noise, conditioning, unconditional_conditioning,
                                   image_conditioning=self.txt2img_image_conditioning(noise))


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    """Only here so ``isinstance(p, StableDiffusionProcessingImg2Img)`` works; img2img is not supported."""

    def __init__(self, **kwargs):
        raise NotImplementedError("img2img is not supported by the stand-in")


def _first(value):
    return value[0] if isinstance(value, list) else value


class Processed:
    """A finished job: ``images`` (the grid first when there is one) and an infotext for each."""

    _copied_from_p = ("subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size",
                      "restore_faces", "styles", "extra_generation_params", "is_using_inpainting_conditioning",
                      "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
                      "token_merging_ratio", "token_merging_ratio_hr",
                      "eta", "s_churn", "s_tmin", "s_tmax", "s_noise", "s_min_uncond")

    def __init__(self, p: StableDiffusionProcessing, images_list, seed=-1, info="", subseed=None,
                 all_prompts=None, all_negative_prompts=None, all_seeds=None, all_subseeds=None,
                 index_of_first_image=0, infotexts=None, comments=""):
        for name in self._copied_from_p:
            setattr(self, name, getattr(p, name, None))
        self.images = images_list
        self.extra_images = []
        self.info = info
        self.infotexts = infotexts or [info] * len(images_list)
        self.index_of_first_image = index_of_first_image
        self.comments = "".join(text + "\n" for text in p.comments)
        self.prompt = _first(p.prompt)
        self.negative_prompt = _first(p.negative_prompt)
        self.seed = -1 if seed is None else int(_first(seed))
        self.subseed = -1 if subseed is None else int(_first(subseed))
        self.all_prompts = all_prompts or p.all_prompts or [self.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or [self.negative_prompt]
        self.all_seeds = all_seeds or p.all_seeds or [self.seed]
        self.all_subseeds = all_subseeds or p.all_subseeds or [self.subseed]
        self.clip_skip = opts.CLIP_stop_at_last_layers
        self.job_timestamp = getattr(state, "job_timestamp", None)
        self.version = PROGRAM_VERSION

    _in_json = ("subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size",
                "restore_faces", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
                "extra_generation_params", "index_of_first_image", "infotexts", "styles", "job_timestamp",
                "clip_skip", "is_using_inpainting_conditioning", "version", "seed", "all_seeds", "subseed",
                "all_subseeds", "all_prompts", "all_negative_prompts")

    def js(self):
        """The API response's ``info``: a JSON object of fixed fields (what is not JSON becomes null)."""
        fields = {"prompt": self.all_prompts[0], "negative_prompt": self.all_negative_prompts[0],
                  **{name: getattr(self, name, None) for name in self._in_json}}
        return json.dumps(fields, default=lambda value: None)

    def infotext(self, p: StableDiffusionProcessing, index):
        iteration, position = divmod(index, self.batch_size)
        return create_infotext(p, self.all_prompts, self.all_seeds, self.all_subseeds, comments=[],
                               iteration=iteration, position_in_batch=position)


def create_infotext(p, all_prompts, all_seeds, all_subseeds, comments=None, iteration=0, position_in_batch=0,
                    use_main_prompt=False, index=None, all_negative_prompts=None):
    """The text A1111 stores with an image: the prompt, ``Negative prompt: …``, then ``Key: value, …``."""
    if use_main_prompt:
        prompt, negative = p.main_prompt, p.main_negative_prompt
        seed, subseeds, index = p.all_seeds[0], p.all_subseeds, 0
    else:
        if index is None:
            index = iteration * p.batch_size + position_in_batch
        negatives = p.all_negative_prompts if all_negative_prompts is None else all_negative_prompts
        prompt, negative = all_prompts[index], negatives[index]
        seed, subseeds = all_seeds[index], all_subseeds
    varied = p.subseed_strength != 0
    clip_skip = getattr(p, "clip_skip", opts.CLIP_stop_at_last_layers)
    tome = p.get_token_merging_ratio()

    def only_if(flag, value):
        return value if flag else None

    entries = {
        "Steps": p.steps, "Sampler": p.sampler_name, "Schedule type": p.scheduler,
        "CFG scale": p.cfg_scale, "Seed": seed, "Size": f"{p.width}x{p.height}",
        "Model hash": only_if(opts.add_model_hash_to_info, p.sd_model_hash),
        "Model": only_if(opts.add_model_name_to_info, p.sd_model_name),
        "VAE hash": only_if(opts.add_vae_hash_to_info and not stub_host.is_forge(), p.sd_vae_hash),
        "VAE": only_if(opts.add_vae_name_to_info and not stub_host.is_forge(), p.sd_vae_name),
        "Variation seed": subseeds[index] if varied else None,
        "Variation seed strength": only_if(varied, p.subseed_strength),
        "Clip skip": only_if(clip_skip > 1, clip_skip),
        "ENSD": opts.eta_noise_seed_delta or None,
        "Token merging ratio": tome or None,
        "RNG": only_if(opts.randn_source != "GPU", opts.randn_source),
    }
    entries.update(p.extra_generation_params)
    entries["Version"] = only_if(opts.add_version_to_infotext, program_version())
    entries["User"] = only_if(opts.add_user_name_to_info, p.user)

    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{key}: {infotext_utils.quote(value)}" for key, value in entries.items() if value is not None))
    return "\n".join(lines).strip()


def process_images(p: StableDiffusionProcessing) -> Processed:
    """Run ``p``: settings overrides and token merging are in force for the job and undone afterwards."""
    if p.scripts is not None:
        p.scripts.before_process(p)

    previous = {}
    forge = stub_host.is_forge()
    try:
        for key, value in p.override_settings.items():
            if key == "sd_model_checkpoint":
                continue  # the stand-in has one checkpoint
            if key in opts.data:
                previous.setdefault(key, opts.data[key])
            opts.set(key, value, is_api=True, run_callbacks=False)
        if not forge:
            sd_models.apply_token_merging(p.sd_model, p.get_token_merging_ratio())
        sd_samplers.fix_p_invalid_sampler_and_scheduler(p)
        return _run(p)
    finally:
        if not forge:
            sd_models.apply_token_merging(p.sd_model, 0)
        if p.override_settings_restore_afterwards:
            for key, value in previous.items():
                setattr(opts, key, value)


def _prepare(p):
    """Everything before ``scripts.process``: model names, option defaults, prompts and seeds."""
    if isinstance(p.prompt, list):
        assert p.prompt, "empty prompt list"
    else:
        assert p.prompt is not None, "no prompt"
    devices.torch_gc()
    seed, subseed = get_fixed_seed(p.seed), get_fixed_seed(p.subseed)

    if p.restore_faces is None:
        p.restore_faces = opts.face_restoration
    if p.refiner_checkpoint not in (None, "", "None", "none"):
        p.refiner_checkpoint_info = sd_models.get_closet_checkpoint_match(p.refiner_checkpoint)
        if p.refiner_checkpoint_info is None:
            raise Exception(f"Could not find checkpoint with name {p.refiner_checkpoint}")
    if p.tiling is None:
        p.tiling = opts.tiling

    model = shared.sd_model
    p.sd_model_name, p.sd_model_hash = model.sd_checkpoint_info.name_for_extra, model.sd_model_hash
    p.sd_vae_name, p.sd_vae_hash = sd_vae.get_loaded_vae_name(), sd_vae.get_loaded_vae_hash()

    if stub_host.is_forge():
        if p.tiling:
            raise NotImplementedError("tiling is not supported by the stand-in")
        model.comments, model.extra_generation_params = [], {}
    else:
        model_hijack.apply_circular(p.tiling)  # refuses tiling
        model_hijack.clear_comments()
    p.fill_fields_from_opts()
    p.setup_prompts()

    count = len(p.all_prompts)
    seed_step = 1 if p.subseed_strength == 0 else 0  # variations keep the main seed
    p.all_seeds = seed if isinstance(seed, list) else [int(seed) + seed_step * i for i in range(count)]
    p.all_subseeds = subseed if isinstance(subseed, list) else [int(subseed) + i for i in range(count)]


def _run(p) -> Processed:
    _prepare(p)
    if p.scripts is not None:
        p.scripts.process(p)

    output, infotexts = [], []
    forge = stub_host.is_forge()
    scope = contextlib.nullcontext() if forge else p.sd_model.ema_scope()
    with torch.inference_mode() if forge else torch.no_grad(), scope:
        with devices.autocast():
            p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
            sd_unet.apply_unet()
        if state.job_count == -1:
            state.job_count = p.n_iter

        for n in range(p.n_iter):
            p.iteration = n
            state.skipped = False  # a skip ends one batch only
            if state.interrupted or state.stopping_generation:
                break
            done = _run_batch(p, n)
            if done is None:
                break
            for image, text in done:
                output.append(image)
                infotexts.append(text)

        if not infotexts:
            infotexts.append(Processed(p, []).infotext(p, 0))
        first_image = _add_grid(p, output, infotexts)

    if p.extra_network_data and not p.disable_extra_networks:
        extra_networks.deactivate(p, p.extra_network_data)
    devices.torch_gc()

    result = Processed(p, output, seed=p.all_seeds[0], subseed=p.all_subseeds[0], info=infotexts[0],
                       index_of_first_image=first_image, infotexts=infotexts)
    if p.scripts is not None:
        p.scripts.postprocess(p, result)
    return result


def _take_slice(p, part, names):
    for name in names:
        setattr(p, name, getattr(p, "all_" + name)[part])


def _notes():
    """Where comments and extra infotext values collect: ``model_hijack`` in A1111, the model in Forge."""
    holder = shared.sd_model if stub_host.is_forge() else model_hijack
    return holder.comments, holder.extra_generation_params


def _run_batch(p, n):
    """Batch ``n``: returns [(image, infotext), …], or None when there is nothing left to do."""
    hooks = p.scripts
    forge = stub_host.is_forge()
    part = slice(n * p.batch_size, (n + 1) * p.batch_size)
    if forge:
        sd_models.forge_model_reload()
        p.sd_model.forge_objects = p.sd_model.forge_objects_original.shallow_copy()
    _take_slice(p, part, ("prompts", "negative_prompts", "seeds", "subseeds"))
    if forge:
        channels = shared.sd_model.forge_objects.vae.latent_channels
    else:
        channels = getattr(shared.sd_model, "latent_channels", opt_C)
    p.rng = rng.ImageRNG((channels, p.height // opt_f, p.width // opt_f), p.seeds, subseeds=p.subseeds,
                         subseed_strength=p.subseed_strength, seed_resize_from_h=p.seed_resize_from_h,
                         seed_resize_from_w=p.seed_resize_from_w)

    def where():
        return {"batch_number": n, "prompts": p.prompts, "seeds": p.seeds, "subseeds": p.subseeds}

    if hooks is not None:
        hooks.before_process_batch(p, **where())
    if not p.prompts:
        return None

    p.parse_extra_network_prompts()
    if not p.disable_extra_networks:
        with devices.autocast():
            extra_networks.activate(p, p.extra_network_data)
    if forge:
        p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
    if hooks is not None:
        hooks.process_batch(p, **where())

    p.setup_conds()
    comments, extra_params = _notes()
    p.extra_generation_params.update(extra_params)
    if n == 0 and not getattr(cmd_opts, "no_prompt_history", False):
        with open(os.path.join(paths.data_path, "params.txt"), "w", encoding="utf8") as file:
            file.write(Processed(p, []).infotext(p, 0))
    for text in comments:
        p.comment(text)
    if p.n_iter > 1:
        state.job = f"Batch {n + 1} out of {p.n_iter}"

    sd_models.apply_alpha_schedule_override(p.sd_model, p)
    precision = devices.without_autocast() if devices.unet_needs_upcast else devices.autocast()
    with precision, _forge_noise_schedule(p) if forge else contextlib.nullcontext():
        latents = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.subseeds,
                           subseed_strength=p.subseed_strength, prompts=p.prompts)
    if forge:
        p.latents_after_sampling.extend(latents)
    if hooks is not None:
        post = scripts.PostSampleArgs(latents)
        hooks.post_sample(p, post)
        latents = post.samples

    pixels = _to_unit_range(p, latents)
    del latents
    devices.torch_gc()
    state.nextjob()

    if hooks is not None:
        hooks.postprocess_batch(p, pixels, batch_number=n)
        _take_slice(p, part, ("prompts", "negative_prompts"))
        listed = scripts.PostprocessBatchListArgs(list(pixels))
        hooks.postprocess_batch_list(p, listed, batch_number=n)
        pixels = listed.images

    save = p.save_samples()
    done = []
    for i, tensor in enumerate(pixels):
        p.batch_index = i
        if p.restore_faces:
            raise NotImplementedError("face restoration is not supported by the stand-in")
        image = Image.fromarray((255.0 * tensor.cpu().numpy()).astype(np.uint8).transpose(1, 2, 0))
        if hooks is not None:
            image = _postprocess_image(p, hooks, i, image)
        text = create_infotext(p, p.prompts, p.seeds, p.subseeds, index=i, all_negative_prompts=p.negative_prompts)
        if save:
            images.save_image(image, p.outpath_samples, "", p.seeds[i], p.prompts[i], opts.samples_format, info=text, p=p)
        if opts.enable_pnginfo:
            image.info["parameters"] = text
        done.append((image, text))
    return done


@contextlib.contextmanager
def _forge_noise_schedule(p):
    """Forge's "Zero Terminal SNR": the working UNet's σ table is rescaled for ``p.sample`` and put back after
    it returns (as in Forge, not after an exception)."""
    if opts.sd_noise_schedule != "Zero Terminal SNR":
        yield
        return
    from backend.modules.k_prediction import rescale_zero_terminal_snr_sigmas

    p.extra_generation_params["Noise Schedule"] = opts.sd_noise_schedule
    predictor = p.sd_model.forge_objects.unet.model.predictor
    saved = predictor.sigmas
    predictor.set_sigmas(rescale_zero_terminal_snr_sigmas(saved))
    yield
    predictor.set_sigmas(saved)


def _to_unit_range(p, samples):
    """Sampler output → a [B, 3, H, W] float tensor in [0, 1] (decoding latents with the VAE)."""
    if not getattr(samples, "already_decoded", False):
        devices.test_for_nans(samples, "unet")
        samples = decode_latent_batch(p.sd_model, samples, target_device=devices.cpu, check_for_nans=True)
    pixels = torch.stack(list(samples)).float()
    return ((pixels + 1.0) * 0.5).clamp(0.0, 1.0)


def _postprocess_image(p, hooks, index, image):
    first = scripts.PostprocessImageArgs(image)
    hooks.postprocess_image(p, first)
    hooks.postprocess_maskoverlay(p, scripts.PostProcessMaskOverlayArgs(index, getattr(p, "mask_for_overlay", None), None))
    composite = scripts.PostprocessImageArgs(first.image)
    hooks.postprocess_image_after_composite(p, composite)
    return composite.image


def _add_grid(p, output, infotexts) -> int:
    """Make the batch grid when A1111 would; put it first (returns 1) when it is shown, else returns 0."""
    wanted = opts.return_grid or opts.grid_save
    if not wanted or p.do_not_save_grid or (opts.grid_only_if_multiple and len(output) < 2):
        return 0
    grid = images.image_grid(output, p.batch_size)
    text = create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, use_main_prompt=True)
    shown = 0
    if opts.return_grid:
        if opts.enable_pnginfo:
            grid.info["parameters"] = text
        output.insert(0, grid)
        infotexts.insert(0, text)
        shown = 1
    if opts.grid_save:
        images.save_image(grid, p.outpath_grids, "grid", p.all_seeds[0], p.all_prompts[0], opts.grid_format,
                          info=text, short_filename=True, p=p, grid=True)
    return shown
