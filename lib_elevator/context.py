"""Context windows: a T2V whose motion modules know only L frames, run over a clip of any length.

Only the T2V is length-limited (the motion module's positional encoding). A windowed T2V call
runs the guided T2V denoiser on overlapping windows of at most L frames, each with its own
frames' conditioning, and fuses every frame's x̂0 as a weighted mean over the windows that
contain it (DESIGN §6.2). The layout is a pure function of (frames, L, overlap, stride, loop), so
it can be tested and reasoned about on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .params import FUSE_METHODS, ElevatorParams, ParamError

DEFAULT_CONTEXT_LENGTH = 16  # what AnimateDiff's motion modules were trained on


def _spans(count: int, length: int, step: int, closed_loop: bool) -> list[range]:
    """Windows over positions 0..count-1; with ``closed_loop`` they run past the end (wrapped by the caller)."""
    if count <= length:
        return [range(count)]
    if closed_loop:
        return [range(start, start + length) for start in range(0, count, step)]
    starts = list(range(0, count - length, step)) + [count - length]
    return [range(start, start + length) for start in starts]


def context_windows(frames: int, length: int, overlap: int, stride: int = 1, closed_loop: bool = False) -> list[list[int]]:
    """Frame indices of each window: at most ``length`` frames, consecutive windows sharing ``overlap``.

    ``stride`` s adds dilated levels as sd-webui-animatediff does: level k (k < s) takes every
    2^k-th frame, so distant frames meet in one window; a level is used only while its dilated
    sequences still fill a window. Without ``closed_loop`` the last window is pulled back to end
    at the last frame; with it, windows keep their length and wrap to the first frames, so the
    end of the clip leads into its start. A clip of at most ``length`` frames is one window.
    """
    if length < 2:
        raise ValueError(f"context windows: length {length} is too short; at least 2 frames")
    if not 0 <= overlap < length:
        raise ValueError(f"context windows: overlap {overlap} must lie in 0..{length - 1} (below the length {length})")
    if stride < 1:
        raise ValueError(f"context windows: stride {stride} must be at least 1")
    if frames <= length:
        return [list(range(frames))]
    windows = []
    for level in range(stride):
        dilation = 2**level
        if level and frames // dilation < length:
            break
        for offset in range(dilation):
            sequence = list(range(offset, frames, dilation))
            for span in _spans(len(sequence), length, length - overlap, closed_loop):
                windows.append([sequence[position % len(sequence)] for position in span])
    return windows


def window_weights(size: int, method: str) -> torch.Tensor:
    """Per-position fusing weights: all ones (flat), or min(i+1, size−i) favouring the centre (pyramid)."""
    if method == "flat":
        return torch.ones(size)
    if method == "pyramid":
        return torch.tensor([float(min(i + 1, size - i)) for i in range(size)])
    raise ValueError(f"context windows: unknown fuse method {method!r}; one of {', '.join(FUSE_METHODS)}")


def fuse_windows(frames: int, windows: list[list[int]], outputs: list[torch.Tensor], method: str) -> torch.Tensor:
    """Each frame's weighted mean over the windows that contain it."""
    total = torch.zeros((frames, *outputs[0].shape[1:]), dtype=outputs[0].dtype, device=outputs[0].device)
    weight_sum = torch.zeros(frames, dtype=outputs[0].dtype, device=outputs[0].device)
    for indices, output in zip(windows, outputs):
        index = torch.tensor(indices, device=output.device)
        weights = window_weights(len(indices), method).to(output.device, output.dtype)
        total.index_add_(0, index, output * weights.view(-1, *[1] * (output.ndim - 1)))
        weight_sum.index_add_(0, index, weights)
    return total / weight_sum.view(-1, *[1] * (total.ndim - 1))


@dataclass(frozen=True)
class ContextPlan:
    """The resolved window settings for one clip: ``length`` L and the layout."""

    length: int
    overlap: int
    stride: int
    closed_loop: bool
    fuse: str

    def windows(self, frames: int) -> list[list[int]]:
        return context_windows(frames, self.length, self.overlap, self.stride, self.closed_loop)


def resolve_context(params: ElevatorParams, limit: int | None) -> ContextPlan | None:
    """The windows ``params.frames`` need with a motion module covering ``limit`` frames (None: no limit).

    ``context_length`` 0 means automatic: windows only when the clip is longer than ``limit``,
    then 16 frames (capped by ``limit``). A length given by hand (capped by ``limit``) windows
    any longer clip. ``context_overlap`` −1 is a quarter of the window. None means one call over
    the whole clip, exactly as without this feature; a clip too long with windows off is refused.
    """
    frames = params.frames
    cap = limit if limit is not None else max(frames, params.context_length, DEFAULT_CONTEXT_LENGTH)
    if not params.context:
        if frames > cap:
            raise ParamError("frames", frames, f"at most {cap} with context windows off (the motion module's "
                                               f"positional encoding); turn context windows on for longer clips")
        return None
    if params.context_length:
        window = min(params.context_length, cap)
    elif frames > cap:
        window = min(DEFAULT_CONTEXT_LENGTH, cap)
    else:
        return None
    if frames <= window:
        return None
    overlap = window // 4 if params.context_overlap < 0 else min(params.context_overlap, window - 1)
    return ContextPlan(window, overlap, params.context_stride, params.closed_loop, params.context_fuse)


@dataclass
class WindowedDenoiser:
    """A T2V denoiser whose guided calls run window by window and fuse x̂0 per frame.

    The inner denoiser provides ``window(indices)``: itself restricted to those frames (their
    conditioning, that clip length). Everything else (schedule, solver, step) is the inner one's.
    """

    inner: object
    windows: list
    fuse: str

    @property
    def schedule(self):
        return self.inner.schedule

    @property
    def solver(self):
        return self.inner.solver

    def begin_step(self, k: int) -> None:
        getattr(self.inner, "begin_step", lambda step: None)(k)

    @property
    def clip_passes(self) -> float:
        """UNet work of one call in whole-clip passes: the frames of all windows over the clip's."""
        frames = len(set().union(*self.windows))
        return sum(len(window) for window in self.windows) / frames

    def guided(self, x, sigma, **extra):
        outputs = [self.inner.window(indices).guided(x[indices], sigma, **extra)[0] for indices in self.windows]
        return fuse_windows(x.shape[0], self.windows, outputs, self.fuse), None


def windowed(denoiser, plan: ContextPlan | None, frames: int):
    """``denoiser`` itself when the clip runs in one call, else its windowed form."""
    if plan is None:
        return denoiser
    return WindowedDenoiser(denoiser, plan.windows(frames), plan.fuse)
