"""Activation memory of the full-size SDXL UNet with an injected SDXL motion model, measured on the CPU.

Run from the repository root:  python benchmarks/bench_sdxl_memory.py [--dtype bfloat16] [--sizes 16 24] [--frames 2]

The UNet (SDXL base config, 2.57 B parameters) and the AnimateDiff-SDXL beta motion module (full
layout) are built with random weights in half precision (the bytes an fp16 GPU run holds). One
forward per latent size is run with the motion modules on (a T2V pass, the heavier one: the motion
modules add their own activations) and one with first-frame attention (a T2I pass); the process's
peak resident memory above the loaded weights is the activation peak. Activations of a UNet grow
linearly with batch × latent pixels as long as attention is computed in memory-efficient form (as
PyTorch's SDPA does on CUDA); at these small sizes the CPU's attention matrices are negligible, so a
line through the measured points, evaluated at the target batch and latent size, estimates the
activation peak there. This is a benchmark: it reports numbers and asserts nothing.
"""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402

from lib_elevator.attention import inflated  # noqa: E402
from lib_elevator.motion.convert import motion_adapter_for  # noqa: E402
from lib_elevator.motion.detect import MotionKind, MotionModuleInfo  # noqa: E402
from lib_elevator.motion.inject import MotionInjection, T2VSwitch  # noqa: E402

SDXL_BASE_UNET = dict(  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    sample_size=128, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048, attention_head_dim=(5, 10, 20), use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
SDXL_BETA = MotionModuleInfo(
    kind=MotionKind.ANIMATEDIFF_SDXL_BETA, base_model="SDXL", block_out_channels=(320, 640, 1280),
    motion_modules_per_down_block=2, motion_modules_per_up_block=3, has_mid_block=False,
    positional_encoding_length=32, positional_encoding_stored=True, attention_heads=8, unet_cross_attention_dim=2048,
)
TARGETS = {"1024x576": (128, 72), "768x768": (96, 96)}
GIB = 2**30


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def random_model(module: torch.nn.Module, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    module = module.to(dtype).to_empty(device="cpu")  # cast on the meta device: no full-precision copy
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_(0, 0.02, generator=generator)
    return module.eval()


def forward(unet, frames: int, latent: int, dtype) -> float:
    sample = torch.randn(frames, 4, latent, latent, dtype=dtype)
    added = {"text_embeds": torch.randn(frames, 1280, dtype=dtype), "time_ids": torch.randn(frames, 6, dtype=dtype)}
    started = time.perf_counter()
    with torch.no_grad():
        unet(sample, 500, encoder_hidden_states=torch.randn(frames, 77, 2048, dtype=dtype), added_cond_kwargs=added)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 24], help="latent sizes, ascending")
    parser.add_argument("--frames", type=int, default=2, help="frames per measured forward (one clip)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_BASE_UNET)
    unet = random_model(unet, dtype, 0)
    adapter = random_model(motion_adapter_for(SDXL_BETA, device="meta"), dtype, 1)
    weights = sum(t.numel() * t.element_size() for m in (unet, adapter) for t in m.state_dict().values())
    print(f"UNet {sum(p.numel() for p in unet.parameters()) / 1e9:.3f} B params, motion module "
          f"{sum(p.numel() for p in adapter.parameters()) / 1e6:.1f} M; weights {weights / GIB:.2f} GiB in {args.dtype}")
    switch = T2VSwitch(args.frames)
    forward(unet, 1, 8, dtype)  # allocator warm-up outside the measurements
    gc.collect()
    base = peak_rss()
    points = {"t2i": [], "t2v": []}
    with MotionInjection(unet, adapter, switch), inflated(unet, args.frames) as inflation:
        for latent in args.sizes:
            for label in ("t2i", "t2v"):
                before = peak_rss()
                if label == "t2v":
                    with switch.on(), inflation.paused():
                        seconds = forward(unet, args.frames, latent, dtype)
                else:
                    seconds = forward(unet, args.frames, latent, dtype)
                peak = peak_rss() - base  # monotonic: a T2V point is max(T2I, T2V) at that size
                print(f"{label}: {args.frames} frames at latent {latent}x{latent}: peak above weights "
                      f"{peak / GIB:.3f} GiB (rose {(peak_rss() - before) / GIB:.3f}), {seconds:.1f}s")
                points[label].append((args.frames * latent * latent, peak))
    for label, measured in points.items():
        # the slope of the two largest sizes: the steepest measured, so the estimate errs high
        (x0, _), (x1, y1) = measured[-2], measured[-1]
        slope = (y1 - measured[-2][1]) / (x1 - x0)
        print(f"{label}: {slope:.0f} bytes of activations per frame-latent-pixel (latent {args.sizes[-2]} to "
              f"{args.sizes[-1]})")
        for name, (w, h) in TARGETS.items():
            for batch, what in ((32, "CFG batch, 16 frames x 2"), (16, "one branch, 16 frames")):
                activations = y1 + slope * (batch * w * h - x1)
                print(f"  16 frames at {name} (latent {w}x{h}), {what}: activations {activations / GIB:.1f} GiB "
                      f"+ weights {weights / GIB:.2f} GiB = {(activations + weights) / GIB:.1f} GiB")


if __name__ == "__main__":
    main()
