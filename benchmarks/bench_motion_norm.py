"""How far apart the two motion-module GroupNorms are: the paper's (diffusers, statistics over all
frames) and the original AnimateDiff's / sd-webui-animatediff's (per frame), on the same input.

Run from the repository root:  python benchmarks/bench_motion_norm.py [--size 32] [--frames 16] [--threads 2]

The modules are a full-size SD1.5 motion adapter (AnimateDiff v2/v3 and AnimateLCM layout: 21 motion
modules at 320/640/1280 channels, 8 heads, positional encodings of 32) with every weight redrawn from one
seeded generator; ``--size`` is the latent side at the first level (64 = 512 px). Inputs: i.i.d. noise
(every frame has the same statistics, the case where the norms nearly agree) and a clip whose frames drift
in brightness and contrast (gain 0.5 → 1.5 and offset −0.5 → 0.5 across the clip, like a fade). Reported
per module: ‖out_per_frame − out_paper‖ / ‖out_paper − x‖ (relative to the motion update the module
adds) and / ‖out_paper‖. This is a benchmark: it reports numbers, it asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from diffusers import MotionAdapter  # noqa: E402

from lib_elevator.motion.groupnorm import PerFrameNorm  # noqa: E402
from lib_elevator.tiny import randomize_weights  # noqa: E402

SEED = 0


def full_size_adapter() -> MotionAdapter:
    adapter = MotionAdapter(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                            motion_num_attention_heads=8, motion_max_seq_length=32, use_motion_mid_block=True)
    return randomize_weights(adapter, SEED).eval()


def levels(adapter: MotionAdapter):
    """(name, module, level) for every motion module; level = how often the latent was halved."""
    for i, block in enumerate(adapter.down_blocks):
        for j, module in enumerate(block.motion_modules):
            yield f"down_blocks.{i}.motion_modules.{j}", module, i
    for j, module in enumerate(adapter.mid_block.motion_modules):
        yield f"mid_block.motion_modules.{j}", module, 3
    for i, block in enumerate(adapter.up_blocks):
        for j, module in enumerate(block.motion_modules):
            yield f"up_blocks.{i}.motion_modules.{j}", module, 3 - i


def clip(kind: str, frames: int, channels: int, side: int, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(frames, channels, side, side, generator=generator)
    if kind == "iid":
        return noise
    gain = torch.linspace(0.5, 1.5, frames).view(frames, 1, 1, 1)
    offset = torch.linspace(-0.5, 0.5, frames).view(frames, 1, 1, 1)
    return noise * gain + offset


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="latent side at the first level (64 = 512 px)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adapter = full_size_adapter()
    generator = torch.Generator().manual_seed(SEED)
    print(f"# motion GroupNorm: paper (pooled over frames) vs per frame; {args.frames} frames, "
          f"latent {args.size}x{args.size}, torch {torch.__version__}\n")
    print("| module | channels | input | vs motion update | vs output |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, module, level in levels(adapter):
        side = args.size >> level
        for kind in ("iid", "drifting"):
            x = clip(kind, args.frames, module.in_channels, side, generator)
            paper = module(x, num_frames=args.frames)
            with PerFrameNorm([module]):
                per_frame = module(x, num_frames=args.frames)
            gap = (per_frame - paper).norm()
            update, output = (gap / (paper - x).norm()).item(), (gap / paper.norm()).item()
            summary.setdefault(kind, []).append((update, output))
            print(f"| {name} | {module.in_channels} | {kind} | {update:.4f} | {output:.4f} |")
    print("\n| input | median vs update | max vs update | median vs output | max vs output |")
    print("|---|---|---|---|---|")
    for kind, rows in summary.items():
        updates, outputs = [r[0] for r in rows], [r[1] for r in rows]
        print(f"| {kind} | {statistics.median(updates):.4f} | {max(updates):.4f} | "
              f"{statistics.median(outputs):.4f} | {max(outputs):.4f} |")


if __name__ == "__main__":
    main()
