"""The videoelevator command (also python -m lib_elevator): generate a video from model files on disk, or run the demo on embedded tiny models.

Every schema field (``params.py``: the VideoElevator parameters and the generation settings) is a
flag generated from the schema, so the CLI, the API dict and the infotext never disagree about
names, defaults or ranges. Schema flags default to None so that the flags a user actually gave are
known (``given``): only those are held fixed when parameters are fitted to a low step count.

Everything is checked before any model is loaded (``check_generate``/``check_demo``): a new flag
gets its check there. Every error is one line on stderr with exit status 2; Ctrl-C is one line
with status 130. Outputs are written atomically, so a failed run changes no file.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..params import ElevatorParams, GenerationSettings, field_specs
from ..video import FORMATS, OutputPlan, plan_outputs

PROG = "videoelevator"
DEBUG_VARIABLE = "VIDEOELEVATOR_DEBUG"  # set to 1 for warnings and full tracebacks
EXIT_ERROR, EXIT_INTERRUPTED = 2, 130
DTYPE_NAMES = ("float32", "float16", "bfloat16")
# demo --base -> its --motion choices, the first the default; names map to the layouts' kinds
DEMO_MOTION = {"sd15": ("animatelcm",), "sdxl": ("animatediff-sdxl", "hotshotxl")}
SDXL_DEMO_KINDS = {"animatediff-sdxl": "animatediff_sdxl_beta", "hotshotxl": "hotshotxl"}
DESCRIPTION = ("Make a video with VideoElevator (arXiv 2403.05438): a text-to-video model's motion, a "
               "text-to-image model's frame quality. 'generate' reads models from disk; 'demo' runs on tiny "
               "random models built in memory. Nothing is ever downloaded.")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``videoelevator: error: …`` and exit status 2, no usage dump."""

    def error(self, message: str):
        _print_error(message)
        self.exit(EXIT_ERROR)


