"""Stand-in for A1111 ``modules/prompt_parser.py`` (written for this project, not copied).

What the samplers and the extension see is kept: the containers ``ScheduledPromptConditioning``
(``end_at_step``, ``cond``), ``ComposableScheduledPromptConditioning`` (``schedules``, ``weight``),
``MulticondLearnedConditioning`` (``shape``, ``batch``) and ``SdConditioning`` (a list of prompts with
``width``/``height``/``is_negative_prompt``), and these behaviours:
- prompt editing ``[from:to:when]``, ``[to:when]``, ``[from::when]`` and alternation ``[a|b|...]``:
  ``when`` containing a ``.`` is a fraction of the steps, otherwise a step number; the switch step is
  ``min(steps, int(value))``; the *from* text is used while ``step <= switch``; alternation picks
  option ``(step - 1) % n``. The hires offsets and ``use_old_scheduling`` are honoured as well.
- ``get_learned_conditioning`` encodes all schedule texts of each *distinct* prompt in one
  ``model.get_learned_conditioning`` call.
- ``get_multicond_learned_conditioning`` splits on ``AND``, reads an optional ``:weight`` suffix and
  encodes a sub-prompt shared by several prompts only once.
- ``reconstruct_cond_batch`` / ``reconstruct_multicond_batch``: the entry used at ``current_step`` is the
  first with ``current_step <= end_at_step`` (the first entry when none is); sub-prompts with fewer
  tokens are padded by repeating their last token row.
Simplified: a regular expression instead of a grammar, so only *non-nested* editing/alternation groups
are recognised (their texts may hold ``(x:1.2)`` emphasis groups); other brackets stay literal text.
Conditioning is a tensor per prompt (SD1.x) or, for SDXL, a dict of tensors (``crossattn`` [tokens, C],
``vector`` [V]): a model returning a dict gives each schedule entry ``{key: rows[n]}``, and both reconstruct
functions return a ``DictWithShape`` (a dict whose ``shape`` is its ``crossattn``'s; Forge's also has ``to`` and
``advanced_indexing``), each key stacked on its own and only token rows padded.
"""
from __future__ import annotations

import re
from collections import namedtuple
from dataclasses import dataclass

import torch

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])

_CHUNK = r"(?:\([^()\[\]]*\)|[^\[\]:|()])*"  # literal characters or one flat "(word:1.2)" group
_GROUP = re.compile(
    rf"\[(?:(?P<src>{_CHUNK}):)?(?P<dst>{_CHUNK}):\s*(?P<when>[+-]?(?:\d+\.?\d*|\.\d+))\s*\]"
    rf"|\[(?P<options>{_CHUNK}(?:\|{_CHUNK})+)\]"
)
_AND = re.compile(r"\bAND\b")
_WEIGHT_SUFFIX = re.compile(r"\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*$")


