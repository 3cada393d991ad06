"""Motion LoRAs in the WebUI, written in the prompt as ``<lora:NAME:weight>`` like any LoRA or picked in
the panel.

The WebUI's own LoRA network (``extra_network_registry["lora"]``, A1111's and Forge's built-in Lora
extension) would look for the motion LoRA's layers in the UNet, find none, and report it unmatched.
So its ``activate(p, params_list)`` is wrapped once: during a VideoElevator request, the tags naming
a motion-LoRA file in the LoRA folders are taken out of ``params_list`` and kept for the motion
modules; everything else is passed on untouched, and without VideoElevator nothing changes. The
weight is the tag's UNet multiplier, read as the Lora extension reads it. WebUI modules are
imported inside functions only.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..motion import MotionModelError
from ..motion.library import list_motion_models
from ..motion.motion_lora import MotionLora, load_motion_lora
from .outputs import lora_folders
from .request import RequestError

ROUTING_MARK = "videoelevator_routes_motion_loras"


class MotionLoraFiles:
    """Motion LoRAs by file, read once per (path, size, mtime); files that are not motion LoRAs map to None."""

    def __init__(self):
        self._read: dict[tuple, MotionLora | None] = {}

    def get(self, path: Path) -> MotionLora | None:
        stat = os.stat(path)
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._read:
            try:
                self._read[key] = load_motion_lora(path)
            except MotionModelError:
                self._read[key] = None
        return self._read[key]

    def by_stem(self, stem: str) -> MotionLora | None:
        """The motion LoRA a prompt tag names (file name without suffix), or None."""
        path = next((path for name, path in list_motion_models(lora_folders()).items() if Path(name).stem == stem),
                    None)
        return self.get(path) if path is not None else None


FILES = MotionLoraFiles()


def panel_motion_loras(entries) -> tuple:
    """``(MotionLora, weight)`` for the panel's / API's ``motion_loras`` entries (``NAME`` or ``NAME:weight``)."""
    loras = []
    available = list_motion_models(lora_folders())
    for entry in entries:
        name, _, weight = str(entry).partition(":")
        path = available.get(name) or next((p for n, p in available.items() if Path(n).stem == name), None)
        lora = FILES.get(path) if path is not None else None
        if lora is None:
            raise RequestError(f"VideoElevator: motion_loras entry {entry!r} is not a motion-LoRA file in the LoRA "
                               "or motion-model folders")
        try:
            loras.append((lora, float(weight) if weight else 1.0))
        except ValueError:
            raise RequestError(f"VideoElevator: motion_loras entry {entry!r} has a weight that is not a number") from None
    return tuple(loras)


def unet_multiplier(params) -> float:
    """The UNet strength of a ``<lora:name:te:unet>`` tag, as the Lora extension reads it."""
    te = float(params.positional[1]) if len(params.positional) > 1 else 1.0
    te = float(params.named.get("te", te))
    unet = float(params.positional[2]) if len(params.positional) > 2 else te
    return float(params.named.get("unet", unet))


def take_motion_loras(params_list, found: list) -> list:
    """Move the tags that name motion LoRAs into ``found`` (replacing what it held); return the others."""
    found.clear()
    rest = []
    for params in params_list:
        lora = FILES.by_stem(params.positional[0]) if params.positional else None
        if lora is None:
            rest.append(params)
        else:
            found.append((lora, unet_multiplier(params)))
    return rest


def route_prompt_motion_loras() -> None:
    """Wrap the WebUI's LoRA network's ``activate`` (once) so motion-LoRA tags reach the motion modules."""
    from modules import extra_networks

    network = extra_networks.extra_network_registry.get("lora")
    if network is None or getattr(network.activate, ROUTING_MARK, False):
        return
    original = network.activate

    def activate(p, params_list):
        found = getattr(getattr(p, "videoelevator", None), "prompt_loras", None)  # a running VideoElevator job's
        if found is not None:
            params_list = take_motion_loras(params_list, found)
        return original(p, params_list)

    setattr(activate, ROUTING_MARK, True)
    network.activate = activate
