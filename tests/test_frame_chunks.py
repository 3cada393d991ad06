"""Frame chunks: the inflated T2I over a long clip a few frames at a time gives the one-batch result.

Bit-identity is checked in float64 on the diffusers UNet, where CPU kernels give each batch row
the same rounding whatever the batch size; in float32 oneDNN picks its convolution kernels by
batch size, so there (and on the ldm UNet, which computes in float32 inside) the chunked result is
equal up to float rounding.
"""
import copy
import subprocess
import sys

import pytest
import torch

from lib_elevator.attention import inflated
from lib_elevator.params import ElevatorParams
from lib_elevator.schedules import SD_SCHEDULE
from lib_elevator.standalone.pipeline import (ElevatorPipeline, EpsDenoiser, InjectedMotionT2V, TextEncoder, generate,
                                              unet2d_eps)
from lib_elevator.tiny import UNET2D_CONFIG

FRAMES = 7


def ldm_eps(unet):
    def eps(z, t, contexts, frames):
        return unet(z, timesteps=t.expand(z.shape[0]), context=contexts.context)
    return eps


@pytest.fixture(scope="module", params=["diffusers", "ldm"])
def backend(request, tiny):
    if request.param == "diffusers":
        unet = copy.deepcopy(tiny.unet)
        return unet, unet2d_eps(unet)
    from ldm_helpers import ldm_unet_like

    unet = ldm_unet_like(tiny.unet, UNET2D_CONFIG)
    return unet, ldm_eps(unet)


def calls(unet, eps, dtype, chunk):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(FRAMES, 4, 8, 8, generator=generator, dtype=torch.float64) * 3
    cond = torch.randn(FRAMES, 77, 32, generator=generator, dtype=torch.float64)  # prompt travel: a row per frame
    uncond = torch.randn(1, 77, 32, generator=generator, dtype=torch.float64)
    unet.to(dtype)
    with torch.no_grad(), inflated(unet, FRAMES) as inflation:
        denoiser = EpsDenoiser(eps, SD_SCHEDULE, cond, uncond, 7.5, FRAMES, dtype=dtype, inflation=inflation,
                               frames_per_batch=chunk)
        return [denoiser.guided(x, 3.0)[0], denoiser.conditional(x, 3.0), denoiser.unconditional(x, 3.0)]


def test_chunked_calls_are_bit_identical_to_one_batch_in_float64(tiny):
    unet = copy.deepcopy(tiny.unet)
    eps = unet2d_eps(unet)
    whole = calls(unet, eps, torch.float64, 0)
    for chunk in (1, 3, 4):
        assert all(torch.equal(a, b) for a, b in zip(whole, calls(unet, eps, torch.float64, chunk))), chunk


def test_chunked_calls_equal_one_batch_up_to_rounding_in_float32(backend):
    unet, eps = backend
    whole = calls(unet, eps, torch.float32, 0)
    for a, b in zip(whole, calls(unet, eps, torch.float32, 3)):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_a_whole_generation_in_chunks_is_bit_identical_in_float64(tiny):
    unet, adapter = copy.deepcopy(tiny.unet).double(), copy.deepcopy(tiny.motion_adapter).double()
    pipe = ElevatorPipeline(unet, tiny.vae, TextEncoder(tiny.tokenizer, tiny.text_encoder),
                            InjectedMotionT2V(adapter, solver="lcm"))

    def run(chunk):
        params = ElevatorParams(frames=6, refine_at=(8, 5, 3), t2v_steps=2, frames_per_batch=chunk)
        return generate(pipe, "0: a red fox\n5: a blue bird", "ugly", params=params, width=64, height=64, steps=10,
                        seed=2, decode=False, disable_progress=True)

    whole, chunked = run(0), run(4)
    assert whole.counter.passes == chunked.counter.passes
    assert torch.equal(whole.latents, chunked.latents)


PEAK_SCRIPT = """
import sys, torch


def peak_rss_kib():  # this process's own high-water mark (ru_maxrss would include the parent's, kept over exec)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])


torch.set_num_threads(1)
from lib_elevator.attention import inflated
from lib_elevator.schedules import SD_SCHEDULE
from lib_elevator.standalone.pipeline import EpsDenoiser, unet2d_eps
from lib_elevator.tiny import tiny_unet2d
frames, chunk = int(sys.argv[1]), int(sys.argv[2])
unet = tiny_unet2d()
x = torch.randn(frames, 4, 32, 32)
cond = torch.randn(1, 77, 32)
with torch.no_grad(), inflated(unet, frames) as inflation:
    denoiser = EpsDenoiser(unet2d_eps(unet), SD_SCHEDULE, cond, cond, 7.5, frames, inflation=inflation,
                           frames_per_batch=chunk)
    before = peak_rss_kib()
    denoiser.guided(x, 3.0)
print(peak_rss_kib() - before)
"""


def peak_kib(frames: int, chunk: int) -> int:
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(frames), str(chunk)], capture_output=True,
                            text=True, timeout=600, check=True)
    return int(result.stdout.split()[-1])


def test_peak_memory_of_64_frames_in_chunks_of_8_stays_far_below_one_batch():
    """Growth of the process's peak RSS (a high-water mark, so other agents' memory pressure cannot
    lower it) during one guided T2I call over 64 frames of 32×32 latents. Read from VmHWM: a spawned
    process's ru_maxrss starts at its parent's peak (the test run's, gigabytes late in a suite)."""
    whole, chunked = peak_kib(64, 0), peak_kib(64, 8)
    assert chunked < 0.5 * whole, (chunked, whole)
