"""The user's motion models on disk: listing by name, safe resolution, and a one-entry file cache.

A name from an API request is only ever looked up in the listing, so no path can reach a file
outside the motion-model folders.
"""
from __future__ import annotations

import os
from pathlib import Path

from .convert import load_motion_adapter
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


class FileCache:
    """Keeps what ``load(path)`` made of the last file asked for.

    A different path, or the same file with another size or mtime, drops the entry *before* the
    new file is loaded, so two models never sit in memory together; a failed load leaves it empty.
    """

    def __init__(self, load):
        self._load = load
        self._key: tuple | None = None
        self._value = None

    def get(self, path: Path):
        stat = os.stat(path)
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if self._key != key:
            self._key = self._value = None
            self._value = self._load(path)
            self._key = key
        return self._value


class MotionModelCache(FileCache):
    """The last motion model: ``get(path)`` → (``MotionAdapter``, ``MotionModuleInfo``)."""

    def __init__(self):
        super().__init__(load_motion_adapter)
