"""Low-pass frequency filters along (frames, height, width), FreeInit's four mask shapes.

Coordinates per axis are 2i/n − 1 for i = 0 … n−1 (after ``fftshift`` the zero frequency
sits at index n//2, coordinate 0); the temporal axis is stretched by d_s/d_t so one mask
gives different cut-offs in time and space. Masks are built vectorised in float64, cast to
float32 and cached; filtering always runs in float32 whatever the model dtype.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from .params import FILTERS


def _squared_distance(frames: int, height: int, width: int, d_s: float, d_t: float) -> torch.Tensor:
    def axis(n: int) -> torch.Tensor:
        return 2.0 * torch.arange(n, dtype=torch.float64) / n - 1.0

    t = (d_s / d_t) * axis(frames)
    return t[:, None, None] ** 2 + axis(height)[None, :, None] ** 2 + axis(width)[None, None, :] ** 2


def _box_mask(frames: int, height: int, width: int, d_s: float, d_t: float) -> torch.Tensor:
    """FreeInit's box: a centred block of ±round(⌊n/2⌋·d) entries per axis.

    FreeInit sizes the width from H too; we size each spatial axis from its own length, which
    only differs for non-square latents.
    """
    half_s = round((height // 2) * d_s)
    half_w = round((width // 2) * d_s)
    half_t = round((frames // 2) * d_t)
    mask = torch.zeros(frames, height, width, dtype=torch.float64)
    mask[frames // 2 - half_t:frames // 2 + half_t,
         height // 2 - half_s:height // 2 + half_s,
         width // 2 - half_w:width // 2 + half_w] = 1.0
    return mask


@lru_cache(maxsize=32)
def _cached_mask(shape: tuple[int, int, int], filter: str, d_s: float, d_t: float, order: int,
                 device: torch.device) -> torch.Tensor:
    if filter == "box":
        mask = _box_mask(*shape, d_s, d_t)
    else:
        distance = _squared_distance(*shape, d_s, d_t)
        if filter == "gaussian":
            mask = torch.exp(-distance / (2 * d_s**2))
        elif filter == "butterworth":
            mask = 1.0 / (1.0 + (distance / d_s**2) ** order)
        else:
            # FreeInit's ideal filter compares with 2·d_s (not d_s²); kept for identical results.
            mask = (distance <= 2 * d_s).to(torch.float64)
    return mask.to(torch.float32).to(device)


def low_pass_mask(shape: tuple[int, int, int], filter: str = "gaussian", d_s: float = 1.0, d_t: float = 0.6,
                  order: int = 4, device: torch.device | str = "cpu") -> torch.Tensor:
    """The [frames, height, width] float32 mask, centred (to multiply an ``fftshift``-ed spectrum)."""
    if filter not in FILTERS:
        raise ValueError(f"unknown low-pass filter {filter!r}; use one of {', '.join(FILTERS)}")
    return _cached_mask(tuple(shape), filter, float(d_s), float(d_t), int(order), torch.device(device))


def low_pass_filter(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Filter a [frames, channels, height, width] tensor along (frames, height, width)."""
    dims = (0, 2, 3)
    spectrum = torch.fft.fftshift(torch.fft.fftn(video.float(), dim=dims), dim=dims)
    spectrum = spectrum * mask[:, None].to(spectrum.device)
    filtered = torch.fft.ifftn(torch.fft.ifftshift(spectrum, dim=dims), dim=dims).real
    return filtered.to(video.dtype)