class _HelpFormatter(argparse.HelpFormatter):
    """Shows every flag's default once: schema flags spell theirs out (their parser default is None)."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if "(default" in help_text or action.default == argparse.SUPPRESS:
            return help_text
        if action.required:
            return f"{help_text} (required)"
        default = action.default
        if isinstance(default, list):
            default = " ".join(default)
        elif isinstance(default, bool):
            default = "on" if default else "off"
        shown = "none" if default is None else "''" if default == "" else str(default).replace("%", "%%")
        return f"{help_text} (default: {shown})"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _format_default(value) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _add_schema_flags(group, schema, skip=()) -> None:
    for spec in field_specs(schema):
        if spec.name in skip:
            continue
        meta = spec.metadata
        help_text = f"{meta['help']} (default: {_format_default(spec.default)})"
        if spec.type == "bool":
            group.add_argument(_flag(spec.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(_flag(spec.name), default=None, choices=meta["choices"], help=help_text,
                               metavar=None if meta["choices"] else spec.name.upper())


def _given(args: argparse.Namespace, schema) -> dict:
    """The schema fields set on the command line (flags left out are None)."""
    return {spec.name: getattr(args, spec.name) for spec in field_specs(schema)
            if getattr(args, spec.name, None) is not None}


def _add_output_flags(parser: argparse.ArgumentParser, default_out: str) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--out", default=default_out,
                       help="output path stem; each format adds its suffix, PNG frames go to <stem>-frames/")
    group.add_argument("--format", nargs="+", default=["mp4", "gif"], choices=FORMATS, metavar="FORMAT",
                       help=f"one or more of {', '.join(FORMATS)}")
    group.add_argument("--loop", type=int, default=0, help="GIF/WEBP loop count, 0 = forever")
    group.add_argument("--crf", type=int, default=18,
                       help="MP4/WEBM constant-rate factor, lower = better (0-51 for MP4, 0-63 for WEBM)")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    group.add_argument("--compare", action="store_true",
                       help="also make the T2V-only and T2I-only videos from the same noise (OUT-t2v, OUT-t2i) and a "
                            "labelled side-by-side video of all three (OUT-compare); OUT is the elevated video")


def _add_prompt_flags(group, required: bool, default: str | None = None) -> None:
    source = group.add_mutually_exclusive_group(required=required)
    source.add_argument("--prompt", default=default,
                        help="what the video shows; frame-keyed lines ('0: ...', '32: ...') make it travel")
    source.add_argument("--prompt-file", help="read the prompt (e.g. a multi-line prompt-travel prompt) from a file")


def motion_lora_argument(text: str) -> tuple[str, float]:
    """``FILE`` or ``FILE:WEIGHT`` (a colon inside the path, as in ``C:\\x``, stays part of it)."""
    path, sep, weight = text.rpartition(":")
    try:
        return (path, float(weight)) if sep and path else (text, 1.0)
    except ValueError:
        return text, 1.0


def _prompt(args) -> str:
    if args.prompt_file is not None:
        with open(args.prompt_file, encoding="utf-8") as file:
            return file.read().strip()
    return args.prompt


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=DESCRIPTION, formatter_class=_HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{generate,demo}")

    generate = commands.add_parser("generate", help="make a video from model files on disk", description=(
        "Make a video from a Stable Diffusion checkpoint and a motion model on disk."), formatter_class=_HelpFormatter)
    models = generate.add_argument_group("models")
    models.add_argument("--checkpoint", required=True, help="diffusers SD folder or single .safetensors file")
    models.add_argument("--config-dir", help="diffusers SD folder with configs and tokenizer, for a single-file "
                                             "checkpoint (its weights are not needed)")
    models.add_argument("--motion-module", help="AnimateDiff/AnimateLCM motion module (file or diffusers folder)")
    models.add_argument("--t2v-unet3d", help="diffusers UNet3D T2V folder (ZeroScope/ModelScope)")
    models.add_argument("--t2v-lora", help="LoRA applied only in T2V passes (e.g. AnimateLCM_sd15_t2v_lora)")
    models.add_argument("--motion-lora", action="append", default=[], type=motion_lora_argument,
                        metavar="FILE[:WEIGHT]", help="AnimateDiff v2 motion LoRA on the motion modules "
                        "(weight 1 if not given); repeat the flag to add several")
    models.add_argument("--solver", default="auto", choices=("auto", "ddim", "lcm"),
                        help="T2V solver; auto = LCM for AnimateLCM, else DDIM")
    run = generate.add_argument_group("generation")
    _add_prompt_flags(run, required=True)
    run.add_argument("--negative-prompt", default="", help="what the video should not show")
    _add_schema_flags(run, GenerationSettings)
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or mps; auto = cuda when available, else cpu")
    run.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="model weights' dtype")
    _add_memory_flag(run)
    _add_output_flags(generate, "outputs/videoelevator")
    _add_schema_flags(generate.add_argument_group("VideoElevator parameters (defaults: the paper's AnimateLCM "
                                                  "recipe)"), ElevatorParams)

    demo = commands.add_parser("demo", help="run the full elevator on embedded tiny random models", description=(
        "Run the full elevator on tiny random models built in memory (CPU, seconds): a check that everything "
        "works, not a pretty video."), formatter_class=_HelpFormatter)
    run = demo.add_argument_group("generation")
    run.add_argument("--size", type=int, default=64, help="width and height in pixels")
    run.add_argument("--base", default="sd15", choices=DEMO_MOTION, help="T2I shape: SD1.5 or SDXL")
    run.add_argument("--motion", choices=sorted({m for kinds in DEMO_MOTION.values() for m in kinds}),
                     help="motion-model layout: sd15 animatelcm (default); sdxl animatediff-sdxl (default) or hotshotxl")
    _add_prompt_flags(run, required=False, default="a tiny random model dancing")
    _add_schema_flags(run, GenerationSettings, skip=("width", "height", "cfg_scale"))
    _add_output_flags(demo, "outputs/demo/videoelevator-demo")
    _add_schema_flags(demo.add_argument_group("VideoElevator parameters"), ElevatorParams)
    return parser


def _add_memory_flag(group) -> None:
    group.add_argument("--skip-memory-check", action="store_true",
                       help="run even when the estimated peak memory exceeds what the device has free")


@dataclass(frozen=True)
class CheckedRun:
    """A command's arguments after every check that needs no model: what the run will do."""

    settings: GenerationSettings
    params: ElevatorParams
    prompt: str
    notes: tuple[str, ...]  # how parameters were fitted to the step count
    outputs: OutputPlan