class SdConditioning(list):
    """Prompts plus the image size and negative-prompt flag (taken from ``copy_from`` when not given)."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__(prompts)
        source = prompts if copy_from is None else copy_from
        self.is_negative_prompt = bool(is_negative_prompt or getattr(source, "is_negative_prompt", False))
        self.width = width if width else getattr(source, "width", None)
        self.height = height if height else getattr(source, "height", None)


@dataclass
class ComposableScheduledPromptConditioning:
    """One ``AND`` part of a prompt: its schedule and its weight."""
    schedules: list
    weight: float = 1.0


@dataclass
class MulticondLearnedConditioning:
    """``batch[i]`` holds the weighted ``AND`` parts of prompt i; ``shape`` is ``(number of prompts,)``."""
    shape: tuple
    batch: list


# --- schedules -------------------------------------------------------------------------------------


def _schedule_for(prompt, steps, to_step):
    """``[[end_at_step, text], ...]`` for one prompt; ``to_step(when_text)`` gives a switch step."""
    pieces = []  # str | (switch_step, src, dst) | [option, ...]
    cursor = 0
    for match in _GROUP.finditer(prompt):
        pieces.append(prompt[cursor:match.start()])
        if match["options"] is not None:
            pieces.append(match["options"].split("|"))
        else:
            pieces.append((to_step(match["when"]), match["src"] or "", match["dst"]))
        cursor = match.end()
    pieces.append(prompt[cursor:])

    ends = {steps}
    for piece in pieces:
        if isinstance(piece, list):
            ends.update(range(1, steps + 1))
        elif isinstance(piece, tuple) and piece[0] >= 1:
            ends.add(piece[0])

    def render(step):
        text = ""
        for piece in pieces:
            if isinstance(piece, str):
                text += piece
            elif isinstance(piece, list):
                text += piece[(step - 1) % len(piece)]
            else:
                switch, src, dst = piece
                text += src if step <= switch else dst
        return text

    return [[end, render(end)] for end in sorted(ends)]


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    """Per prompt, ``[[end_at_step, text], ...]``; ``"a [b:c:0.5]"`` at 10 steps → ``[[5, 'a b'], [10, 'a c']]``."""
    in_hires = hires_steps is not None and not use_old_scheduling
    steps = hires_steps if in_hires else base_steps

    def to_step(when):
        value = float(when)
        if use_old_scheduling:
            if value < 1:
                value *= steps
        elif "." in when:
            value = (value - (1.0 if in_hires else 0.0)) * steps
        elif in_hires:
            value -= base_steps
        return min(steps, int(value))

    by_prompt = {}
    for prompt in prompts:
        if prompt not in by_prompt:
            by_prompt[prompt] = _schedule_for(prompt, steps, to_step)
    return [by_prompt[prompt] for prompt in prompts]


# --- encoding --------------------------------------------------------------------------------------


def get_learned_conditioning(model, prompts: SdConditioning | list[str], steps, hires_steps=None, use_old_scheduling=False):
    """One list of ``ScheduledPromptConditioning`` per prompt; each distinct prompt is encoded once."""
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    encoded = {}
    for prompt, schedule in zip(prompts, schedules):
        if prompt in encoded:
            continue
        texts = SdConditioning([text for _, text in schedule], copy_from=prompts)
        rows = model.get_learned_conditioning(texts)
        encoded[prompt] = [ScheduledPromptConditioning(end, _row(rows, n)) for n, (end, _) in enumerate(schedule)]
    return [encoded[prompt] for prompt in prompts]


def _text_and_weight(part):
    match = _WEIGHT_SUFFIX.search(part)
    if match is None:
        return part.rstrip(), 1.0
    return part[:match.start()], float(match.group(1))


def get_multicond_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False) -> MulticondLearnedConditioning:
    """``AND``-composed prompts: each batch item is a list of weighted sub-prompt schedules."""
    unique_texts = SdConditioning([], copy_from=prompts)
    position = {}
    per_prompt = []
    for prompt in prompts:
        refs = []
        for part in _AND.split(prompt):
            text, weight = _text_and_weight(part)
            if text not in position:
                position[text] = len(unique_texts)
                unique_texts.append(text)
            refs.append((position[text], weight))
        per_prompt.append(refs)
    learned = get_learned_conditioning(model, unique_texts, steps, hires_steps, use_old_scheduling)
    batch = [[ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in refs] for refs in per_prompt]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


def _row(rows, n):
    return {key: value[n] for key, value in rows.items()} if isinstance(rows, dict) else rows[n]


# --- per-step batches ------------------------------------------------------------------------------


class DictWithShape(dict):
    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape

    def to(self, *args, **kwargs):
        for key, value in self.items():
            self[key] = value.to(*args, **kwargs)
        return self

    def advanced_indexing(self, item):
        return DictWithShape({key: value[item] for key, value in self.items()})


def _stacked(conds, stack):
    """``stack`` over a list of tensors, or over each key of a list of dicts (→ ``DictWithShape``)."""
    if not isinstance(conds[0], dict):
        return stack(conds)
    return DictWithShape({key: stack([cond[key] for cond in conds]) for key in conds[0]})



def _cond_at(schedule, current_step):
    return next((entry.cond for entry in schedule if current_step <= entry.end_at_step), schedule[0].cond)


def _pad_tokens(tensors):
    """Stack ``[tokens, dim]`` tensors, lengthening short ones with copies of their final row."""
    longest = max(t.shape[0] for t in tensors)
    padded = [t if t.shape[0] == longest else torch.cat([t, t[-1:].expand(longest - t.shape[0], -1)]) for t in tensors]
    return torch.stack(padded)


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step):
    """The ``[batch, tokens, dim]`` conditioning in effect at ``current_step``."""
    return _stacked([_cond_at(schedule, current_step) for schedule in c], torch.stack)


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step):
    """``(conds_list, tensor)``: ``conds_list[i]`` = ``[(row in tensor, weight), ...]`` for batch item i."""
    rows, conds_list = [], []
    for composables in c.batch:
        item = []
        for composable in composables:
            item.append((len(rows), composable.weight))
            rows.append(_cond_at(composable.schedules, current_step))
        conds_list.append(item)
    return conds_list, _stacked(rows, _pad_tokens)
