"""The user's motion models on disk: listing by name, safe resolution, and a one-entry cache.

A name from an API request is only ever looked up in the listing, so no path can reach a file
outside the motion-model folders.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .convert import load_motion_adapter
from .detect import MotionModuleInfo
from .errors import MotionModelError

MOTION_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt")


def list_motion_models(folders) -> dict[str, Path]:
    """File name → path for every motion-model file in ``folders`` (first folder wins a name clash)."""
    found: dict[str, Path] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in MOTION_SUFFIXES:
                found.setdefault(path.name, path)
    return found


def resolve_motion_model(name: str, folders) -> Path:
    if not name:
        raise MotionModelError("no motion model selected: pick one (AnimateDiff or AnimateLCM) in the VideoElevator panel")
    available = list_motion_models(folders)
    if name not in available:
        listed = ", ".join(sorted(available)) or "none found"
        raise MotionModelError(f"motion model {name!r} is not in the motion-model folders ({listed})")
    return available[name]


@dataclass
class _Entry:
    key: tuple
    adapter: object
    info: MotionModuleInfo


class MotionModelCache:
    """Keeps the last loaded motion model; reloads when the file's path, size or mtime changes."""

    def __init__(self):
        self._entry: _Entry | None = None

    def get(self, path: Path):
        stat = os.stat(path)
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if self._entry is None or self._entry.key != key:
            self._entry = None
            adapter, info = load_motion_adapter(path)
            self._entry = _Entry(key, adapter, info)
        return self._entry.adapter, self._entry.info