def _check_common(args, settings: GenerationSettings) -> CheckedRun:
    """Parameters fitted to the step count (the user's own flags held fixed), the prompt and the output plan."""
    given = _given(args, ElevatorParams)
    if args.compare:  # all three modes: the parameters must suit the elevator
        given = {**given, "mode": "elevate"}
    params, notes = ElevatorParams(**given).fitted_to_steps(settings.steps, keep=given)
    prompt = _prompt(args)
    from ..prompt_travel import parse_prompt_travel  # imports torch: after the checks above

    parse_prompt_travel(prompt, params.frames)
    outputs = plan_outputs(args.out, args.format, crf=args.crf, loop=args.loop)
    return CheckedRun(settings, params, prompt, tuple(notes), outputs)


def check_generate(args) -> CheckedRun:
    return _check_common(args, GenerationSettings(**_given(args, GenerationSettings)))


def check_demo(args) -> CheckedRun:
    size = {"width": args.size, "height": args.size}
    checked = _check_common(args, GenerationSettings(**size, **_given(args, GenerationSettings)))
    if args.motion is not None and args.motion not in DEMO_MOTION[args.base]:
        raise ValueError(f"--motion {args.motion} does not fit --base {args.base}; use one of "
                         f"{', '.join(DEMO_MOTION[args.base])}")
    return checked


def infotext(prompt: str, negative_prompt: str, settings: GenerationSettings, params: ElevatorParams, t2v: str) -> str:
    """WebUI-style generation parameters, with the VideoElevator fields in one unquoted entry."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(f"Steps: {settings.steps}, Sampler: DDIM, CFG scale: {settings.cfg_scale:g}, Seed: {settings.seed}, "
                 f"Size: {settings.width}x{settings.height}, T2V: {t2v}, VideoElevator: {params.to_infotext()}")
    return "\n".join(lines)


def _report_notes(checked: CheckedRun) -> None:
    for note in checked.notes:
        print(f"note: {note}")


def _report(results: dict, started: float, written) -> None:
    for mode, result in results.items():
        passes = result.counter.passes
        print(f"{mode}: UNet passes (F-frame):", ", ".join(f"{stage} {count:g}" for stage, count in passes.items()),
              f"= {result.counter.total:g} (reused {result.counter.reused}); sampling {result.seconds:.1f}s")
    if len(results) > 1:
        print(f"all modes: {sum(r.counter.total for r in results.values()):g} UNet passes")
    print(f"total {time.perf_counter() - started:.1f}s")
    for path in written:
        print(f"wrote {path}")


def _run_and_write(pipe, checked: CheckedRun, args, negative: str, text, started: float, **options) -> None:
    """Generate (one mode, or all three with ``--compare``), write every video and report the cost.

    ``text(params)`` is the infotext of a video made with ``params``.
    """
    from ..compare import COMPARE_SUFFIX, side_by_side
    from ..video import save_video, tensor_to_uint8_frames
    from .pipeline import generate, generate_comparison

    kwargs = dict(disable_progress=True if args.quiet else None, **dataclasses.asdict(checked.settings), **options)
    if args.compare:
        results = generate_comparison(pipe, checked.prompt, negative, params=checked.params, **kwargs)
    else:
        results = {checked.params.mode: generate(pipe, checked.prompt, negative, params=checked.params, **kwargs)}
    frames = {mode: tensor_to_uint8_frames(result.images) for mode, result in results.items()}
    stem = checked.outputs.stem

    def plan(suffix: str):
        return dataclasses.replace(checked.outputs, stem=stem.with_name(stem.name + suffix))

    outputs = [(frames[mode], plan(f"-{mode}" if args.compare and mode != "elevate" else ""), text(result.params))
               for mode, result in results.items()]
    if args.compare:
        outputs.append((side_by_side(frames), plan(COMPARE_SUFFIX), text(results["elevate"].params)))
    written = []
    for video, target, parameters in outputs:
        written += save_video(video, target, fps=checked.params.fps, parameters=parameters)
    _report(results, started, written)


def check_generate_models(args, checked: CheckedRun):
    """Device, dtype, model paths and headers, and the memory estimate: still before any weights are read."""
    from ..context import resolve_context
    from .files import inspect_model_files
    from .pipeline import largest_unet_batch
    from .resources import DTYPE_BYTES, RunSize, available_bytes, check_memory, resolve_device

    device = resolve_device(args.device)
    files = inspect_model_files(args.checkpoint, motion_module=args.motion_module, t2v_unet3d=args.t2v_unet3d,
                                t2v_lora=args.t2v_lora, config_dir=args.config_dir, solver=args.solver)
    limit = files.motion.positional_encoding_length if files.motion else None
    context = resolve_context(checked.params, limit)
    if not args.skip_memory_check:
        settings = checked.settings
        size = RunSize(checked.params.frames, settings.width, settings.height, settings.steps,
                       largest_unet_batch(checked.params, context))
        dtype_bytes = DTYPE_BYTES[args.dtype]
        check_memory(files.shape, size, dtype_bytes, files.parameters * dtype_bytes, available_bytes(device),
                     f"the {device.type} device")
    return device


def run_generate(args) -> None:
    started = time.perf_counter()
    checked = check_generate(args)
    _quiet_libraries()  # after the checks that need no library: a bad flag is answered at once
    device = check_generate_models(args, checked)
    from .files import load_pipeline

    _report_notes(checked)
    pipe = load_pipeline(args.checkpoint, motion_module=args.motion_module, t2v_unet3d=args.t2v_unet3d,
                         t2v_lora=args.t2v_lora, config_dir=args.config_dir, solver=args.solver, device=device,
                         dtype=args.dtype, motion_loras=args.motion_lora)

    def text(params):
        return infotext(checked.prompt, args.negative_prompt, checked.settings, params, pipe.t2v.description)

    _run_and_write(pipe, checked, args, args.negative_prompt, text, started, check_memory=not args.skip_memory_check)


def demo_pipeline(base: str, motion: str | None):
    """Tiny random models of the ``base`` shape with a motion model in ``motion``'s layout, and its label."""
    from ..tiny import tiny_models, tiny_sdxl_models
    from .conditioning import SDXLTextEncoder
    from .pipeline import ElevatorPipeline, InjectedMotionT2V, TextEncoder

    motion = motion or DEMO_MOTION[base][0]
    if base == "sd15":
        models = tiny_models()
        return ElevatorPipeline(models.unet, models.vae, TextEncoder(models.tokenizer, models.text_encoder),
                                InjectedMotionT2V(models.motion_adapter, solver="lcm")), "AnimateLCM"
    models = tiny_sdxl_models(SDXL_DEMO_KINDS[motion])
    t2v = InjectedMotionT2V.for_motion_model(models.motion_adapter, models.motion_info)
    text = SDXLTextEncoder(models.tokenizers, models.text_encoders)
    return ElevatorPipeline(models.unet, models.vae, text, t2v), f"SDXL with {models.motion_info.kind.label}"


