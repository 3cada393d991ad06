"""What the machine can run: the device, the dtype, and whether a run fits in memory.

Checked before any model is loaded, so a run that cannot work says so in a second instead of
after minutes (or after the machine starts swapping).

The memory estimate is deliberately simple: model weights, plus the activations of one UNet call
over the CFG batch of 2× its frames (a T2I frame chunk or a T2V window, else the whole clip) (each level's skip connections and about a dozen feature maps at
the widest level: ResNet intermediates, attention projections, the 8×-wide GEGLU feed-forward),
plus the VAE decoding a few frames at full resolution, plus the sampler's float32 latents (the
inversion path holds up to one latent per step). Attention runs through
``scaled_dot_product_attention`` and is not materialised. It errs on the high side for small runs
(where the allocator and the runtime dominate) and is within a small factor for large ones.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from ..params import ParamError

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
GIB = 2**30
UNET_WORKING_MAPS = 12  # live feature maps at the widest level during one UNet call
VAE_WORKING_MAPS = 4  # live feature maps at the widest VAE decoder level
RUNTIME_BYTES = 1 * GIB  # torch, the interpreter and the allocator's slack
SAMPLER_LATENT_COPIES = 10  # x, x̂0, noise, correction terms… besides the stored inversion path


def resolve_dtype(dtype):
    """A torch dtype from a dtype or its name (``"float16"``); anything else is refused by name."""
    import torch

    if isinstance(dtype, torch.dtype) and str(dtype).removeprefix("torch.") in DTYPE_BYTES:
        return dtype
    if isinstance(dtype, str) and dtype in DTYPE_BYTES:
        return getattr(torch, dtype)
    raise ParamError("dtype", dtype, f"one of {', '.join(DTYPE_BYTES)}")


def resolve_device(name) -> "torch.device":
    """``auto`` → cuda when available, else cpu; a named device must exist on this machine."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    allowed = "auto, cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ParamError("device", name, allowed) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ParamError("device", name, f"this machine has no usable CUDA device (torch {torch.__version__} is "
                                             f"{build}); use cpu, or install the CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ParamError("device", name, f"cuda:0..cuda:{torch.cuda.device_count() - 1} on this machine")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ParamError("device", name, "this machine has no MPS device; use cpu")
    elif device.type != "cpu":
        raise ParamError("device", name, allowed)
    return device


def available_bytes(device) -> int | None:
    """Memory free for this run on ``device`` (None when unknown, e.g. MPS)."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    if device.type == "cpu":
        return _cpu_available_bytes()
    return None


def _cpu_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class ModelShape:
    """The widths the estimate needs, read from configs (no weights loaded)."""

    unet_channels: tuple[int, ...]
    unet_layers_per_block: int
    vae_channels: tuple[int, ...]
    latent_channels: int = 4
    vae_chunk: int = 4


@dataclass(frozen=True)
class RunSize:
    frames: int
    width: int
    height: int
    steps: int
    batch_frames: int  # frames in the largest UNet call (a T2I chunk or a T2V window)


def estimate_peak_bytes(shape: ModelShape, size: RunSize, dtype_bytes: int, weights_bytes: int) -> int:
    """Peak memory of one run (see the module docstring for what is counted)."""
    vae_scale = 2 ** (len(shape.vae_channels) - 1)
    h, w = size.height // vae_scale, size.width // vae_scale
    batch = 2 * min(size.batch_frames, size.frames)
    skips = sum(channels * (h >> level) * (w >> level) for level, channels in enumerate(shape.unet_channels))
    unet = batch * ((shape.unet_layers_per_block + 1) * skips + UNET_WORKING_MAPS * shape.unet_channels[0] * h * w)
    decoder = max(channels * (size.height >> level) * (size.width >> level)
                  for level, channels in enumerate(shape.vae_channels))
    vae = min(shape.vae_chunk, size.frames) * VAE_WORKING_MAPS * decoder
    latents = (size.steps + SAMPLER_LATENT_COPIES) * size.frames * shape.latent_channels * h * w * 4
    return weights_bytes + (unet + vae) * dtype_bytes + latents + RUNTIME_BYTES


class MemoryBudgetError(ValueError):
    """The run's estimated peak memory exceeds what the device has free."""


def check_memory(shape: ModelShape, size: RunSize, dtype_bytes: int, weights_bytes: int, available: int | None,
                 where: str) -> None:
    """Refuse a run whose estimated peak exceeds ``available``, naming a setting that would fit."""
    if available is None:
        return
    need = estimate_peak_bytes(shape, size, dtype_bytes, weights_bytes)
    if need <= available:
        return

    def fits(candidate: RunSize) -> bool:
        return estimate_peak_bytes(shape, candidate, dtype_bytes, weights_bytes) <= available

    suggestions = []
    frames = next((f for f in range(size.frames - 1, 1, -1) if fits(dataclasses.replace(size, frames=f))), None)
    if frames:
        suggestions.append(f"{frames} frames at {size.width}x{size.height}")
    longest = max(size.width, size.height)
    for side in range(longest - 8, 63, -8):
        width, height = (max(64, round(value * side / longest / 8) * 8) for value in (size.width, size.height))
        if fits(dataclasses.replace(size, width=width, height=height)):
            suggestions.append(f"{size.frames} frames at {width}x{height}")
            break
    fit = (" or ".join(suggestions) + " would fit") if suggestions else "no smaller setting fits; free memory first"
    raise MemoryBudgetError(
        f"not enough memory: {size.frames} frames at {size.width}x{size.height} need an estimated {need / GIB:.1f} GiB "
        f"but {where} has {available / GIB:.1f} GiB free; {fit} (--skip-memory-check, or check_memory=False in "
        "Python, runs anyway)")
