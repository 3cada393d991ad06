"""The one parameter schema: defaults, ranges and help feed validation, the API dict, the
infotext string and the CLI flags alike.

Defaults are the paper's AnimateLCM recipe (its recommended one). Where to refine is given
either in the paper's form, *steps remaining* (26, 21, 15, 9 at 30 steps), or as fractions of
the schedule already done (0.13, 0.3, 0.5, 0.7), which is what a user wants when they change
the step count: both resolve to steps remaining for a given N.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

FILTERS = ("gaussian", "butterworth", "ideal", "box")
MOTION_NORMS = ("paper", "per_frame")
FUSE_METHODS = ("pyramid", "flat")
INTERPOLATIONS = ("linear", "slerp")
WHOLE_CLIP_BATCH = 32  # frames_per_batch=0: clips up to this length go through the UNet in one batch
AUTO_FRAME_CHUNK = 16  # and longer ones this many frames at a time
MODES = ("elevate", "t2v", "t2i")


class ParamError(ValueError):
    """A bad parameter: the message names the field, the value and what is allowed."""

    def __init__(self, name: str, value: Any, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"VideoElevator: {name}={value!r} is not allowed; {allowed}")


def _spec(default, help, *, low=None, high=None, open_low=False, choices=None, kind=None, multiple=None):
    """A field with its UI/CLI metadata; ``open_low`` excludes ``low`` itself from the range."""
    return field(default=default, metadata=dict(
        help=help, low=low, high=high, open_low=open_low, choices=choices, kind=kind, multiple=multiple))


@dataclass(frozen=True)
class ElevatorParams:
    frames: int = _spec(16, "number of video frames", low=2, high=1024)
    refine_at: tuple = _spec(
        (0.13, 0.3, 0.5, 0.7),
        "where to refine motion: steps remaining (e.g. 26,21,15,9) or fractions of the schedule "
        "done (e.g. 0.13,0.3,0.5,0.7); no values = no refinement",
        kind="refine",
    )
    t2v_steps: int = _spec(6, "T2V denoising steps per refinement", low=1, high=50)
    t2v_cfg_scale: float = _spec(2.0, "classifier-free guidance of the T2V", low=1.0, high=30.0)
    filter: str = _spec("gaussian", "low-pass filter shape", choices=FILTERS)
    d_s: float = _spec(1.0, "low-pass spatial cut-off (1 = keep all spatial detail)", low=0.0, high=1.0, open_low=True)
    d_t: float = _spec(0.6, "low-pass temporal cut-off (smaller = smoother motion)", low=0.0, high=1.0, open_low=True)
    butterworth_order: int = _spec(4, "order n of the butterworth filter", low=1, high=16)
    noise_alpha: float = _spec(0.5, "mixed-noise α: weight of the noise shared by all frames", low=0.0, high=10.0)
    correction: bool = _spec(True, "direct-inversion correction after each refinement")
    t2v_lora_scale: float = _spec(0.8, "strength of the T2V-only LoRA, when one is given", low=0.0, high=2.0)
    fps: float = _spec(8.0, "frames per second of the written video", low=1.0, high=60.0)
    motion_norm: str = _spec(
        "paper",
        "motion-module GroupNorm: paper = statistics over all frames (diffusers, the paper's code); "
        "per_frame = each frame on its own (original AnimateDiff, sd-webui-animatediff)",
        choices=MOTION_NORMS,
    )
    context: bool = _spec(True, "context windows: run the T2V over overlapping windows when the clip is longer than "
                                "the motion module's positional encoding (or than context_length)")
    context_length: int = _spec(0, "frames per T2V context window; 0 = automatic (16, capped by the motion module)",
                                low=0, high=1024)
    context_overlap: int = _spec(-1, "frames shared by neighbouring context windows; -1 = a quarter of the window",
                                 low=-1, high=1023)
    context_stride: int = _spec(1, "context window levels: level k also windows every 2^k-th frame", low=1, high=8)
    context_fuse: str = _spec("pyramid", "how overlapping windows are averaged: pyramid favours window centres",
                              choices=FUSE_METHODS)
    closed_loop: bool = _spec(False, "a seamless loop: context windows wrap around and prompt travel returns "
                                     "from the last key to the first")
    prompt_interpolation: str = _spec("linear", "prompt travel: how the text conditioning moves between frame keys",
                                      choices=INTERPOLATIONS)
    frames_per_batch: int = _spec(0, f"frames per UNet batch of the T2I, correction and inversion passes (same "
                                     f"result, less memory); 0 = all up to {WHOLE_CLIP_BATCH}, else {AUTO_FRAME_CHUNK}",
                                  low=0, high=1024)
    mode: str = _spec(
        "elevate",
        "elevate = VideoElevator; t2v = the motion model alone (plain AnimateDiff/AnimateLCM); "
        "t2i = your checkpoint alone, frames anchored to the first, no motion refining",
        choices=MODES,
    )

    def __post_init__(self):
        _coerce_and_check(self)
        _check_refine_form(self.refine_at)
        if self.context_length == 1:
            raise ParamError("context_length", 1, "0 (automatic) or at least 2 frames")
        if self.context_length and self.context_overlap >= self.context_length:
            raise ParamError("context_overlap", self.context_overlap,
                             f"-1 (automatic) or less than context_length={self.context_length}")

    def unet_batch_frames(self) -> int:
        """How many frames of the clip go through the T2I UNet at once."""
        if self.frames_per_batch:
            return min(self.frames_per_batch, self.frames)
        return self.frames if self.frames <= WHOLE_CLIP_BATCH else AUTO_FRAME_CHUNK

    def refine_steps_remaining(self, steps: int) -> tuple[int, ...]:
        """The paper's form for an N-step schedule, validated against N and ``t2v_steps``.

        Only ``elevate`` refines; the other modes ignore ``refine_at`` (nothing to validate).
        """
        if self.mode != "elevate":
            return ()
        remaining = self._remaining(steps)
        where = f"(refine_at={_format_refine(self.refine_at)} at {steps} steps gives steps remaining {remaining})"
        if any(not 1 <= r <= steps for r in remaining):
            raise ParamError("refine_at", self.refine_at, f"steps remaining must lie in 1..{steps} {where}")
        if any(a <= b for a, b in zip(remaining, remaining[1:])):
            raise ParamError("refine_at", self.refine_at, f"refinements must be distinct and in schedule order {where}")
        if remaining and self.t2v_steps > remaining[-1]:
            raise ParamError(
                "t2v_steps", self.t2v_steps,
                f"the last refinement has only {remaining[-1]} steps left, so at most {remaining[-1]} T2V steps {where}",
            )
        return remaining

    def fitted_to_steps(self, steps: int, keep=()) -> tuple["ElevatorParams", list[str]]:
        """These parameters made to work at ``steps``, and one note per change made.

        At low step counts the fraction form of ``refine_at`` can collapse (0.13 and 0.3 are both
        step 1 of 4) and the last refinement leaves fewer steps than ``t2v_steps``. Fields named in
        ``keep`` (the ones the user chose) are never changed: if they cannot work, the error names
        them. The others are fitted: collapsed refinement points merge, points that leave no T2I
        step after them drop (the T2I must see the refined motion at least once, else the video is
        the T2V's own frames), and ``t2v_steps`` shrinks to what the last refinement leaves.
        """
        if self.mode != "elevate":
            return self, []  # only elevate refines
        fitted, notes = self, []
        is_fraction_form = bool(self.refine_at) and self.refine_at[0] < 1
        if is_fraction_form and "refine_at" not in keep:
            kept, seen = [], set()
            for fraction in self.refine_at:
                remaining = steps - round(fraction * steps)
                if 2 <= remaining <= steps and remaining not in seen:
                    seen.add(remaining)
                    kept.append(fraction)
            if len(kept) < len(self.refine_at):
                fitted = dataclasses.replace(fitted, refine_at=tuple(kept))
                using = (f"{_format_refine(kept, ',')} (steps remaining {_format_refine(sorted(seen, reverse=True), ',')})"
                         if kept else "no refinement")
                notes.append(f"refine_at {_format_refine(self.refine_at, ',')} collapses at {steps} steps; using {using}")
        if fitted.refine_at and "t2v_steps" not in keep:
            last = min(fitted._remaining(steps))
            if 1 <= last < fitted.t2v_steps:
                fitted = dataclasses.replace(fitted, t2v_steps=last)
                notes.append(f"t2v_steps {self.t2v_steps} does not fit the last refinement at {steps} steps; using {last}")
        fitted.refine_steps_remaining(steps)
        return fitted, notes

    def _remaining(self, steps: int) -> tuple[int, ...]:
        if self.refine_at and self.refine_at[0] < 1:
            return tuple(steps - round(fraction * steps) for fraction in self.refine_at)
        return tuple(int(value) for value in self.refine_at)

    def non_default_fields(self) -> frozenset[str]:
        """Fields whose value differs from the schema default: what a caller evidently chose."""
        return frozenset(spec.name for spec in dataclasses.fields(self) if getattr(self, spec.name) != spec.default)

    def to_dict(self) -> dict:
        return {spec.name: _jsonable(getattr(self, spec.name)) for spec in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "ElevatorParams":
        """Missing keys take defaults; unknown keys are an error (a typo must not pass silently)."""
        known = {spec.name for spec in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParamError(unknown[0], values[unknown[0]], f"known fields are {', '.join(sorted(known))}")
        return cls(**values)

    def to_infotext(self) -> str:
        """A compact ``key=value`` string without commas, so it sits in WebUI infotext unquoted."""
        return " ".join(f"{name}={_format_value(value)}" for name, value in self.to_dict().items())

    @classmethod
    def from_infotext(cls, text: str) -> "ElevatorParams":
        values = {}
        for item in text.split():
            name, sep, raw = item.partition("=")
            if not sep:
                raise ParamError("infotext", item, "expected key=value items")
            values[name] = raw.split("/") if name == "refine_at" else raw
        if values.get("refine_at") == [""]:
            values["refine_at"] = ()
        return cls.from_dict(values)


MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range


@dataclass(frozen=True)
class GenerationSettings:
    """The standalone generation's own settings (in the WebUI, the WebUI's widgets hold these)."""

    width: int = _spec(512, "video width in pixels", low=64, high=2048, multiple=8)
    height: int = _spec(512, "video height in pixels", low=64, high=2048, multiple=8)
    steps: int = _spec(30, "T2I sampling steps (DDIM)", low=1, high=1000)
    cfg_scale: float = _spec(7.5, "classifier-free guidance of the T2I", low=1.0, high=30.0)
    seed: int = _spec(0, "random seed: the same seed and settings give the same video", low=0, high=MAX_SEED)

    def __post_init__(self):
        _coerce_and_check(self)


def field_specs(schema=None) -> list[dataclasses.Field]:
    """A schema's fields with their metadata (help, low, high, choices), for UIs and CLIs."""
    return list(dataclasses.fields(schema or ElevatorParams))


