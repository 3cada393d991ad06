"""``python -m lib_elevator``: ``generate`` from model files on disk, or the embedded ``demo``.

Every VideoElevator parameter is a flag generated from the schema (``params.py``), so the CLI,
the API dict and the infotext can never disagree about names, defaults or ranges.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from ..params import ElevatorParams, field_specs, validate_size
from ..prompt_travel import parse_prompt_travel
from ..video import FORMATS

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# demo --base -> its --motion choices, the first the default; names map to the layouts' kinds
DEMO_MOTION = {"sd15": ("animatelcm",), "sdxl": ("animatediff-sdxl", "hotshotxl")}
SDXL_DEMO_KINDS = {"animatediff-sdxl": "animatediff_sdxl_beta", "hotshotxl": "hotshotxl"}


def _add_schema_flags(parser: argparse.ArgumentParser, skip=()) -> None:
    group = parser.add_argument_group("VideoElevator parameters (defaults: the paper's AnimateLCM recipe)")
    for spec in field_specs():
        if spec.name in skip:
            continue
        flag = "--" + spec.name.replace("_", "-")
        meta = spec.metadata
        default = ",".join(f"{v:g}" for v in spec.default) if isinstance(spec.default, tuple) else spec.default
        help_text = f"{meta['help']} (default {default})"
        if spec.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, default=None, choices=meta["choices"], help=help_text, metavar=None
                               if meta["choices"] else spec.name.upper())


def _schema_values(args: argparse.Namespace) -> dict:
    return {spec.name: getattr(args, spec.name) for spec in field_specs()
            if getattr(args, spec.name, None) is not None}


def _add_output_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--out", default=default_out, help="output path stem (default %(default)s)")
    parser.add_argument("--format", nargs="+", default=["mp4", "gif"], choices=FORMATS, help="output formats")
    parser.add_argument("--loop", type=int, default=0, help="GIF/WEBP loop count, 0 = forever")
    parser.add_argument("--crf", type=int, default=18, help="MP4/WEBM constant-rate factor (lower = better)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_prompt_flags(parser: argparse.ArgumentParser, required: bool) -> None:
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--prompt", help="the prompt; frame-keyed lines ('0: ...', '32: ...') make it travel")
    source.add_argument("--prompt-file", help="read the prompt (e.g. a multi-line prompt-travel prompt) from a file")


def _prompt(args, default: str | None = None) -> str:
    if args.prompt_file is not None:
        with open(args.prompt_file, encoding="utf-8") as file:
            return file.read().strip()
    return args.prompt if args.prompt is not None else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_elevator", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="make a video from model files on disk")
    generate.add_argument("--checkpoint", required=True, help="diffusers SD folder or single .safetensors")
    generate.add_argument("--config-dir", help="diffusers SD folder with configs and tokenizer, for a single-file checkpoint")
    generate.add_argument("--motion-module", help="AnimateDiff/AnimateLCM motion module (file or diffusers folder)")
    generate.add_argument("--t2v-unet3d", help="diffusers UNet3D T2V folder (ZeroScope/ModelScope)")
    generate.add_argument("--t2v-lora", help="LoRA applied only in T2V passes (e.g. AnimateLCM_sd15_t2v_lora)")
    generate.add_argument("--solver", default="auto", choices=("auto", "ddim", "lcm"),
                          help="T2V solver; auto = LCM for AnimateLCM, else DDIM")
    _add_prompt_flags(generate, required=True)
    generate.add_argument("--negative-prompt", default="")
    generate.add_argument("--width", type=int, default=512)
    generate.add_argument("--height", type=int, default=512)
    generate.add_argument("--steps", type=int, default=30)
    generate.add_argument("--cfg-scale", type=float, default=7.5)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    generate.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    _add_output_flags(generate, "outputs/videoelevator")
    _add_schema_flags(generate)

    demo = commands.add_parser("demo", help="run the full elevator on embedded tiny random models")
    demo.add_argument("--frames", type=int, default=16)
    demo.add_argument("--steps", type=int, default=30)
    demo.add_argument("--size", type=int, default=64, help="width and height in pixels")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--base", default="sd15", choices=DEMO_MOTION, help="T2I shape: SD1.5 or SDXL (default %(default)s)")
    demo.add_argument("--motion", choices=sorted({m for kinds in DEMO_MOTION.values() for m in kinds}),
                      help="motion-model layout: sd15 animatelcm (default); sdxl animatediff-sdxl (default) or hotshotxl")
    _add_prompt_flags(demo, required=False)
    _add_output_flags(demo, "outputs/demo/videoelevator-demo")
    _add_schema_flags(demo, skip=("frames",))
    return parser


def infotext(prompt: str, negative_prompt: str, steps: int, cfg_scale: float, seed, width: int, height: int,
             params: ElevatorParams, t2v: str) -> str:
    """WebUI-style generation parameters, with the VideoElevator fields in one unquoted entry."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(f"Steps: {steps}, Sampler: DDIM, CFG scale: {cfg_scale:g}, Seed: {seed}, Size: {width}x{height}, "
                 f"T2V: {t2v}, VideoElevator: {params.to_infotext()}")
    return "\n".join(lines)


