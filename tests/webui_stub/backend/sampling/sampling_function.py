"""Stand-in for Forge 2 ``backend/sampling/sampling_function.py``: cond/uncond batching, CFG and the
load/unload around sampling.

``calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options)`` → ``(cond_pred,
uncond_pred)``: every compiled condition becomes a chunk of ``x_in``'s batch; chunks whose conditions can
be concatenated go to ``model.apply_model`` together. For each call, ``transformer_options`` is a copy of
``model_options["transformer_options"]`` with ``cond_or_uncond`` (per chunk, in batch order: 0 = cond,
1 = uncond), ``sigmas`` (the σ of one chunk), ``cond_mark`` (per row), ``cond_indices`` /
``uncond_indices`` (row numbers); ``model_options["model_function_wrapper"]`` (if set) is called as
``wrapper(model.apply_model, {"input", "timestep", "c", "cond_or_uncond"})`` instead. Each chunk's output is
weighted by the condition's ``strength`` and averaged per kind; an absent uncond (``None`` or ``[]``)
gives zeros.

Forge decides how many chunks share a call from the free VRAM; that is the tests' choice here:
``BATCHING`` (module attribute, read on every call)
- ``"together"`` / ``"together_uncond_first"``: one call for all chunks, in Forge's order — the uncond
  chunk first, then the cond chunks from the last sub-prompt to the first ([uncond; cond] for a plain
  prompt);
- ``"together_cond_first"``: one call, cond chunks first ([cond; uncond]);
- ``"separate"`` / ``"separate_uncond_first"``: one call per chunk, Forge's order (what Forge does when
  memory is short);
- ``"separate_cond_first"``: one call per chunk, cond chunks first.

``sampling_function_inner``: cond_scale ≈ 1 skips the uncond unless ``disable_cfg1_optimization``; then
``sampler_pre_cfg_function``s, the batch, ``sampler_cfg_function`` or uncond + (cond − uncond)·scale
(times the summed strength for ``AND`` prompts), then each ``sampler_post_cfg_function(args)`` replaces
the result. ``sampling_function(cfg_denoiser, denoiser_params, cond_scale, cond_composition)`` reads the
UNet patcher from ``cfg_denoiser.inner_model.inner_model.forge_objects.unet`` and returns
``(denoised, cond_pred, uncond_pred)``.

``sampling_prepare(unet, x)`` "loads" the UNet patcher and its ``extra_model_patchers_during_sampling``
(``memory_management.load_models_gpu``) and sets ``LOADED`` (module list, replaced in place) to exactly
those patchers; ``sampling_cleanup(unet)`` does what Forge does on a CPU (nothing to free).
Not provided: area/mask/timestep-range conditions, ControlNet.
"""
import math
from dataclasses import dataclass

import torch

from backend import memory_management
from backend.sampling.condition import Condition, compile_conditions, compile_weighted_conditions

COND, UNCOND = 0, 1

BATCHING = "together"
_BATCHING_MODES = {  # name → (one call for all chunks, Forge's uncond-first order)
    "together": (True, True), "together_uncond_first": (True, True), "together_cond_first": (True, False),
    "separate": (False, True), "separate_uncond_first": (False, True), "separate_cond_first": (False, False),
}

LOADED: list = []
"""the patchers the latest ``sampling_prepare`` loaded: the UNet first, then the extra ones"""


@dataclass
class _Chunk:
    kind: int
    x: torch.Tensor
    strength: float
    conditioning: dict


def _chunk(entry, kind, x_in):
    conditioning = {name: c.process_cond(batch_size=x_in.shape[0], device=x_in.device)
                    for name, c in entry["model_conds"].items()}
    return _Chunk(kind, x_in, entry.get("strength", 1.0), conditioning)


def _joinable(a, b):
    if a.x.shape != b.x.shape or a.conditioning.keys() != b.conditioning.keys():
        return False
    return all(a.conditioning[name].can_concat(b.conditioning[name]) for name in a.conditioning)


def _calls(chunks):
    """The chunks grouped into UNet calls, in the order the calls are made."""
    if BATCHING not in _BATCHING_MODES:
        raise ValueError(f"BATCHING must be one of {sorted(_BATCHING_MODES)}, not {BATCHING!r}")
    together, uncond_first = _BATCHING_MODES[BATCHING]
    calls, waiting = [], list(chunks)
    while waiting:
        group = [c for c in waiting if _joinable(c, waiting[0])]
        waiting = [c for c in waiting if all(c is not g for g in group)]
        if uncond_first:
            group.reverse()
        calls.extend([group] if together else [[c] for c in group])
    return calls