def validate_size(width: int, height: int) -> None:
    GenerationSettings(width=width, height=height)


def _coerce_and_check(instance) -> None:
    """Store every field of a frozen schema instance typed, then check each against its range."""
    for spec in dataclasses.fields(instance):
        object.__setattr__(instance, spec.name, _coerce(spec, getattr(instance, spec.name)))
    for spec in dataclasses.fields(instance):
        _check_range(spec, getattr(instance, spec.name))


def _coerce(spec: dataclasses.Field, value):
    """Accept the API's and the infotext's spellings (strings, lists) and store typed values."""
    try:
        if spec.metadata["kind"] == "refine":
            if isinstance(value, str):
                value = [part for part in value.replace("/", ",").split(",") if part.strip()]
            return tuple(_number(part) for part in value)
        if spec.type == "bool":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "on", "off", "1", "0"):
                    raise ValueError(value)
                return lowered in ("true", "on", "1")
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if spec.type == "int":
            number = _number(value)
            if isinstance(number, float) and not number.is_integer():
                raise ValueError(value)
            return int(number)
        if spec.type == "float":
            number = float(_number(value))
            if not math.isfinite(number):
                raise ValueError(value)
            return number
        if spec.type == "str":
            return str(value).strip().lower()
    except (TypeError, ValueError):
        raise ParamError(spec.name, value, f"expected {_describe_type(spec)}") from None
    raise TypeError(f"unhandled field type {spec.type}")


