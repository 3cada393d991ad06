"""Motion LoRAs (AnimateDiff v2's camera-motion LoRAs: zoom, pan, tilt, roll) on the motion modules.

A motion LoRA adapts the q/k/v/out projections of both temporal attentions of every v2 motion
module, ``W += weight · up @ down`` (no alpha). It is never merged: each pair is a forward hook on
the motion module's layer (``lora.GatedLora``), so it acts exactly where the motion modules act —
the T2V passes — and removing the hooks leaves the modules bit-identical. Several add up.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..lora import AlwaysOn, GatedLora, LoraWeights
from ..patches import Patch
from .detect import MotionKind, MotionLoraInfo, MotionModuleInfo, describe_motion_lora
from .errors import MotionModelError
from .safe_load import load_weights_file

FITTING_KINDS = (MotionKind.ANIMATEDIFF_V2, MotionKind.DIFFUSERS)


@dataclass(frozen=True)
class MotionLora:
    """A motion LoRA read from disk: ``layers`` holds its pairs by motion-module layer (diffusers name,
    ``_`` for ``.``, as ``lora.parse_lora`` keys them), whatever the file's layout."""

    name: str
    info: MotionLoraInfo
    layers: dict

    @classmethod
    def from_tensors(cls, name: str, tensors: dict) -> "MotionLora":
        info = describe_motion_lora({key: tuple(t.shape) for key, t in tensors.items()})
        layers = {layer.replace(".", "_"): LoraWeights(down_key, tensors[down_key], tensors[up_key])
                  for layer, (down_key, up_key) in info.pairs.items()}
        return cls(name, info, layers)

    @property
    def block_channels(self) -> tuple[int, ...]:
        """Channels of its down blocks, read from their first module's widths."""
        found = {}
        for layer, width in self.info.widths.items():
            if layer.startswith("down_blocks."):
                found.setdefault(int(layer.split(".")[1]), width)
        return tuple(found[i] for i in sorted(found))


def load_motion_lora(path: str | Path) -> MotionLora:
    """Read a motion-LoRA file safely and identify its layout; refuse anything else by name."""
    path = Path(path)
    try:
        return MotionLora.from_tensors(path.name, load_weights_file(path))
    except MotionModelError as error:
        raise MotionModelError(f"'{path.name}': {error}") from None


def fit_problem(lora: MotionLora, motion_info: MotionModuleInfo, motion_name: str, modules: nn.Module) -> str | None:
    """Why ``lora`` cannot run on this motion module (one sentence naming both), or None."""
    layers = dict(modules.named_modules())
    widths_fit = all(
        getattr(layers.get(layer), "in_features", None) == width == getattr(layers.get(layer), "out_features", None)
        for layer, width in lora.info.widths.items()
    )
    if motion_info.kind in FITTING_KINDS and widths_fit:
        return None
    lora_channels = "/".join(str(c) for c in lora.block_channels)
    module_channels = "/".join(str(c) for c in motion_info.block_out_channels)
    return (f"the motion LoRA '{lora.name}' (AnimateDiff v2, channels {lora_channels}) does not fit the motion "
            f"module '{motion_name}' ({motion_info.kind.label}, channels {module_channels}): motion LoRAs only "
            "fit AnimateDiff v2 motion modules of the same widths")


class MotionLoras(Patch):
    """Several motion LoRAs, each at its weight, hooked onto the motion modules under ``modules``
    (a ``MotionAdapter`` or a ``UNetMotionModel``: the same layer names)."""

    what = "the motion LoRAs"

    def __init__(self, modules: nn.Module, loras: Sequence[tuple[MotionLora, float]]):
        super().__init__()
        self.patches = [GatedLora(modules, None, AlwaysOn(), float(weight), layers=lora.layers) for lora, weight in loras]

    def _install(self) -> None:
        for patch in self.patches:
            self._undo.append(patch.install().remove)