def _options_for(model_options, kinds, sigmas):
    options = dict(model_options.get("transformer_options", {}))
    rows = int(sigmas.shape[0])
    options["cond_or_uncond"] = list(kinds)
    options["sigmas"] = sigmas
    options["cond_mark"] = torch.tensor([kind for kind in kinds for _ in range(rows)]).to(sigmas)
    options["cond_indices"] = [i * rows + r for i, kind in enumerate(kinds) if kind == COND for r in range(rows)]
    options["uncond_indices"] = [i * rows + r for i, kind in enumerate(kinds) if kind == UNCOND for r in range(rows)]
    return options


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options):
    chunks = [_chunk(entry, COND, x_in) for entry in cond]
    chunks += [_chunk(entry, UNCOND, x_in) for entry in (uncond or [])]
    sums = {COND: torch.zeros_like(x_in), UNCOND: torch.zeros_like(x_in)}
    weights = {COND: 1e-37, UNCOND: 1e-37}

    for group in _calls(chunks):
        kinds = [c.kind for c in group]
        first = group[0].conditioning
        c = {name: first[name].concat([other.conditioning[name] for other in group[1:]]) for name in first}
        c["transformer_options"] = _options_for(model_options, kinds, timestep)
        batch, sigmas = torch.cat([chunk.x for chunk in group]), torch.cat([timestep] * len(group))
        wrapper = model_options.get("model_function_wrapper")
        if wrapper is None:
            output = model.apply_model(batch, sigmas, **c)
        else:
            output = wrapper(model.apply_model, {"input": batch, "timestep": sigmas, "c": c, "cond_or_uncond": kinds})
        for chunk, piece in zip(group, output.chunk(len(group))):
            sums[chunk.kind] += piece * chunk.strength
            weights[chunk.kind] += chunk.strength
    return sums[COND] / weights[COND], sums[UNCOND] / weights[UNCOND]


def sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options=None, seed=None,
                            return_full=False):
    model_options = {} if model_options is None else model_options
    edit_strength = sum(entry.get("strength", 1) for entry in cond)
    skip_uncond = math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False)
    uncond_ = None if skip_uncond else uncond

    for fn in model_options.get("sampler_pre_cfg_function", []):
        model, cond, uncond_, x, timestep, model_options = fn(model, cond, uncond_, x, timestep, model_options)

    cond_pred, uncond_pred = calc_cond_uncond_batch(model, cond, uncond_, x, timestep, model_options)

    if "sampler_cfg_function" in model_options:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": timestep,
                "input": x, "sigma": timestep, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                "model": model, "model_options": model_options}
        result = x - model_options["sampler_cfg_function"](args)
    else:
        scale = cond_scale if math.isclose(edit_strength, 1.0) else cond_scale * edit_strength
        result = uncond_pred + (cond_pred - uncond_pred) * scale

    for fn in model_options.get("sampler_post_cfg_function", []):
        result = fn({"denoised": result, "cond": cond, "uncond": uncond, "model": model,
                     "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": timestep,
                     "model_options": model_options, "input": x})
    return (result, cond_pred, uncond_pred) if return_full else result


def sampling_function(self, denoiser_params, cond_scale, cond_composition):
    unet = self.inner_model.inner_model.forge_objects.unet
    if unet.controlnet_linked_list is not None:
        raise NotImplementedError("ControlNet is not supported by the stand-in")
    model, model_options, seed = unet.model, unet.model_options, self.p.seeds[0]
    x, timestep = denoiser_params.x, denoiser_params.sigma
    uncond = compile_conditions(denoiser_params.text_uncond)
    cond = compile_weighted_conditions(denoiser_params.text_cond, cond_composition)

    image_cond = unet.extra_concat_condition
    if image_cond is None:
        image_cond = denoiser_params.image_cond
    if isinstance(image_cond, torch.Tensor) and image_cond.shape[0] == x.shape[0] and image_cond.shape[2:] == x.shape[2:]:
        for entry in [*cond, *(uncond or [])]:
            entry["model_conds"]["c_concat"] = Condition(image_cond)

    for modifier in model_options.get("conditioning_modifiers", []):
        model, x, timestep, uncond, cond, cond_scale, model_options, seed = modifier(
            model, x, timestep, uncond, cond, cond_scale, model_options, seed)

    return sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options, seed, return_full=True)


def sampling_prepare(unet, x):
    batch, channels, height, width = x.shape
    estimate = unet.model_options.get("memory_peak_estimation_modifier", unet.memory_required)
    patchers = [unet, *unet.extra_model_patchers_during_sampling]
    memory_management.load_models_gpu(models=patchers, memory_required=estimate([batch * 2, channels, height, width]),
                                      hard_memory_preservation=unet.extra_preserved_memory_during_sampling)
    LOADED[:] = patchers


def sampling_cleanup(unet):
    memory_management.soft_empty_cache()
