"""AnimateDiff motion modules run inside the user's own UNet, behind an on/off switch.

The motion modules are diffusers ``AnimateDiffTransformer3D`` blocks taken from a
``MotionAdapter``. Each one is attached as a forward hook on the UNet layer that AnimateDiff
places it after: the last ResBlock/attention of every down and up layer (so it runs before that
block's Downsample/Upsample) and the mid block's attention (before its last ResBlock). Hooks leave
the UNet's module tree and state_dict untouched while installed, work whatever the host does to
``forward`` at class level, and fire through ``TimestepEmbedSequential`` (ldm, A1111, Forge) and
diffusers' blocks alike. With the switch off a hook returns nothing, so the UNet's output is
exactly the plain UNet's.

A batch seen with the switch on is G groups of F contiguous frames (G = 1, or 2 for a CFG
batch); F is ``switch.frames``, G is derived and must divide the batch.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..patches import Patch
from .groupnorm import PerFrameNorm, SpatialNormsOverFrames


@dataclass
class T2VSwitch:
    """Whether the shared UNet is running the T2V pass, and the clip length F it sees then.

    Motion modules and the T2V LoRA read ``active``; the sampler flips it around T2V calls.
    """

    frames: int
    active: bool = False

    @contextmanager
    def on(self, frames: int | None = None):
        """The T2V pass for the duration of a block, over clips of ``frames`` (a context window)
        or ``self.frames``; the previous state comes back whatever happens."""
        previous = self.active, self.frames
        self.active, self.frames = True, frames or self.frames
        try:
            yield self
        finally:
            self.active, self.frames = previous

    def groups(self, batch: int) -> int:
        """G for a batch of G·F frames; a batch that is not whole clips is a caller bug, so refuse it."""
        if self.frames < 1 or batch % self.frames:
            raise ValueError(
                f"motion modules: batch {batch} is not a whole number of {self.frames}-frame groups"
            )
        return batch // self.frames


@dataclass(frozen=True)
class Offload:
    """Where a low-VRAM host keeps the motion modules while they are not running.

    ``each_call``: back after every call of a module (A1111 ``--lowvram``, where one UNet block at a
    time is on the GPU); otherwise back when the run ends (``--medvram``). Both also after an error or
    an interrupt: the moves happen in ``finally`` and in ``remove()``.
    """

    device: torch.device
    each_call: bool = False


@dataclass(frozen=True)
class MotionSlot:
    """One motion module and the UNet layer whose output it transforms."""

    motion_name: str
    host_name: str
    host: nn.Module
    module: nn.Module


def _layer_channels(layer: nn.Module) -> int:
    return getattr(layer, "out_channels", None) or layer.in_channels


def _is_resampler(layer: nn.Module, kind: str) -> bool:
    """ldm/Forge ``Downsample``/``Upsample`` by class name, so any host's copy of ldm matches."""
    return type(layer).__name__ == kind


def _ldm_hosts(unet: nn.Module) -> tuple[list[list[str]], list[str], list[list[str]]]:
    """Host layer names per down level, in the middle, per up level, in ldm ``input_blocks`` naming."""
    down_levels: list[list[str]] = [[]]
    for index, block in enumerate(unet.input_blocks):
        if index == 0:
            continue
        if any(_is_resampler(layer, "Downsample") for layer in block):
            down_levels.append([])
        else:
            down_levels[-1].append(f"input_blocks.{index}.{len(block) - 1}")
    middle = [f"middle_block.{index}" for index in range(1, len(unet.middle_block) - 1)]
    up_levels: list[list[str]] = [[]]
    for index, block in enumerate(unet.output_blocks):
        kept = [position for position, layer in enumerate(block) if not _is_resampler(layer, "Upsample")]
        up_levels[-1].append(f"output_blocks.{index}.{kept[-1]}")
        if len(kept) < len(block) and index < len(unet.output_blocks) - 1:
            up_levels.append([])
    return down_levels, middle, up_levels


def _diffusers_hosts(unet: nn.Module) -> tuple[list[list[str]], list[str], list[list[str]]]:
    """Host layer names per down block, in the mid block, per up block, in diffusers naming."""

    def block_hosts(prefix: str, block: nn.Module) -> list[str]:
        layers = "attentions" if len(getattr(block, "attentions", ())) else "resnets"
        return [f"{prefix}.{layers}.{j}" for j in range(len(getattr(block, layers)))]

    down = [block_hosts(f"down_blocks.{i}", block) for i, block in enumerate(unet.down_blocks)]
    mid_attentions = len(getattr(unet.mid_block, "attentions", ()))
    middle = [f"mid_block.attentions.{j}" for j in range(mid_attentions)]
    up = [block_hosts(f"up_blocks.{i}", block) for i, block in enumerate(unet.up_blocks)]
    return down, middle, up


