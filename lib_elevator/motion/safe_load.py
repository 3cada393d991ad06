"""Read a weights file into a flat ``name -> tensor`` dict without ever running code from it.

``.safetensors`` holds only tensors by construction. Pickle-based files (``.ckpt``, ``.pt``,
``.pth``, ``.bin``) go through torch's own restricted unpickler (``weights_only=True``), which
rebuilds tensors, storages, dtypes and plain containers (dict/OrderedDict/list/tuple/set,
str/int/float/bool/None) through its fixed list of torch rebuild functions, and refuses every
other global *before* calling it.

It is called as ``torch.serialization.load``, never through ``torch.load``: hosts replace
``torch.load`` with wrappers of their own (AUTOMATIC1111's ``modules/safe.py`` returns ``None`` for
files written by recent torch, whose archives carry a ``.format_version`` entry, and for refused
files alike, without saying why). torch's unpickler is safe on its own: it never calls a global
outside its fixed list, so nothing is lost by going round those wrappers.
"""
from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import MotionModelError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
DDP_PREFIX = "module."
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a weights file, on the CPU, with wrappers removed (see ``tensors_in_checkpoint``)."""
    path = Path(path)
    if not path.is_file():
        raise MotionModelError(f"Cannot read '{path}': there is no such file.")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        checkpoint = _read_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        checkpoint = _read_pickle(path)
    else:
        supported = ", ".join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)
        raise MotionModelError(f"Cannot read '{path.name}': unknown file type '{suffix}' (supported: {supported}).")
    try:
        return tensors_in_checkpoint(checkpoint)
    except MotionModelError as error:
        raise MotionModelError(f"Cannot read '{path.name}': {error}") from error


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise MotionModelError(_damaged_message(path, error)) from error


def _read_pickle(path: Path) -> object:
    try:
        return torch.serialization.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise MotionModelError(refused_pickle_message(path.name, str(error))) from error
    except Exception as error:  # torch reports damaged archives with assorted exception types
        raise MotionModelError(_damaged_message(path, error)) from error


def refused_pickle_message(file_name: str, torch_message: str) -> str:
    """Explain a file torch's restricted unpickler refused, naming the global it asked for if torch did."""
    refused = _REFUSED_GLOBAL.search(torch_message)
    if refused:
        return (
            f"Refused to load '{file_name}': besides weights it contains Python code or objects "
            f"('{refused.group(1)}') that could run programs on this computer. Nothing from it was run. "
            "Use a .safetensors copy of this model, or download it again from its official page."
        )
    return (
        f"Refused to load '{file_name}': it is not a plain PyTorch weights file (it may be damaged, or not "
        "a model file at all, such as a saved web page). Nothing from it was run."
    )


def _damaged_message(path: Path, error: Exception) -> str:
    detail = str(error).strip().splitlines()
    reason = f" ({detail[0]})" if detail else ""
    return (
        f"Cannot read '{path.name}': the file is damaged or incomplete{reason}. "
        "An interrupted download is the usual cause; download it again."
    )


def tensors_in_checkpoint(checkpoint: object) -> dict[str, torch.Tensor]:
    """The flat ``name -> tensor`` mapping inside a loaded checkpoint.

    Training scripts save ``{'state_dict': ..., 'epoch': ...}`` and DDP prefixes every name with
    ``module.``; some v3 files carried an ``animatediff_config`` entry. Entries that are not tensors
    hold no weights, so they are dropped.
    """
    while isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise MotionModelError(f"it holds a {type(checkpoint).__name__}, not a set of named weights.")
    tensors = {
        name: value
        for name, value in checkpoint.items()
        if isinstance(name, str) and isinstance(value, torch.Tensor)
    }
    if not tensors:
        raise MotionModelError("it holds no weights (no tensors).")
    return strip_shared_prefix(tensors, DDP_PREFIX)


def strip_shared_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop ``prefix`` from every name, but only when every name has it (a DDP-wrapped state dict)."""
    if not all(name.startswith(prefix) for name in tensors):
        return tensors
    return {name[len(prefix):]: value for name, value in tensors.items()}
