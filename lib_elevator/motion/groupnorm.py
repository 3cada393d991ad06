"""GroupNorm statistics per frame or pooled over a clip's frames, as each motion model was trained.

diffusers' ``AnimateDiffTransformer3D`` normalises its input as one ``b c f h w`` tensor, so its
statistics pool over all frames (right for AnimateDiff-SDXL, whose original module does the same).
Hotshot-XL was trained the other way round: its temporal layers normalise each frame alone
(``PerFrameGroupNorm`` replaces their norm), while every spatial ResNet GroupNorm and the UNet's
output norm saw whole ``b c f h w`` clips. ``SpatialNormsOverFrames`` reproduces the latter in the
user's 2D UNet during T2V passes only, with per-instance hooks that regroup ``(b f) c h w`` to
``b c f h w`` around each norm (GroupNorm accepts any trailing dimensions, so nothing is computed
twice), and leaves the T2I passes per frame.

For the SD1.5 motion modules the two disagree: the original AnimateDiff/AnimateLCM module, which the
files were trained with, and sd-webui-animatediff normalise per frame, diffusers (and so the paper's
code) pools. ``PerFrameNorm`` gives them the per-frame form for one run (``motion_norm="per_frame"``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..params import ParamError
from ..patches import Patch


class PerFrameGroupNorm(nn.GroupNorm):
    """A GroupNorm that, given ``b c f h w``, normalises every frame separately (Hotshot-XL's temporal norm)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.ndim != 5:
            return super().forward(hidden_states)
        frames = hidden_states.shape[2]
        per_frame = hidden_states.transpose(1, 2).flatten(0, 1)
        return super().forward(per_frame).unflatten(0, (-1, frames)).transpose(1, 2)


def per_frame_norms(module: nn.Module) -> None:
    """Swap the ``norm`` of every temporal transformer in ``module`` for a ``PerFrameGroupNorm`` (same weights)."""
    for owner in list(module.modules()):
        norm = getattr(owner, "norm", None)
        if type(norm) is nn.GroupNorm and hasattr(owner, "proj_in"):
            replacement = PerFrameGroupNorm(norm.num_groups, norm.num_channels, norm.eps, norm.affine,
                                            device=norm.weight.device, dtype=norm.weight.dtype)
            replacement.load_state_dict(norm.state_dict(), assign=norm.weight.is_meta)
            owner.norm = replacement


def motion_transformers(modules) -> list[nn.Module]:
    """Every AnimateDiff motion transformer in ``modules`` (by class name: UNet3D's temporal
    transformers are another model, trained with the pooled norm)."""
    return [sub for module in modules for sub in module.modules() if type(sub).__name__ == "AnimateDiffTransformer3D"]


class PerFrameNorm(Patch):
    """The motion transformers' input GroupNorm made per-frame while installed: a ``PerFrameGroupNorm``
    holding the same Parameter objects (so a host moving the adapter moves both), the original put back
    by ``remove()``. Norms that already are per-frame (Hotshot-XL's) are left alone."""

    what = "per-frame motion GroupNorm"

    def __init__(self, modules):
        super().__init__()
        self.transformers = motion_transformers(modules)
        if not self.transformers:
            raise ParamError("motion_norm", "per_frame", "paper for this T2V: per_frame is the AnimateDiff/AnimateLCM "
                                                         "motion modules' norm, and it has none")

    def _install(self) -> None:
        for transformer in self.transformers:
            norm = transformer.norm
            if isinstance(norm, PerFrameGroupNorm):
                continue
            per_frame = PerFrameGroupNorm(norm.num_groups, norm.num_channels, norm.eps, norm.affine, device="meta")
            per_frame.weight, per_frame.bias = norm.weight, norm.bias
            transformer.norm = per_frame
            self._undo.append(lambda transformer=transformer, norm=norm: setattr(transformer, "norm", norm))


def spatial_resnet_norms(unet: nn.Module) -> list[nn.Module]:
    """The GroupNorms Hotshot-XL ran on whole clips: both norms of every ResNet block and the output norm.

    diffusers names them ``resnets.*.norm1/norm2`` and ``conv_norm_out``; ldm/sgm (A1111, Forge)
    ``ResBlock.in_layers.0/out_layers.0`` and ``out.0``. Transformer (attention) norms stay per frame.
    """
    norms = []
    for module in unet.modules():
        name = type(module).__name__
        if name == "ResnetBlock2D":
            norms += [module.norm1, module.norm2]
        elif name == "ResBlock" and hasattr(module, "in_layers"):
            norms += [module.in_layers[0], module.out_layers[0]]
    final = getattr(unet, "conv_norm_out", None)
    if final is None and hasattr(unet, "out"):
        final = unet.out[0]
    if isinstance(final, nn.GroupNorm):
        norms.append(final)
    return norms


class SpatialNormsOverFrames(Patch):
    """While ``switch.active``: every spatial ResNet GroupNorm pools its statistics over each clip's frames."""

    what = "frame-pooled GroupNorms"

    def __init__(self, unet: nn.Module, switch):
        super().__init__()
        self.unet = unet
        self.switch = switch

    def _install(self) -> None:
        norms = spatial_resnet_norms(self.unet)
        if not norms:
            raise ValueError(f"no ResNet GroupNorms found in {type(self.unet).__name__}")
        for norm in norms:
            self._undo.append(norm.register_forward_pre_hook(self._to_clips).remove)
            self._undo.append(norm.register_forward_hook(self._to_frames).remove)

    def _to_clips(self, norm, args):
        if not self.switch.active:
            return None
        hidden_states = args[0]
        groups = self.switch.groups(hidden_states.shape[0])
        return (hidden_states.unflatten(0, (groups, self.switch.frames)).transpose(1, 2),) + args[1:]

    def _to_frames(self, norm, args, output):
        if not self.switch.active:
            return None
        return output.transpose(1, 2).flatten(0, 1)