def run_demo(args) -> None:
    started = time.perf_counter()
    checked = check_demo(args)
    import torch

    _report_notes(checked)
    torch.set_num_threads(1)  # toy-sized layers: threading costs more than it gains
    pipe, label = demo_pipeline(args.base, args.motion)
    settings, params = checked.settings, checked.params
    print(f"tiny models built in {time.perf_counter() - started:.1f}s; tiny {label} ({pipe.t2v.solver} T2V), "
          f"{params.frames} frames, {settings.steps} steps, {settings.width}x{settings.height}")
    negative = "static"

    def text(video_params):
        return infotext(checked.prompt, negative, settings, video_params, f"tiny {label}")

    _run_and_write(pipe, checked, args, negative, text, started, check_memory=False)


def _quiet_libraries() -> None:
    """Keep the terminal for our progress bar and errors: no library load bars, advice or warnings."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def one_line(error: BaseException) -> str:
    """An exception as one line, without the ``VideoElevator:`` prefix the WebUI shows."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text.removeprefix("VideoElevator: ")


def _print_error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    debug = os.environ.get(DEBUG_VARIABLE) == "1"
    if not debug:
        warnings.simplefilter("ignore")
    try:
        args = build_parser().parse_args(argv)
        (run_generate if args.command == "generate" else run_demo)(args)
    except SystemExit as exit:  # argparse: --help, or a usage error already printed on one line
        return exit.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no partial output was left", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, MemoryError) as error:
        if debug:
            raise
        _print_error(one_line(error))
        return EXIT_ERROR
    except Exception as error:  # a bug: still one line, the traceback on request
        if debug:
            raise
        _print_error(f"unexpected {type(error).__name__}: {one_line(error)} (set {DEBUG_VARIABLE}=1 for the traceback)")
        return 1
    return 0


def console_main() -> None:
    """Entry point of the ``videoelevator`` console script."""
    sys.exit(main())
