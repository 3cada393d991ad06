"""Stand-in for the text side of A1111 ``modules/infotext_utils.py`` (written for this project, not
copied; no Gradio paste machinery).

Behaviour reproduced: ``quote`` JSON-quotes a value that contains ``,``, ``:`` or a newline;
``parse_generation_parameters`` reads an infotext back into a dict — the prompt lines, the lines after
``Negative prompt:``, and the last line's ``Key: value`` pairs (JSON-quoted values decoded, ``WxH``
values split into ``Key-1``/``Key-2``); a last line holding fewer than three pairs counts as prompt text.
In the WebUI the paste button then runs ``script_callbacks.infotext_pasted_callback(infotext, params)``;
``paste(infotext)`` does both steps.
Simplified: no styles extraction; only "Clip skip", "Schedule type" and "RNG" get defaults.
"""
from __future__ import annotations

import json
import re

from modules import script_callbacks

# one "Key: value" pair of the parameter line; the value is a JSON string or runs to the next comma
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"(\d+)x(\d+)")
_DEFAULTS = {"Clip skip": "1", "Schedule type": "Automatic", "RNG": "GPU"}


def quote(text):
    if any(ch in str(text) for ch in ",:\n"):
        return json.dumps(text, ensure_ascii=False)
    return text


def _decode(value):
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _join(lines):
    """Newline-join, ignoring empty lines before the first text (as the WebUI's accumulation does)."""
    while lines and not lines[0]:
        lines = lines[1:]
    return "\n".join(lines)


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None):
    lines = x.strip().split("\n")
    parameter_line = lines.pop()
    if len(_PAIR.findall(parameter_line)) < 3:
        lines.append(parameter_line)
        parameter_line = ""

    prompt_lines, negative_lines = [], []
    target = prompt_lines
    for line in (raw.strip() for raw in lines):
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line.removeprefix("Negative prompt:").strip()
        target.append(line)

    params = {}
    for key, value in _PAIR.findall(parameter_line):
        value = _decode(value)
        size = _SIZE.fullmatch(value)
        if size:
            params[f"{key}-1"], params[f"{key}-2"] = size.groups()
        else:
            params[key] = value
    params["Prompt"] = _join(prompt_lines)
    params["Negative prompt"] = _join(negative_lines)
    for key, value in _DEFAULTS.items():
        params.setdefault(key, value)
    for key in skip_fields or ():
        params.pop(key, None)
    return params


def paste(infotext: str):
    """What the UI's paste button does: parse, then let extensions adjust (``on_infotext_pasted``)."""
    params = parse_generation_parameters(infotext)
    script_callbacks.infotext_pasted_callback(infotext, params)
    return params