def _report(result, started: float, written) -> None:
    passes = result.counter.passes
    print("UNet passes (F-frame):", ", ".join(f"{stage} {count:g}" for stage, count in passes.items()),
          f"= {result.counter.total:g} (reused {result.counter.reused})")
    print(f"sampling {result.seconds:.1f}s, total {time.perf_counter() - started:.1f}s")
    for path in written:
        print(f"wrote {path}")


def _write(result, args, text: str):
    from ..video import save_video, tensor_to_uint8_frames

    return save_video(tensor_to_uint8_frames(result.images), args.out, args.format, fps=result.params.fps,
                      loop=args.loop, parameters=text, crf=args.crf)


def run_generate(args) -> None:
    from .pipeline import generate
    from .files import load_pipeline

    started = time.perf_counter()
    params = ElevatorParams(**_schema_values(args))
    params.refine_steps_remaining(args.steps)
    validate_size(args.width, args.height)
    prompt = _prompt(args)
    parse_prompt_travel(prompt, params.frames)
    pipe = load_pipeline(args.checkpoint, motion_module=args.motion_module, t2v_unet3d=args.t2v_unet3d,
                         t2v_lora=args.t2v_lora, config_dir=args.config_dir, solver=args.solver,
                         device=args.device, dtype=DTYPES[args.dtype])
    result = generate(pipe, prompt, args.negative_prompt, params=params, width=args.width, height=args.height,
                      steps=args.steps, cfg_scale=args.cfg_scale, seed=args.seed,
                      disable_progress=True if args.quiet else None)
    text = infotext(prompt, args.negative_prompt, args.steps, args.cfg_scale, args.seed, args.width,
                    args.height, params, pipe.t2v.description)
    _report(result, started, _write(result, args, text))


def demo_pipeline(base: str, motion: str | None):
    """Tiny random models of the ``base`` shape with a motion model in ``motion``'s layout, and its label."""
    from .conditioning import SDXLTextEncoder
    from .pipeline import ElevatorPipeline, InjectedMotionT2V, TextEncoder
    from ..tiny import tiny_models, tiny_sdxl_models

    motion = motion or DEMO_MOTION[base][0]
    if motion not in DEMO_MOTION[base]:
        raise ValueError(f"--motion {motion} does not fit --base {base}; use one of {', '.join(DEMO_MOTION[base])}")
    if base == "sd15":
        models = tiny_models()
        return ElevatorPipeline(models.unet, models.vae, TextEncoder(models.tokenizer, models.text_encoder),
                                InjectedMotionT2V(models.motion_adapter, solver="lcm")), "AnimateLCM"
    models = tiny_sdxl_models(SDXL_DEMO_KINDS[motion])
    t2v = InjectedMotionT2V.for_motion_model(models.motion_adapter, models.motion_info)
    text = SDXLTextEncoder(models.tokenizers, models.text_encoders)
    return ElevatorPipeline(models.unet, models.vae, text, t2v), f"SDXL with {models.motion_info.kind.label}"


def run_demo(args) -> None:
    from .pipeline import generate

    started = time.perf_counter()
    params = ElevatorParams(**{**_schema_values(args), "frames": args.frames})
    params.refine_steps_remaining(args.steps)
    prompt = _prompt(args, default="a tiny random model dancing")
    parse_prompt_travel(prompt, params.frames)
    torch.set_num_threads(1)  # toy-sized layers: threading costs more than it gains
    pipe, label = demo_pipeline(args.base, args.motion)
    print(f"tiny models built in {time.perf_counter() - started:.1f}s; tiny {label} ({pipe.t2v.solver} T2V), "
          f"{params.frames} frames, {args.steps} steps, {args.size}x{args.size}")
    negative = "static"
    result = generate(pipe, prompt, negative, params=params, width=args.size, height=args.size, steps=args.steps,
                      seed=args.seed, disable_progress=True if args.quiet else None)
    text = infotext(prompt, negative, args.steps, 7.5, args.seed, args.size, args.size, params, f"tiny {label}")
    _report(result, started, _write(result, args, text))


def _quiet_libraries() -> None:
    """Keep the terminal for our progress bar and errors: no library load bars or advice."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def main(argv=None) -> int:
    from .files import ModelFilesError
    from ..params import ParamError

    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        (run_generate if args.command == "generate" else run_demo)(args)
    except (ParamError, ModelFilesError, ValueError, FileNotFoundError, OSError) as error:
        print(f"videoelevator: error: {error}", file=sys.stderr)
        return 2
    return 0