def _number(value):
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return value
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _check_range(spec: dataclasses.Field, value) -> None:
    meta = spec.metadata
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ParamError(spec.name, value, f"one of {', '.join(meta['choices'])}")
    if meta["low"] is None:
        return
    above_low = value > meta["low"] if meta["open_low"] else value >= meta["low"]
    multiple = meta.get("multiple")
    if not (above_low and value <= meta["high"]) or (multiple and value % multiple):
        bracket = "(" if meta["open_low"] else "["
        kind = f"a multiple of {multiple}" if multiple else "a value"
        raise ParamError(spec.name, value, f"{kind} in {bracket}{_format_number(meta['low'])}, {_format_number(meta['high'])}]")


def _check_refine_form(refine_at: tuple) -> None:
    fractions = [value for value in refine_at if 0 < value < 1]
    steps = [value for value in refine_at if value >= 1 and value == int(value)]
    if len(fractions) + len(steps) != len(refine_at) or (fractions and steps):
        raise ParamError(
            "refine_at", refine_at,
            "either whole steps remaining (>= 1, e.g. 26,21,15,9) or fractions in (0, 1) (e.g. 0.13,0.3,0.5,0.7), not mixed",
        )


def _describe_type(spec: dataclasses.Field) -> str:
    if spec.metadata["kind"] == "refine":
        return "a list of numbers such as 26,21,15,9 or 0.13,0.3,0.5,0.7"
    return {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "text"}[spec.type]


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return _format_refine(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _format_number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _format_refine(values, separator: str = "/") -> str:
    return separator.join(f"{v:g}" for v in values)
