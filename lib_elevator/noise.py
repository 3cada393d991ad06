"""The mixed noise prior: every frame shares a common component, which stabilises content."""
from __future__ import annotations

import torch


def mixed_noise(frames: int, latent_shape: tuple[int, int, int], alpha: float,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """z = (α·b + r)/√(1+α²) with b shared by all frames and r per frame; unit variance.

    Draw order (b first, then r, from one generator) is part of reproducibility.
    """
    scale = (1.0 + float(alpha) ** 2) ** -0.5
    shared = torch.randn((1, *latent_shape), generator=generator, device=device, dtype=dtype)
    per_frame = torch.randn((frames, *latent_shape), generator=generator, device=device, dtype=dtype)
    return shared * (alpha * scale) + per_frame * scale
