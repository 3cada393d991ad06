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


def first_frame_context(hidden_states: torch.Tensor, frames: int) -> torch.Tensor:
    """[G·F, N, C] → the first frame of each group repeated over its F frames."""
    batch = hidden_states.shape[0]
    if batch % frames:
        raise ValueError(f"cross-frame attention: batch {batch} is not a whole number of {frames}-frame groups")
    grouped = hidden_states.unflatten(0, (batch // frames, frames))
    return grouped[:, :1].expand_as(grouped).reshape(hidden_states.shape)


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
            encoder_hidden_states = first_frame_context(hidden_states, self.inflation.frames)
        return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                          attention_mask=attention_mask, temb=temb, **kwargs)


class Inflation(Patch):
    """Installs first-frame attention on a diffusers or ldm UNet; ``remove()`` restores it exactly.

    ``active`` switches it off without uninstalling, for a UNet shared with a T2V pass.
    """

    what = "cross-frame attention"

    def __init__(self, unet: nn.Module, frames: int):
        super().__init__()
        self.unet = unet
        self.frames = frames
        self.active = True

    def _install(self) -> None:
        diffusers_layers = _self_attention_modules(self.unet, lambda m: hasattr(m, "set_processor"))
        if diffusers_layers:
            for _, module in diffusers_layers:
                original = module.processor
                module.set_processor(_FirstFrameProcessor(original, self))
                self._undo.append(lambda module=module, original=original: module.set_processor(original))
            return
        ldm_layers = _self_attention_modules(self.unet, lambda m: hasattr(m, "to_k"))
        if not ldm_layers:
            raise ValueError("no self-attention (attn1) layers found to inflate in this UNet")
        for _, module in ldm_layers:
            self._undo.append(module.register_forward_pre_hook(self._ldm_pre_hook, with_kwargs=True).remove)

    def _ldm_pre_hook(self, module, args, kwargs):
        if not self.active:
            return None
        hidden_states = args[0] if args else kwargs["x"]
        return args, {**kwargs, "context": first_frame_context(hidden_states, self.frames)}

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
