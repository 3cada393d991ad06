"""VideoElevator cost benchmark on the embedded tiny models: UNet passes, wall time, T2V memory.

Run from the repository root:  python benchmarks/bench_elevator.py [--frames F] [--size 64] [--repeat 1] [--threads 1]
[--long-videos-only]

Passes are the hardware-independent cost (DESIGN §3.4), so they are counted three ways: the
sampler's own counter, real UNet forward calls seen by forward pre-hooks, and the paper's
released loop structure (DESIGN §3.2) computed from (N, R, m). Seconds on tiny random models
show overheads, not real-model speed. This is a benchmark: it reports numbers, it asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffusers  # noqa: E402
import diffusers.utils.logging  # noqa: E402
import torch  # noqa: E402
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel  # noqa: E402

from lib_elevator.attention import inflated  # noqa: E402
from lib_elevator.standalone.pipeline import (  # noqa: E402
    ElevatorPipeline, InjectedMotionT2V, TextEncoder, generate, t2v_from_motion_unet, t2v_from_unet3d,
)
from lib_elevator.params import ElevatorParams  # noqa: E402
from lib_elevator.standalone.conditioning import TextConditioning  # noqa: E402
from lib_elevator.sampler import STAGES  # noqa: E402
from lib_elevator.tiny import TinyModels, tiny_models, tiny_text_encoder  # noqa: E402

PROMPT, NEGATIVE = "a corgi running on a beach", "blurry, static"
T2I_CFG = 7.5
SEED = 0
SD15_CROSS_ATTENTION_DIM = 768  # diffusers' UNet2DConditionModel default (1280) is not SD1.5's
DESIGN_ANIMATELCM_PAPER_TOTAL = 223  # DESIGN §3.4
T2V_PASS_RUNS = 7
GB = 1e9


@dataclass(frozen=True)
class Recipe:
    """One of the paper's recipes (DESIGN §3.2) and how to build its T2V on the tiny models."""

    name: str
    steps: int
    refine_at: tuple
    t2v_steps: int
    frames: int
    t2v_cfg_scale: float
    d_t: float
    noise_alpha: float
    t2v_label: str
    make_t2v: Callable[[TinyModels], object]

    def params(self, frames: int) -> ElevatorParams:
        return ElevatorParams(frames=frames, refine_at=self.refine_at, t2v_steps=self.t2v_steps,
                              t2v_cfg_scale=self.t2v_cfg_scale, d_t=self.d_t, noise_alpha=self.noise_alpha)


def zeroscope_t2v(models: TinyModels):
    """ZeroScope has its own CLIP: a second, differently seeded tiny text encoder."""
    return t2v_from_unet3d(models.unet3d, TextEncoder(models.tokenizer, tiny_text_encoder(models.tokenizer, seed=6)))


RECIPES = (
    Recipe("AnimateLCM", 30, (26, 21, 15, 9), 6, 16, 2.0, 0.6, 0.5, "LCM, motion modules injected in the T2I UNet",
           lambda models: InjectedMotionT2V(models.motion_adapter, solver="lcm")),
    Recipe("ZeroScope", 50, (45, 35, 25, 15), 8, 24, 7.5, 0.4, 1.5, "DDIM, UNet3D with its own CLIP", zeroscope_t2v),
)


# --- 1. passes ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperCost:
    """F-frame passes of the released pipeline, and what its correction calls are made of."""

    passes: dict
    correction_calls: int
    dead_corrections: int  # at refinement steps: the inversion overwrites z and L right after
    repeated_corrections: int  # first after an inversion: equal to that step's main CFG call


