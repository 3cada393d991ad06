"""Stand-in for A1111 ``modules/sd_samplers.py`` (the sampler registry and ``create_sampler``), written for
these tests.

Behaviour kept: ``all_samplers`` / ``all_samplers_map`` (name → ``SamplerData``); ``samplers`` /
``samplers_for_img2img`` / ``samplers_map`` (lower-case names and aliases → name), rebuilt by
``set_samplers()``, with ``opts.hide_samplers`` honoured by ``visible_sampler_names``;
``find_sampler_config`` (``None`` → the first sampler); ``create_sampler(name, model)`` (the config's
constructor, then ``sampler.config = config``); ``get_sampler_and_scheduler`` /
``fix_p_invalid_sampler_and_scheduler`` (a scheduler suffix moves to the scheduler — "DPM++ 2M Karras" →
"DPM++ 2M" + "Karras" —, unknown sampler names fall back to the first sampler, and, unless asked not to,
a scheduler equal to the sampler's own default becomes "Automatic").
``all_samplers`` lists every sampler of 1.10.1 — k-diffusion, then the timestep samplers, then LCM — and, on
the Forge 2 host, Forge's DDPM last (``modules_forge.alter_samplers``); of these the stand-in can sample with
Euler, Euler a and DPM++ 2M only. Not memoized, no infotext helpers.
"""
from __future__ import annotations

import logging

from modules import (
    sd_samplers_common,
    sd_samplers_kdiffusion,
    sd_samplers_lcm,
    sd_samplers_timesteps,
    sd_schedulers,
    shared,
    stub_host,
)

SamplerData = sd_samplers_common.SamplerData
sample_to_image = sd_samplers_common.sample_to_image
samples_to_image_grid = sd_samplers_common.samples_to_image_grid

all_samplers = [*sd_samplers_kdiffusion.samplers_data_k_diffusion, *sd_samplers_timesteps.samplers_data_timesteps,
                *sd_samplers_lcm.samplers_data_lcm]
if stub_host.is_forge():
    from modules_forge import alter_samplers

    all_samplers += alter_samplers.samplers_data_alter
all_samplers_map = {config.name: config for config in all_samplers}

samplers: list = []
samplers_for_img2img: list = []
samplers_map: dict = {}
samplers_hidden: set = set()


def find_sampler_config(name):
    return all_samplers[0] if name is None else all_samplers_map.get(name)


def set_samplers():
    global samplers, samplers_for_img2img, samplers_hidden
    samplers_hidden = set(shared.opts.hide_samplers)
    samplers = samplers_for_img2img = all_samplers
    lookup = {}
    for config in all_samplers:
        for known_as in (config.name, *config.aliases):
            lookup[known_as.lower()] = config.name
    samplers_map.clear()
    samplers_map.update(lookup)


def visible_sampler_names():
    return [config.name for config in samplers if config.name not in samplers_hidden]


def create_sampler(name, model):
    """A new sampler object for the sampler called ``name`` (an unknown name is an error)."""
    config = find_sampler_config(name)
    if config is None:
        raise AssertionError(f"bad sampler name: {name}")
    if config.options.get("no_sdxl", False) and model.is_sdxl:
        raise Exception(f"Sampler {config.name} is not supported for SDXL")
    made = config.constructor(model)
    made.config = config
    return made


def _without_scheduler_suffix(name, scheduler):
    """``name`` minus a trailing " <label, name or alias of scheduler>", or None when it has none."""
    for suffix in (scheduler.label, scheduler.name, *(scheduler.aliases or ())):
        if name.endswith(f" {suffix}"):
            return name[:len(name) - len(suffix) - 1]
    return None


def get_sampler_and_scheduler(sampler_name, scheduler_name, *, convert_automatic=True):
    """``(sampler name, scheduler label)`` for possibly old-style or unknown names."""
    automatic = sd_schedulers.schedulers[0]
    scheduler = sd_schedulers.schedulers_map.get(scheduler_name, automatic)
    name = sampler_name or samplers[0].name
    for candidate in sd_schedulers.schedulers:
        shortened = _without_scheduler_suffix(name, candidate)
        if shortened is not None:
            name, scheduler = shortened, candidate
    config = all_samplers_map.get(name, samplers[0])
    if convert_automatic and config.options.get("scheduler") == scheduler.name:
        scheduler = automatic
    return config.name, scheduler.label


def fix_p_invalid_sampler_and_scheduler(p):
    before = (p.sampler_name, p.scheduler)
    p.sampler_name, p.scheduler = get_sampler_and_scheduler(*before, convert_automatic=False)
    if (p.sampler_name, p.scheduler) != before:
        logging.warning(f'Sampler Scheduler autocorrection: "{before[0]}" -> "{p.sampler_name}", '
                        f'"{before[1]}" -> "{p.scheduler}"')


set_samplers()
