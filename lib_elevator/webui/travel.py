"""Prompt travel in the WebUI: the frames are the batch, so each frame gets its own conditioning.

The WebUI does the text side as for any batch. Its extra-network parsing takes every ``<lora:…>`` tag
out of every line and activates the networks of the batch's first prompt, which at that point is the
whole keyed text: each tag is applied once, to the whole clip. Then ``key_prompts`` (from the script's
``process_batch``, before the WebUI builds ``p.c``) gives every frame the prompt of its key
(``head, text, tail``), so the WebUI encodes each key's text once, with its embeddings, attention
weights and prompt-editing schedule. ``travelled`` turns that conditioning into one schedule per
frame: at every step where some key's schedule switches, the keys' conditionings are interpolated per
frame (``prompt_travel.interpolate_conditioning``), so prompt editing still switches per line at the
step it names. A prompt without frame keys is left exactly as it is. WebUI modules are imported
inside functions only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..params import ElevatorParams, ParamError
from ..prompt_travel import interpolate_conditioning, parse_prompt_travel


@dataclass(frozen=True)
class TravelPlan:
    """Where the keys sit in a clip of ``frames`` frames, and how to move between them."""

    key_frames: tuple
    frames: int
    closed_loop: bool
    method: str


def _without_extra_networks(prompt: str) -> str:
    """The prompt as the WebUI encodes it: ``<lora:…>`` and other extra-network tags taken out."""
    from modules import extra_networks

    return extra_networks.parse_prompt(prompt)[0]


def travel_reasons(prompts: list[str], frames: int) -> list[str]:
    """Why a keyed prompt cannot travel over ``frames`` frames: the parser's error, naming the line."""
    reasons = []
    for prompt in prompts:
        try:
            parse_prompt_travel(_without_extra_networks(prompt), frames)
        except ParamError as error:
            reasons.append(f"prompt travel: {error.name} ({error.value!r}): {error.allowed}")
    return reasons


def key_prompts(p, params: ElevatorParams) -> TravelPlan | None:
    """Give each frame of ``p.prompts`` (tags already taken out) its key's prompt; None without keys."""
    keys = parse_prompt_travel(p.prompts[0], params.frames)
    if keys is None:
        return None
    frames = [key.frame for key in keys]
    prompt_of = {}
    for key in keys:
        prompt_of.update((frame, key.prompt) for frame in range(key.frame, params.frames))
    p.prompts = [prompt_of.get(frame, keys[0].prompt) for frame in range(params.frames)]
    return TravelPlan(tuple(frames), params.frames, params.closed_loop, params.prompt_interpolation)


def _cond_at(schedule, step: int):
    """The conditioning a WebUI schedule gives at ``step`` (its first entry ending at or after it)."""
    return next((entry.cond for entry in schedule if step <= entry.end_at_step), schedule[0].cond)


def _stacked(conds: list):
    """The keys' conditionings as one [K, …] tensor (or a dict of them, SDXL); text rows of different
    token lengths are lengthened with their last row, as the WebUI pads a batch."""
    if isinstance(conds[0], dict):
        return {name: _stacked([cond[name] for cond in conds]) for name in conds[0]}
    longest = max(cond.shape[0] for cond in conds)
    return torch.stack([cond if cond.ndim < 2 or cond.shape[0] == longest
                        else torch.cat([cond, cond[-1:].expand(longest - cond.shape[0], *cond.shape[1:])])
                        for cond in conds])


def _per_frame(stacked, plan: TravelPlan):
    if isinstance(stacked, dict):
        rows = {name: _per_frame(value, plan) for name, value in stacked.items()}
        return [{name: value[frame] for name, value in rows.items()} for frame in range(plan.frames)]
    return list(interpolate_conditioning(stacked, list(plan.key_frames), plan.frames, plan.closed_loop, plan.method))


def travelled(conditioning, plan: TravelPlan):
    """The WebUI's ``MulticondLearnedConditioning`` of the key prompts → one interpolated schedule per frame."""
    from modules.prompt_parser import (ComposableScheduledPromptConditioning, MulticondLearnedConditioning,
                                       ScheduledPromptConditioning)

    schedules = [conditioning.batch[frame][0].schedules for frame in plan.key_frames]
    ends = sorted({entry.end_at_step for schedule in schedules for entry in schedule})
    rows_at = [_per_frame(_stacked([_cond_at(schedule, end) for schedule in schedules]), plan) for end in ends]
    batch = [[ComposableScheduledPromptConditioning(
        [ScheduledPromptConditioning(end, rows[frame]) for end, rows in zip(ends, rows_at)])]
        for frame in range(plan.frames)]
    return MulticondLearnedConditioning(shape=(plan.frames,), batch=batch)
