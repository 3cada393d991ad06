import math

import pytest
import torch

from lib_elevator.lpff import low_pass_filter, low_pass_mask

SHAPE = (8, 6, 10)  # frames, height, width (non-square on purpose)


def coordinates(t, h, w, shape):
    frames, height, width = shape
    return 2 * t / frames - 1, 2 * h / height - 1, 2 * w / width - 1


def per_voxel_mask(shape, filter, d_s, d_t, order):
    """FreeInit's definitions, evaluated one voxel at a time."""
    frames, height, width = shape
    mask = torch.zeros(shape, dtype=torch.float64)
    half_t, half_h, half_w = round(frames // 2 * d_t), round(height // 2 * d_s), round(width // 2 * d_s)
    for t in range(frames):
        for h in range(height):
            for w in range(width):
                tt, hh, ww = coordinates(t, h, w, shape)
                d2 = (d_s / d_t * tt) ** 2 + hh**2 + ww**2
                if filter == "gaussian":
                    value = math.exp(-d2 / (2 * d_s**2))
                elif filter == "butterworth":
                    value = 1 / (1 + (d2 / d_s**2) ** order)
                elif filter == "ideal":
                    value = 1.0 if d2 <= d_s * 2 else 0.0
                else:
                    inside = (frames // 2 - half_t <= t < frames // 2 + half_t
                              and height // 2 - half_h <= h < height // 2 + half_h
                              and width // 2 - half_w <= w < width // 2 + half_w)
                    value = 1.0 if inside else 0.0
                mask[t, h, w] = value
    return mask.float()


@pytest.mark.parametrize("filter", ["gaussian", "butterworth", "ideal", "box"])
@pytest.mark.parametrize("d_s,d_t", [(1.0, 0.6), (0.5, 0.25)])
def test_vectorised_masks_equal_per_voxel_definition(filter, d_s, d_t):
    mask = low_pass_mask(SHAPE, filter, d_s, d_t, order=4)
    assert mask.dtype == torch.float32 and mask.shape == SHAPE
    assert torch.equal(mask, per_voxel_mask(SHAPE, filter, d_s, d_t, 4))


def test_all_ones_mask_is_identity():
    video = torch.randn(8, 4, 6, 10)
    assert torch.allclose(low_pass_filter(video, torch.ones(SHAPE)), video, atol=1e-5)


def test_temporally_constant_video_passes_a_temporal_filter_unchanged():
    full = low_pass_mask(SHAPE, "gaussian", 1.0, 0.3)
    temporal_only = full[:, SHAPE[1] // 2, SHAPE[2] // 2][:, None, None].expand(SHAPE)
    assert temporal_only[SHAPE[0] // 2, 0, 0] == 1.0  # the zero frequency sits at index F//2
    still = torch.randn(1, 4, 6, 10).expand(8, 4, 6, 10)
    assert torch.allclose(low_pass_filter(still, temporal_only), still, atol=1e-5)


@pytest.mark.parametrize("filter,d_t,flicker_left,slow_kept", [
    ("ideal", 0.25, 1e-10, 0.999),
    ("box", 0.5, 1e-10, 0.999),
    ("gaussian", 0.25, 1e-6, 0.3),  # exp(-(4·0.25)²/2)² of the slow wave's energy stays
])
def test_energy_above_temporal_cutoff_is_removed(filter, d_t, flicker_left, slow_kept):
    frames = torch.arange(8, dtype=torch.float32)
    spatial = torch.ones(1, 4, 6, 10)
    slow = torch.cos(2 * math.pi * frames / 8)[:, None, None, None] * spatial  # lowest temporal frequency
    flicker = ((-1.0) ** frames)[:, None, None, None] * spatial  # the highest (Nyquist) one
    mask = low_pass_mask(SHAPE, filter, 1.0, d_t)
    assert low_pass_filter(flicker, mask).pow(2).sum() <= flicker_left * flicker.pow(2).sum()
    assert low_pass_filter(slow, mask).pow(2).sum() >= slow_kept * slow.pow(2).sum()


def test_filter_runs_in_float32_and_returns_input_dtype():
    video = torch.randn(8, 4, 6, 10).to(torch.bfloat16)
    mask = low_pass_mask(SHAPE)
    out = low_pass_filter(video, mask)
    assert out.dtype == torch.bfloat16
    expected = low_pass_filter(video.float(), mask)
    assert torch.equal(out, expected.to(torch.bfloat16))


def test_masks_are_cached_per_shape_and_settings():
    assert low_pass_mask(SHAPE) is low_pass_mask(SHAPE)
    assert low_pass_mask(SHAPE) is not low_pass_mask(SHAPE, d_t=0.5)


def test_unknown_filter_is_rejected():
    with pytest.raises(ValueError, match="gaussian, butterworth, ideal, box"):
        low_pass_mask(SHAPE, "sinc")