def paper_cost(steps: int, remaining: tuple, t2v_steps: int) -> PaperCost:
    """Walk the released loop (DESIGN §3.2): T2I CFG every step, a CFG correction while len(L) > 1,
    m CFG T2V steps and an N−k−1-step unguided inversion at every refinement."""
    passes = dict.fromkeys(STAGES, 0)
    path_length = 0
    calls = dead = repeated = 0
    refined_last_step = False
    for k in range(steps):
        refining = steps - k in remaining
        passes["t2i"] += 2
        if path_length > 1:
            path_length -= 1
            passes["correction"] += 2
            calls += 1
            dead += refining
            repeated += refined_last_step and not refining
        if refining:
            passes["t2v"] += 2 * t2v_steps
            path_length = steps - k - 1
            passes["inversion"] += path_length
        refined_last_step = refining
    return PaperCost(passes, calls, dead, repeated)


class PassHooks:
    """Counts F-frame passes per stage from real forward calls (batch items / F).

    T2I-UNet calls are told apart by their input: a 2F batch is a CFG call, an F batch with the
    prompt is a correction, with the negative prompt an inversion step. A T2V call is one that
    runs a motion module (injected) or goes through the separate T2V UNet ([G, C, F, h, w]).
    """

    def __init__(self, unet, t2v_unet, motion_module, frames: int, cond: torch.Tensor, uncond: torch.Tensor):
        self.frames, self.cond, self.uncond = frames, cond[0], uncond[0]
        self.calls: list[list] = []  # [stage, passes] per T2I-UNet call
        self.t2v_passes = 0
        self.handles = [unet.register_forward_pre_hook(self._t2i_call, with_kwargs=True)]
        if motion_module is not None:
            self.handles.append(motion_module.register_forward_pre_hook(self._motion_call))
        if t2v_unet is not None:
            self.handles.append(t2v_unet.register_forward_pre_hook(self._t2v_call, with_kwargs=True))

    def _t2i_call(self, module, args, kwargs):
        batch = args[0].shape[0]
        context = kwargs["encoder_hidden_states"][0]
        if batch == 2 * self.frames:
            stage = "t2i"
        elif batch == self.frames and torch.equal(context, self.cond):
            stage = "correction"
        elif batch == self.frames and torch.equal(context, self.uncond):
            stage = "inversion"
        else:
            stage = "unclassified"
        self.calls.append([stage, batch // self.frames])

    def _motion_call(self, module, args):
        """Fires inside the T2I-UNet call being made, once per call for the first motion module."""
        self.calls[-1][0] = "t2v"

    def _t2v_call(self, module, args, kwargs):
        video = args[0]  # [G, C, F, h, w]
        self.t2v_passes += video.shape[0] * video.shape[2] // self.frames

    def passes(self) -> dict:
        counted = dict.fromkeys(STAGES, 0)
        counted["t2v"] = self.t2v_passes
        for stage, passes in self.calls:
            counted[stage] = counted.get(stage, 0) + passes
        return counted

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def print_pass_table(recipe: Recipe, counter, hooked: dict, paper: PaperCost) -> None:
    ours = counter.passes
    print(f"\n### {recipe.name}: N={recipe.steps}, R={recipe.refine_at}, m={recipe.t2v_steps} "
          f"(F-frame UNet passes)\n")
    print("| stage | ours | paper pipeline | saved | hooks (real calls) |")
    print("|---|---:|---:|---:|---:|")
    for stage in STAGES:
        ours_text = f"{ours[stage]} (+{counter.reused} reused)" if stage == "correction" else str(ours[stage])
        saved = paper.passes[stage] - ours[stage]
        print(f"| {stage} | {ours_text} | {paper.passes[stage]} | {saved} | {hooked.get(stage, 0)} |")
    paper_total = sum(paper.passes.values())
    hooked_total = sum(hooked.values())
    saved_total = paper_total - counter.total
    print(f"| total | {counter.total} | {paper_total} | {saved_total} ({saved_total / paper_total:.1%}) "
          f"| {hooked_total} |")
    unclassified = hooked.get("unclassified", 0)
    agree = all(hooked.get(stage, 0) == ours[stage] for stage in STAGES) and not unclassified
    print(f"\nhooks agree with result.counter per stage: {'yes' if agree else 'NO'}"
          + (f" ({unclassified} unclassified passes)" if unclassified else ""))
    computed = paper.correction_calls - paper.dead_corrections - paper.repeated_corrections
    print(f"paper correction: {paper.correction_calls} CFG calls = {paper.dead_corrections} dead (refinement steps) "
          f"+ {paper.repeated_corrections} equal to the main call + {computed} computed here on the "
          f"conditional branch alone (1 pass each; ours: {ours['correction']})")
    print(f"plain {recipe.steps}-step T2I alone: {2 * recipe.steps} passes")


# --- 2. wall time ---------------------------------------------------------------------------

def run_generation(pipe: ElevatorPipeline, recipe: Recipe, frames: int, size: int, elevate: bool):
    params = replace(recipe.params(frames), mode="elevate" if elevate else "t2i")
    return generate(pipe, PROMPT, NEGATIVE, params=params, width=size, height=size, steps=recipe.steps,
                    cfg_scale=T2I_CFG, seed=SEED, decode=False, disable_progress=True)


@dataclass(frozen=True)
class Timing:
    """Median seconds and passes of the plain T2I and the elevator for one recipe."""

    recipe: str
    frames: int
    plain_seconds: float
    plain_passes: int
    elevator_seconds: float
    elevator_passes: int

    def rows(self):
        yield "plain inflated T2I DDIM", self.plain_seconds, self.plain_passes
        yield "elevator", self.elevator_seconds, self.elevator_passes


def median_seconds(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# --- 3. T2V memory and speed ----------------------------------------------------------------

def resident_bytes(*modules: torch.nn.Module) -> tuple[int, int, int]:
    """(unique storages, their elements, their bytes) over the parameters and buffers of ``modules``:
    a tensor shared between modules is counted once."""
    storages = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = (storage.nbytes(), storage.nbytes() // tensor.element_size())
    return len(storages), sum(e for _, e in storages.values()), sum(b for b, _ in storages.values())


def shared_tensor_count(module: torch.nn.Module, original: torch.nn.Module) -> tuple[int, int]:
    """How many of ``original``'s tensors ``module`` holds by storage, out of how many."""
    original_ptrs = {t.untyped_storage().data_ptr() for t in [*original.parameters(), *original.buffers()]}
    mine = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    return len(original_ptrs & mine), len(original_ptrs)


def element_count(*modules: torch.nn.Module) -> int:
    return sum(t.numel() for module in modules for t in [*module.parameters(), *module.buffers()])


def sd15_sizes() -> tuple[int, int, int]:
    """Elements (parameters + buffers) of the SD1.5 UNet, the default MotionAdapter (AnimateDiff v2 /
    AnimateLCM layout) and their UNetMotionModel, built on the meta device (no memory, no download)."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=SD15_CROSS_ATTENTION_DIM)
        adapter = MotionAdapter()
        motion_unet = UNetMotionModel.from_unet2d(unet, adapter, load_weights=False)
    return element_count(unet), element_count(adapter), element_count(motion_unet)


@contextmanager
def t2v_eps(t2v, unet, frames: int):
    """The T2V ε model as ``generate`` installs it (T2I inflation on, motion hooks for the run)."""
    with ExitStack() as stack:
        inflation = stack.enter_context(inflated(unet, frames))
        yield t2v.prepare(stack, unet, inflation, ElevatorParams(frames=frames, t2v_lora_scale=1.0))


def time_t2v_call(t2v, unet, frames: int, size: int, contexts: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Median seconds of one CFG T2V call (2 groups × F frames) after a warm-up, and its output."""
    latent = size // 8
    z = torch.randn(2 * frames, 4, latent, latent, generator=torch.Generator().manual_seed(SEED))
    t = torch.tensor(500.0)
    with torch.no_grad(), t2v_eps(t2v, unet, frames) as eps:
        output = eps(z, t, contexts, frames)
        seconds = median_seconds(lambda: eps(z, t, contexts, frames), T2V_PASS_RUNS)
    return seconds, output


def t2v_memory_and_speed(models: TinyModels, text: TextEncoder, frames: int, size: int) -> None:
    motion_unet = UNetMotionModel.from_unet2d(models.unet, models.motion_adapter).eval()
    injected = InjectedMotionT2V(models.motion_adapter, solver="lcm")
    copied = t2v_from_motion_unet(motion_unet, "lcm")
    contexts = TextConditioning(torch.cat([text(NEGATIVE), text(PROMPT)])).repeated(frames)
    injected_seconds, injected_out = time_t2v_call(injected, models.unet, frames, size, contexts)
    copied_seconds, copied_out = time_t2v_call(copied, models.unet, frames, size, contexts)
    difference = (injected_out - copied_out).abs().max().item() / copied_out.std().item()

    injected_mem = resident_bytes(models.unet, models.motion_adapter)
    copied_mem = resident_bytes(models.unet, motion_unet)
    shared_unet, unet_tensors = shared_tensor_count(motion_unet, models.unet)
    shared_adapter, adapter_tensors = shared_tensor_count(motion_unet, models.motion_adapter)
    copies = shared_unet == 0 and shared_adapter == 0

    print(f"\n## 3. T2V memory and speed, injected vs UNetMotionModel copy "
          f"(tiny AnimateLCM setup, {frames} frames, {size}x{size}, fp32)\n")
    print("| T2V path | resident modules | unique tensors | elements | bytes "
          "| s per T2V call (2×F) | s per F-frame pass |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, modules, (tensors, elements, nbytes), seconds in (
        ("injected", "T2I UNet + motion adapter", injected_mem, injected_seconds),
        ("copy", "T2I UNet + from_unet2d model", copied_mem, copied_seconds),
    ):
        print(f"| {label} | {modules} | {tensors} | {elements:,} | {nbytes:,} | {seconds:.4f} | {seconds / 2:.4f} |")
    print(f"\ncopy / injected: {copied_mem[2] / injected_mem[2]:.2f}x bytes, {copied_seconds / injected_seconds:.2f}x "
          f"time per call (median of {T2V_PASS_RUNS}); outputs differ by {difference:.1e} x std")
    print(f"from_unet2d shares {shared_unet}/{unet_tensors} tensors with the T2I UNet and "
          f"{shared_adapter}/{adapter_tensors} with the adapter: "
          + ("it copies every weight (load_state_dict into newly built modules); the adapter is not counted in "
             "'copy' because it can be released after the copy is built" if copies else
             "some weights are shared, counted once above"))

    unet_elements, adapter_elements, motion_unet_elements = sd15_sizes()
    injected_real = unet_elements + adapter_elements
    unique_fraction = copied_mem[1] / (element_count(models.unet) + element_count(motion_unet))
    copied_real = round((unet_elements + motion_unet_elements) * unique_fraction)
    print("\nExtrapolated to SD1.5 sizes (configs built on the meta device; parameters + buffers; "
          "fp16, 2 bytes per element):\n")
    print("| T2V path | elements | fp16 GB |")
    print("|---|---:|---:|")
    print(f"| SD1.5 UNet (cross_attention_dim {SD15_CROSS_ATTENTION_DIM}) | {unet_elements / 1e6:.1f}M "
          f"| {2 * unet_elements / GB:.2f} |")
    print(f"| MotionAdapter() defaults (AnimateDiff v2 / AnimateLCM) | {adapter_elements / 1e6:.1f}M "
          f"| {2 * adapter_elements / GB:.2f} |")
    print(f"| injected: UNet + adapter | {injected_real / 1e6:.1f}M | {2 * injected_real / GB:.2f} |")
    print(f"| copy: UNet + UNetMotionModel ({motion_unet_elements / 1e6:.1f}M) | {copied_real / 1e6:.1f}M "
          f"| {2 * copied_real / GB:.2f} |")
    print(f"\ninjection saves {2 * (copied_real - injected_real) / GB:.2f} GB of fp16 weights (copy row scaled by "
          f"the unique-storage fraction measured on the tiny models: {unique_fraction:.2f})")


# --- 4. long videos ------------------------------------------------------------------------

LONG_FRAMES = (16, 32, 64, 128)
LONG_CHUNK = 8
LONG_RECIPE = dict(refine_at=(8, 5, 3), t2v_steps=2, t2v_cfg_scale=2.0)  # short, so 128 frames stay affordable
LONG_STEPS = 10


def long_video_child(frames: int, frames_per_batch: int, size: int) -> None:
    """One generation in this (fresh) process; prints passes, seconds and the growth of the RSS
    high-water mark during sampling, as one line for the parent."""
    import resource

    models = tiny_models()
    pipe = ElevatorPipeline(models.unet, models.vae, TextEncoder(models.tokenizer, models.text_encoder),
                            InjectedMotionT2V(models.motion_adapter, solver="lcm"))
    params = ElevatorParams(frames=frames, frames_per_batch=frames_per_batch, **LONG_RECIPE)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = generate(pipe, PROMPT, NEGATIVE, params=params, width=size, height=size, steps=LONG_STEPS,
                      cfg_scale=T2I_CFG, seed=SEED, decode=False, disable_progress=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(f"RESULT {result.counter.total} {result.seconds} {peak}")


def long_videos(size: int, threads: int) -> None:
    import subprocess

    print(f"\n## 4. Long videos: context windows and T2I frame chunks ({LONG_STEPS} steps, refine at "
          f"{LONG_RECIPE['refine_at']}, {LONG_RECIPE['t2v_steps']} T2V steps, AnimateLCM-style tiny motion module "
          f"with a 32-frame positional encoding; windows of 16 past 32 frames)\n")
    print("Each row is a fresh process; peak = growth of its RSS high-water mark during sampling.\n")
    print("| frames | T2I batch | F-frame passes | frame evaluations | seconds | peak MiB | peak vs 16 frames |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    base = {}
    for chunk in (0, LONG_CHUNK):
        for frames in LONG_FRAMES:
            batch = frames if chunk == 0 else chunk
            result = subprocess.run([sys.executable, __file__, "--long-video-child", str(frames), str(batch),
                                     "--size", str(size), "--threads", str(threads)],
                                    capture_output=True, text=True, check=True)
            passes, seconds, peak = result.stdout.split("RESULT")[-1].split()
            peak_mib = int(peak) / 1024
            base.setdefault(chunk, peak_mib)
            label = "whole clip" if chunk == 0 else f"{chunk} frames"
            print(f"| {frames} | {label} | {float(passes):g} | {float(passes) * frames:g} | {float(seconds):.1f} "
                  f"| {peak_mib:.0f} | {peak_mib / base[chunk]:.2f}x |", flush=True)


# --- the run --------------------------------------------------------------------------------

def print_header(args, recipe_frames: dict) -> None:
    print("# VideoElevator benchmark (tiny seeded random models, CPU)\n")
    print(f"python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}, {platform.machine()} "
          f"{platform.processor() or ''}".rstrip())
    print(f"size {args.size}x{args.size} (latent {args.size // 8}x{args.size // 8}), T2I CFG {T2I_CFG}, seed {SEED}, "
          f"repeat {args.repeat} (median), decode off (sampling only), prompt {PROMPT!r}, negative {NEGATIVE!r}")
    for recipe in RECIPES:
        print(f"- {recipe.name}: N={recipe.steps}, refine at steps remaining {recipe.refine_at}, "
              f"m={recipe.t2v_steps} T2V steps, {recipe_frames[recipe.name]} frames, T2V CFG {recipe.t2v_cfg_scale}, "
              f"d_t {recipe.d_t}, α {recipe.noise_alpha}; T2V: {recipe.t2v_label}")
    print("A pass is one UNet evaluation over the F frames (a CFG call is 2 passes).")


def benchmark_recipe(models: TinyModels, text: TextEncoder, recipe: Recipe, frames: int, args):
    """Counts passes on the elevator's warm-up run (hooks on), warms up the plain run, then times both
    (hooks off)."""
    t2v = recipe.make_t2v(models)
    pipe = ElevatorPipeline(models.unet, models.vae, text, t2v)
    injected = isinstance(t2v, InjectedMotionT2V)
    separate_unet = None if injected else t2v.modules[0]
    motion_module = models.motion_adapter.down_blocks[0].motion_modules[0] if injected else None
    hooks = PassHooks(models.unet, separate_unet, motion_module, frames, text(PROMPT), text(NEGATIVE))
    try:
        warm_up = run_generation(pipe, recipe, frames, args.size, elevate=True)
    finally:
        hooks.remove()
    print_pass_table(recipe, warm_up.counter, hooks.passes(), paper_cost(recipe.steps, recipe.refine_at,
                                                                        recipe.t2v_steps))
    plain_warm_up = run_generation(pipe, recipe, frames, args.size, elevate=False)
    plain_seconds = median_seconds(lambda: run_generation(pipe, recipe, frames, args.size, elevate=False), args.repeat)
    elevator_seconds = median_seconds(lambda: run_generation(pipe, recipe, frames, args.size, elevate=True),
                                      args.repeat)
    return Timing(recipe.name, frames, plain_seconds, plain_warm_up.counter.total, elevator_seconds, warm_up.counter.total)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=None,
                        help="frames for both recipes (default: the recipe's own, 16 and 24)")
    parser.add_argument("--size", type=int, default=64, help="width and height in pixels")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per measurement (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 suits the tiny layers)")
    parser.add_argument("--long-videos-only", action="store_true", help="run only section 4 (long videos)")
    parser.add_argument("--long-video-child", nargs=2, type=int, metavar=("FRAMES", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.long_video_child:
        long_video_child(*args.long_video_child, args.size)
        return
    if args.long_videos_only:
        long_videos(args.size, args.threads)
        return
    diffusers.utils.logging.set_verbosity_error()  # from_unet2d's float32-modules notice is noise here
    recipe_frames = {recipe.name: args.frames or recipe.frames for recipe in RECIPES}
    print_header(args, recipe_frames)

    started = time.perf_counter()
    models = tiny_models()
    text = TextEncoder(models.tokenizer, models.text_encoder)
    print(f"\ntiny models built in {time.perf_counter() - started:.1f}s")

    print("\n## 1. UNet passes per stage vs the paper pipeline")
    check = sum(paper_cost(30, (26, 21, 15, 9), 6).passes.values())
    print(f"\npaper_cost(N=30, R=(26,21,15,9), m=6) = {check}; DESIGN §3.4 says {DESIGN_ANIMATELCM_PAPER_TOTAL}: "
          f"{'match' if check == DESIGN_ANIMATELCM_PAPER_TOTAL else 'MISMATCH'}")
    timings = [benchmark_recipe(models, text, recipe, recipe_frames[recipe.name], args) for recipe in RECIPES]

    print(f"\n## 2. Wall time, same tiny models (median of {args.repeat}, after one warm-up run)\n")
    print("| recipe | frames | run | seconds | passes | s per pass | time vs plain | passes vs plain |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for timing in timings:
        for run, seconds, passes in timing.rows():
            print(f"| {timing.recipe} | {timing.frames} | {run} | {seconds:.2f} | {passes} | {seconds / passes:.4f} "
                  f"| {seconds / timing.plain_seconds:.2f}x | {passes / timing.plain_passes:.2f}x |")
    print("\n(s per pass averages over call kinds: CFG-batched T2I calls (2F frames), batch-F correction and "
          "inversion calls, T2V calls; it is not the cost of any one of them)")

    t2v_memory_and_speed(models, text, recipe_frames["AnimateLCM"], args.size)
    long_videos(args.size, args.threads)
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