def plan_motion_slots(unet: nn.Module, adapter: nn.Module) -> list[MotionSlot]:
    """Pair every motion module of ``adapter`` with its host layer in ``unet`` (ldm or diffusers)."""
    if hasattr(unet, "input_blocks"):
        down, middle, up = _ldm_hosts(unet)
    elif hasattr(unet, "down_blocks"):
        down, middle, up = _diffusers_hosts(unet)
    else:
        raise TypeError(f"{type(unet).__name__} is neither an ldm nor a diffusers UNet")

    if len(adapter.down_blocks) != len(down) or len(adapter.up_blocks) != len(up):
        raise ValueError(
            f"motion modules do not fit this UNet: {len(adapter.down_blocks)} down / {len(adapter.up_blocks)} up "
            f"blocks in the motion model, {len(down)} / {len(up)} in the UNet"
        )
    groups = [(f"down_blocks.{i}", block, down[i]) for i, block in enumerate(adapter.down_blocks)]
    if adapter.mid_block is not None:
        groups.append(("mid_block", adapter.mid_block, middle))
    groups += [(f"up_blocks.{i}", block, up[i]) for i, block in enumerate(adapter.up_blocks)]

    slots = []
    for prefix, block, host_names in groups:
        if len(block.motion_modules) != len(host_names):
            raise ValueError(
                f"motion modules do not fit this UNet: {prefix} has {len(block.motion_modules)} motion modules, "
                f"the UNet has {len(host_names)} layers there ({', '.join(host_names) or 'none'})"
            )
        for j, (module, host_name) in enumerate(zip(block.motion_modules, host_names)):
            host = unet.get_submodule(host_name)
            if module.in_channels != _layer_channels(host):
                raise ValueError(
                    f"motion modules do not fit this UNet: {prefix}.motion_modules.{j} has {module.in_channels} "
                    f"channels, {host_name} has {_layer_channels(host)} (is this motion model for another base model?)"
                )
            slots.append(MotionSlot(f"{prefix}.motion_modules.{j}", host_name, host, module))
    return slots


def positional_limit(modules) -> int | None:
    """The longest clip the motion modules' positional encodings cover (None when they have none)."""
    lengths = [
        sub.pe.shape[1]
        for module in modules
        for sub in module.modules()
        if isinstance(getattr(sub, "pe", None), torch.Tensor)
    ]
    return min(lengths, default=None)


class MotionInjection(Patch):
    """Motion modules hooked into a UNet; ``remove()`` leaves the UNet exactly as it was.

    The adapter's modules are used in place (one copy in memory) and cast to the dtype/device of
    the layer they follow on install; they follow the activations' device later if the host moves
    the UNet (low-VRAM offloading). ``frame_pooled_spatial_norms`` (Hotshot-XL) also makes the
    UNet's ResNet GroupNorms pool over each clip's frames, behind the same switch;
    ``motion_norm="per_frame"`` makes the motion modules' input GroupNorm per-frame while installed.
    With ``offload`` (a low-VRAM host) the modules wait on ``offload.device`` and are on the
    activations' device only while a run (or, ``each_call``, one call) needs them.
    """

    what = "motion modules"

    def __init__(self, unet: nn.Module, adapter: nn.Module, switch: T2VSwitch, frame_pooled_spatial_norms: bool = False,
                 motion_norm: str = "paper", offload: Offload | None = None):
        super().__init__()
        self.unet = unet
        self.switch = switch
        self.slots = plan_motion_slots(unet, adapter)
        self.max_frames = positional_limit(slot.module for slot in self.slots)
        self.frame_pooled_spatial_norms = frame_pooled_spatial_norms
        self.offload = offload
        self.per_frame_norm = PerFrameNorm(slot.module for slot in self.slots) if motion_norm == "per_frame" else None

    def _install(self) -> None:
        if self.frame_pooled_spatial_norms:
            self._undo.append(SpatialNormsOverFrames(self.unet, self.switch).install().remove)
        if self.per_frame_norm is not None:
            self._undo.append(self.per_frame_norm.install().remove)
        if self.offload is not None:
            self._undo.append(self._send_to_offload_device)
        for slot in self.slots:
            reference = next(slot.host.parameters())
            device = reference.device if self.offload is None else self.offload.device
            slot.module.to(device=device, dtype=reference.dtype)
            self._undo.append(slot.host.register_forward_hook(self._hook(slot.module)).remove)

    def _send_to_offload_device(self) -> None:
        for slot in self.slots:
            slot.module.to(self.offload.device)

    def _hook(self, module: nn.Module):
        offload_after = self.offload.device if self.offload is not None and self.offload.each_call else None

        def apply_motion(layer, args, output):
            if not self.switch.active:
                return None
            if isinstance(output, tuple):
                return (run_motion_module(module, output[0], self.switch, self.max_frames, offload_after),) + output[1:]
            return run_motion_module(module, output, self.switch, self.max_frames, offload_after)

        return apply_motion


def run_motion_module(module: nn.Module, hidden: torch.Tensor, switch: T2VSwitch, max_frames: int | None,
                      offload_after: torch.device | None = None) -> torch.Tensor:
    """One motion module over a batch of whole ``switch.frames``-frame clips, in the module's dtype,
    moved to the activations' device if the host offloaded it (and to ``offload_after`` once done)."""
    frames = switch.frames
    switch.groups(hidden.shape[0])  # refuses a batch that is not whole clips
    if max_frames is not None and frames > max_frames:
        raise ValueError(f"motion modules cover at most {max_frames} frames, got {frames}")
    weight = next(module.parameters())
    if weight.device != hidden.device:
        module.to(hidden.device)
    try:
        return module(hidden.to(weight.dtype), num_frames=frames).to(hidden.dtype)
    finally:
        if offload_after is not None:
            module.to(offload_after)
