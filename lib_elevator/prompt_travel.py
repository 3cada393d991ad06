"""Prompt travel: a prompt that changes over the frames, in sd-webui-animatediff's syntax.

    masterpiece, best quality          <- head lines (optional)
    0: a boat at dawn                  <- ``frame: text`` lines, frames 0-based and increasing
    32: a boat at night
    film grain                         <- tail lines (optional)

Frame N's prompt is ``head, text_N, tail``. Between two keys a ≤ f < b each frame's text
conditioning is interpolated, c_a + (f−a)/(b−a)·(c_b − c_a) (or slerp); frames before the first
key take the first key's, frames after the last the last key's. With a closed loop the keys
repeat every F frames, so the last key travels back to the first (DESIGN §6.3). A prompt
without frame keys is not travel at all: the caller encodes it as before.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .params import ParamError

KEYED_LINE = re.compile(r"^\s*(\d+)\s*:(.*)$")


@dataclass(frozen=True)
class TravelKey:
    frame: int
    prompt: str  # head, text, tail joined


def _join(parts) -> str:
    return ", ".join(part for part in (p.strip().strip(",").strip() for p in parts) if part)


def parse_prompt_travel(text: str, frames: int) -> list[TravelKey] | None:
    """The keyed prompts of ``text``, or None when it has no ``frame: text`` line.

    Bad syntax is one ``ParamError`` naming the line: keys that do not increase, a key past the
    last frame, a keyed line without text, a plain line between keyed lines.
    """
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    keyed = [(number, KEYED_LINE.match(line)) for number, line in lines]
    positions = [index for index, (_, match) in enumerate(keyed) if match]
    if not positions:
        return None
    first, last = positions[0], positions[-1]
    keys, previous = [], None
    for index in range(first, last + 1):
        number, match = keyed[index]
        line = lines[index][1].strip()
        where = f"prompt line {number}"
        if match is None:
            raise ParamError(where, line, "between frame keys every line needs one ('frame: text'); "
                                          "put plain lines before the first key (head) or after the last (tail)")
        frame, body = int(match.group(1)), match.group(2).strip()
        if not body:
            raise ParamError(where, line, f"frame {frame} needs a prompt after the colon")
        if frame >= frames:
            raise ParamError(where, line, f"frame keys must be below the clip's {frames} frames (0..{frames - 1})")
        if previous is not None and frame <= previous:
            raise ParamError(where, line, f"frame keys must increase; frame {frame} does not come after {previous}")
        previous = frame
        keys.append((frame, body))
    head = [line for _, line in lines[:first]]
    tail = [line for _, line in lines[last + 1:]]
    return [TravelKey(frame, _join([*head, body, *tail])) for frame, body in keys]


def travel_positions(key_frames: list[int], frames: int, closed_loop: bool) -> list[tuple[int, int, float]]:
    """For every frame: (index of key a, index of key b, t) with the frame at a + t·(b − a)."""
    count = len(key_frames)
    positions = []
    for frame in range(frames):
        later = [i for i, key in enumerate(key_frames) if key > frame]
        a = (later[0] - 1) if later else count - 1
        if a < 0 or not later:  # before the first key or after the last
            if not closed_loop or count == 1:
                index = 0 if a < 0 else count - 1
                positions.append((index, index, 0.0))
                continue
            start, end = key_frames[-1] - (frames if a < 0 else 0), key_frames[0] + (0 if a < 0 else frames)
            positions.append((count - 1, 0, (frame - start) / (end - start)))
            continue
        start, end = key_frames[a], key_frames[a + 1]
        positions.append((a, a + 1, (frame - start) / (end - start)))
    return positions


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of each token vector (last dimension); linear where a and b are parallel."""
    a_unit, b_unit = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((a_unit * b_unit).sum(-1, keepdim=True).clamp(-1, 1))
    sine = torch.sin(omega)
    parallel = sine.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sine), sine)
    spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / safe
    return torch.where(parallel, a + t * (b - a), spherical)


def interpolate_conditioning(key_conds: torch.Tensor, key_frames: list[int], frames: int, closed_loop: bool = False,
                             method: str = "linear") -> torch.Tensor:
    """Per-frame conditioning [F, …] from the keys' [K, …]; exactly the key's at each key frame."""
    rows = []
    for a, b, t in travel_positions(key_frames, frames, closed_loop):
        start, end = key_conds[a], key_conds[b]
        if t == 0:
            rows.append(start)
        elif method == "slerp":
            rows.append(slerp(start, end, t))
        else:
            rows.append(start + t * (end - start))
    return torch.stack(rows)
