"""Load the standalone pipeline's models from local files only; never contact a model hub.

T2I: a diffusers Stable Diffusion folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
optionally ``scheduler/``), or a single ``.safetensors`` checkpoint together with such a folder
for its configs and tokenizer (``config_dir``; weights there are not needed). T2V: an AnimateDiff
/ AnimateLCM motion module (file or diffusers ``MotionAdapter`` folder), or a diffusers
``UNet3DConditionModel`` folder with its own text encoder (ZeroScope/ModelScope).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..motion import MotionModelError, check_fits_unet, load_motion_adapter, load_weights_file
from ..schedules import ANIMATEDIFF_SCHEDULE, SD_SCHEDULE, VPSchedule
from .pipeline import (
    ElevatorPipeline, InjectedMotionT2V, T2VModel, TextEncoder, t2v_from_motion_unet, t2v_from_unet3d,
)

SOLVERS = ("auto", "ddim", "lcm")


class ModelFilesError(ValueError):
    """A model path that cannot be used; the message says what is missing and what to pass."""


def _require_folder(folder: Path, parts: tuple[str, ...], what: str) -> None:
    missing = [part for part in parts if not (folder / part).exists()]
    if missing:
        raise ModelFilesError(f"{what} folder '{folder}' lacks {', '.join(missing)} (a diffusers-format folder is needed)")


def read_schedule(folder: Path, default: VPSchedule) -> VPSchedule:
    """The training schedule from a diffusers ``scheduler/scheduler_config.json``, else ``default``."""
    config_file = folder / "scheduler" / "scheduler_config.json"
    if not config_file.exists():
        return default
    config = json.loads(config_file.read_text())
    beta_schedule = config.get("beta_schedule", "scaled_linear")
    if beta_schedule not in ("linear", "scaled_linear"):
        raise ModelFilesError(f"{config_file}: beta_schedule {beta_schedule!r} is not supported (linear or scaled_linear)")
    return VPSchedule.from_betas(folder.name, beta_schedule, float(config.get("beta_start", 0.00085)),
                                 float(config.get("beta_end", 0.012)))


def _text_encoder(folder: Path, dtype: torch.dtype) -> TextEncoder:
    from transformers import CLIPTextModel, CLIPTokenizer

    _require_folder(folder, ("tokenizer", "text_encoder"), "text encoder")
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    model = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True, torch_dtype=dtype)
    return TextEncoder(tokenizer, model.eval())


def load_t2i(checkpoint: str | Path, config_dir: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """(unet, vae, text encoder, schedule) of a Stable Diffusion T2I."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise ModelFilesError(f"checkpoint '{checkpoint}' does not exist")
    if checkpoint.is_dir():
        _require_folder(checkpoint, ("unet", "vae"), "checkpoint")
        unet = UNet2DConditionModel.from_pretrained(checkpoint, subfolder="unet", local_files_only=True, torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(checkpoint, subfolder="vae", local_files_only=True, torch_dtype=dtype)
        return unet.eval(), vae.eval(), _text_encoder(checkpoint, dtype), read_schedule(checkpoint, SD_SCHEDULE)
    if checkpoint.suffix != ".safetensors":
        raise ModelFilesError(f"checkpoint '{checkpoint.name}': only .safetensors single files are loaded "
                              "(a .ckpt can run code when unpickled); convert it, or pass a diffusers folder")
    if config_dir is None:
        raise ModelFilesError("a single-file checkpoint needs --config-dir: a diffusers Stable Diffusion folder "
                              "with the matching configs and tokenizer (its weights are not needed)")
    config_dir = Path(config_dir)
    _require_folder(config_dir, ("model_index.json", "unet", "vae", "text_encoder", "tokenizer"), "config")
    pipe = StableDiffusionPipeline.from_single_file(
        str(checkpoint), config=str(config_dir), local_files_only=True, torch_dtype=dtype,
        safety_checker=None, requires_safety_checker=False)
    return (pipe.unet.eval(), pipe.vae.eval(), TextEncoder(pipe.tokenizer, pipe.text_encoder.eval()),
            read_schedule(config_dir, SD_SCHEDULE))


def load_motion_t2v(path: str | Path, unet, frames: int, solver: str = "auto", lora: str | Path | None = None,
                    copy: bool = False) -> T2VModel:
    """An AnimateDiff/AnimateLCM T2V: the motion module injected into the T2I's own UNet, or, with
    ``copy``, diffusers' ``UNetMotionModel`` built from a copy of it (twice the UNet memory)."""
    from diffusers import UNetMotionModel

    adapter, info = load_motion_adapter(path)
    config = unet.config
    check_fits_unet(info, tuple(config.block_out_channels), config.cross_attention_dim, config.layers_per_block)
    problem = info.frame_count_problem(frames)
    if problem:
        raise MotionModelError(problem)
    if solver == "auto":
        solver = info.default_solver
    lora_state = load_weights_file(lora) if lora is not None else None
    if copy:
        t2v = t2v_from_motion_unet(UNetMotionModel.from_unet2d(unet, adapter).to(unet.dtype).eval(), solver)
        t2v.lora = lora_state
    else:
        t2v = InjectedMotionT2V(adapter, ANIMATEDIFF_SCHEDULE, solver, lora=lora_state)
    t2v.description = f"{info.kind.label} ({solver}{', t2v LoRA' if lora else ''})"
    return t2v


def load_unet3d_t2v(folder: str | Path, dtype: torch.dtype = torch.float32, solver: str = "auto") -> T2VModel:
    from diffusers import UNet3DConditionModel

    folder = Path(folder)
    _require_folder(folder, ("unet", "text_encoder", "tokenizer"), "T2V")
    unet3d = UNet3DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True, torch_dtype=dtype)
    t2v = t2v_from_unet3d(unet3d.eval(), _text_encoder(folder, dtype), read_schedule(folder, SD_SCHEDULE),
                          "ddim" if solver == "auto" else solver)
    t2v.description = f"UNet3D '{folder.name}' ({t2v.solver})"
    return t2v


def load_pipeline(checkpoint, *, motion_module=None, t2v_unet3d=None, t2v_lora=None, config_dir=None,
                  frames: int = 16, solver: str = "auto", device: str = "cpu",
                  dtype: torch.dtype = torch.float32) -> ElevatorPipeline:
    """Everything ``generate`` needs, from disk. Exactly one T2V source must be given."""
    if solver not in SOLVERS:
        raise ModelFilesError(f"unknown T2V solver {solver!r}; use one of {', '.join(SOLVERS)}")
    if (motion_module is None) == (t2v_unet3d is None):
        raise ModelFilesError("give exactly one T2V: a motion module (--motion-module) or a UNet3D folder (--t2v-unet3d)")
    unet, vae, text_encoder, schedule = load_t2i(checkpoint, config_dir, dtype)
    if motion_module is not None:
        t2v = load_motion_t2v(motion_module, unet, frames, solver, t2v_lora)
    else:
        t2v = load_unet3d_t2v(t2v_unet3d, dtype, solver)
        t2v.lora = load_weights_file(t2v_lora) if t2v_lora is not None else None
    pipe = ElevatorPipeline(unet, vae, text_encoder, t2v, schedule)
    return pipe.to(device)
