"""First-frame cross-frame attention ("inflation") for the T2I UNet.

Every frame's self-attention takes its keys and values from the first frame of its own group,
so frames share appearance. A batch is G groups of F contiguous frames (G = 2 for a CFG batch,
1 for a conditional-only or inversion call); groups never attend to each other. F is given
explicitly; G is derived from the batch and must divide it.

Two installers, both removable and leaving no trace: diffusers ``Attention`` modules get a
wrapping processor; ldm-style attention modules (A1111's ``CrossAttention``, whose forward takes
``context``) get a per-instance forward pre-hook that supplies the context, so class-level
forward replacements by the host keep working.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .patches import Patch


def _grouped(hidden_states: torch.Tensor, frames: int) -> torch.Tensor:
    batch = hidden_states.shape[0]
    if batch % frames:
        raise ValueError(f"cross-frame attention: batch {batch} is not a whole number of {frames}-frame groups")
    return hidden_states.unflatten(0, (batch // frames, frames))


def first_frame_context(hidden_states: torch.Tensor, frames: int, first: torch.Tensor | None = None) -> torch.Tensor:
    """[G·F, N, C] → the first frame of each group repeated over its F frames; ``first`` ([G, 1, N, C])
    stands in for the groups' first frames when they are not in this batch (a later frame chunk)."""
    grouped = _grouped(hidden_states, frames)
    anchor = grouped[:, :1] if first is None else first
    return anchor.expand_as(grouped).reshape(hidden_states.shape)


def _self_attention_modules(unet: nn.Module, attribute_check) -> list[tuple[str, nn.Module]]:
    """Spatial self-attention layers (``attn1``), skipping any injected temporal (motion) modules."""
    return [
        (name, module) for name, module in unet.named_modules()
        if name.endswith("attn1") and "motion_modules" not in name and attribute_check(module)
    ]


class _FirstFrameProcessor:
    """Wraps a diffusers attention processor; not an nn.Module, so the module tree is unchanged."""

    def __init__(self, inner, inflation: "Inflation"):
        self.inner = inner
        self.inflation = inflation

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if self.inflation.active:
            encoder_hidden_states = self.inflation.context(attn, hidden_states)
        return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                          attention_mask=attention_mask, temb=temb, **kwargs)


class FrameAnchors:
    """Where each frame's self-attention takes its keys and values from: the first frame of its group.

    Inside ``anchored()`` one UNet pass over a clip may go through the UNet in frame chunks
    (``frame_chunk``, the first chunk starting at frame 0): the first chunk records the first-frame
    rows of every attention call, later chunks attend to them. A host may split one pass into several
    UNet calls (cond and uncond apart): calls are matched to the first chunk's by ``key`` and their
    order within the chunk, so each keeps its own group's anchor.
    """

    def __init__(self, frames: int):
        self.frames = frames
        self._anchors: dict | None = None  # key → first-frame rows [G, 1, N, C] per call, from the first chunk
        self._calls: dict = {}  # key → calls made in the current chunk
        self._chunks = 0  # chunks done in this pass

    def context(self, key, hidden_states: torch.Tensor) -> torch.Tensor:
        """The attention context of call ``key`` for this batch: its groups' first frames."""
        if self._anchors is None:
            return first_frame_context(hidden_states, self.frames)
        index = self._calls.get(key, 0)
        self._calls[key] = index + 1
        recorded = self._anchors.setdefault(key, [])
        if self._chunks == 0:
            recorded.append(_grouped(hidden_states, self.frames)[:, :1])
        elif index >= len(recorded):
            raise RuntimeError("cross-frame attention: a frame chunk made more attention calls than the first chunk")
        return first_frame_context(hidden_states, self.frames, recorded[index])

    @contextmanager
    def anchored(self):
        """One UNet pass split into frame chunks, the first chunk starting at frame 0."""
        self._anchors, self._calls, self._chunks = {}, {}, 0
        try:
            yield self
        finally:
            self._anchors, self._calls = None, {}

    @contextmanager
    def frame_chunk(self, frames: int):
        """Batches of ``frames``-frame groups (one chunk of every group) for the duration of a block."""
        previous, self.frames, self._calls = self.frames, frames, {}
        try:
            yield self
        finally:
            self.frames = previous
            self._chunks += 1


class Inflation(FrameAnchors, Patch):
    """Installs first-frame attention on a diffusers or ldm UNet; ``remove()`` restores it exactly.

    ``active`` switches it off without uninstalling, for a UNet shared with a T2V pass; the frame
    chunks of ``FrameAnchors`` work through it.
    """

    what = "cross-frame attention"

    def __init__(self, unet: nn.Module, frames: int):
        FrameAnchors.__init__(self, frames)
        Patch.__init__(self)
        self.unet = unet
        self.active = True

    def _install(self) -> None:
        diffusers_layers = _self_attention_modules(self.unet, lambda m: hasattr(m, "set_processor"))
        if diffusers_layers:
            for _, module in diffusers_layers:
                original = module.processor
                module.set_processor(_FirstFrameProcessor(original, self))
                self._undo.append(lambda module=module, original=original: module.set_processor(original))
            self._share_embedding_rows()
            return
        ldm_layers = _self_attention_modules(self.unet, lambda m: hasattr(m, "to_k"))
        if not ldm_layers:
            raise ValueError("no self-attention (attn1) layers found to inflate in this UNet")
        for _, module in ldm_layers:
            self._undo.append(module.register_forward_pre_hook(self._ldm_pre_hook, with_kwargs=True).remove)
        self._share_embedding_rows()

    def _share_embedding_rows(self) -> None:
        """Timestep-embedding linears ([B, C] inputs, every row the same σ) run on one row.

        A matrix product's rounding depends on its row count, so without this a clip split into
        frame chunks would get embeddings a few ulps off the one-batch call's.
        """
        for name, module in self.unet.named_modules():
            if isinstance(module, nn.Linear) and "motion_modules" not in name:
                batch = {}
                self._undo.append(module.register_forward_pre_hook(self._one_row(batch)).remove)
                self._undo.append(module.register_forward_hook(self._all_rows(batch)).remove)

    def _one_row(self, batch: dict):
        def pre_hook(module, args):
            batch.clear()
            x = args[0]
            if not self.active or x.ndim != 2 or x.shape[0] == 1 or not torch.equal(x, x[:1].expand_as(x)):
                return None
            batch["rows"] = x.shape[0]
            return (x[:1], *args[1:])
        return pre_hook

    @staticmethod
    def _all_rows(batch: dict):
        def hook(module, args, output):
            return output.expand(batch["rows"], *output.shape[1:]) if batch else None
        return hook

    def _ldm_pre_hook(self, module, args, kwargs):
        if not self.active:
            return None
        hidden_states = args[0] if args else kwargs["x"]
        return args, {**kwargs, "context": self.context(module, hidden_states)}

    @contextmanager
    def paused(self):
        """Plain self-attention for the duration of a block (a T2V call on the shared UNet)."""
        previous = self.active
        self.active = False
        try:
            yield self
        finally:
            self.active = previous


def inflated(unet: nn.Module, frames: int) -> Inflation:
    """Cross-frame attention for the duration of a ``with`` block, removed whatever happens inside."""
    return Inflation(unet, frames)
