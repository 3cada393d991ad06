"""Load the standalone pipeline's models from local files only; never contact a model hub.

T2I: a diffusers Stable Diffusion 1.x or SDXL folder (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, for SDXL also ``text_encoder_2/``, ``tokenizer_2/``; optionally ``scheduler/``), or
a single ``.safetensors`` checkpoint together with such a folder for its configs and tokenizers
(``config_dir``; weights there are not needed). SDXL v-prediction checkpoints work (the sampler only
needs x̂0); SD3/Flux, SD2 v-prediction, inpainting and refiner checkpoints and zero-terminal-SNR
schedules are refused, each by name. T2V: an AnimateDiff
/ AnimateLCM motion module (file or diffusers ``MotionAdapter`` folder), or a diffusers
``UNet3DConditionModel`` folder with its own text encoder (ZeroScope/ModelScope).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch

from ..motion import MotionModelError, check_fits_unet, load_motion_adapter, load_weights_file
from ..schedules import SD_SCHEDULE, VPSchedule
from .conditioning import SDXLTextEncoder
from .pipeline import (
    PREDICTION_TYPES, ElevatorPipeline, InjectedMotionT2V, T2VModel, TextEncoder, t2v_from_motion_unet, t2v_from_unet3d,
)

SOLVERS = ("auto", "ddim", "lcm")


class ModelFilesError(ValueError):
    """A model path that cannot be used; the message says what is missing and what to pass."""


def _require_folder(folder: Path, parts: tuple[str, ...], what: str) -> None:
    missing = [part for part in parts if not (folder / part).exists()]
    if missing:
        raise ModelFilesError(f"{what} folder '{folder}' lacks {', '.join(missing)} (a diffusers-format folder is needed)")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def read_schedule(folder: Path, default: VPSchedule) -> VPSchedule:
    """The training schedule from a diffusers ``scheduler/scheduler_config.json``, else ``default``."""
    config_file = folder / "scheduler" / "scheduler_config.json"
    if not config_file.exists():
        return default
    config = json.loads(config_file.read_text())
    if config.get("rescale_betas_zero_snr"):
        raise ModelFilesError(f"{config_file}: zero-terminal-SNR schedules (rescale_betas_zero_snr) are not supported "
                              "(their last σ is infinite)")
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


def _sdxl_text_encoder(folder: Path, dtype: torch.dtype) -> SDXLTextEncoder:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    _require_folder(folder, ("tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2"), "SDXL text encoder")
    tokenizers = tuple(CLIPTokenizer.from_pretrained(folder, subfolder=sub, local_files_only=True)
                       for sub in ("tokenizer", "tokenizer_2"))
    models = (CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True, torch_dtype=dtype),
              CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", local_files_only=True,
                                                          torch_dtype=dtype))
    return SDXLTextEncoder(tokenizers, tuple(model.eval() for model in models))


class T2I(NamedTuple):
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: object
    schedule: VPSchedule
    prediction_type: str


def t2i_family(folder: Path) -> str:
    """'sd' or 'sdxl' for a diffusers folder, refusing by name the checkpoints the elevator cannot run."""
    if (folder / "transformer").exists() and not (folder / "unet").exists():
        raise ModelFilesError(f"'{folder.name}' is a transformer (SD3/Flux-style) model; only SD1.x and SDXL "
                              "checkpoints (a UNet) are supported")
    unet = _read_json(folder / "unet" / "config.json")
    index = _read_json(folder / "model_index.json")
    sdxl = unet.get("addition_embed_type") == "text_time"
    if sdxl and (index.get("requires_aesthetics_score") or not (folder / "text_encoder").exists()):
        raise ModelFilesError(f"'{folder.name}' is an SDXL refiner (it refines finished images); use an SDXL base model")
    if unet.get("in_channels", 4) != 4:
        raise ModelFilesError(f"'{folder.name}' is an inpainting or other {unet['in_channels']}-channel UNet; "
                              "only text-to-image (4-channel) checkpoints are supported")
    prediction = _read_json(folder / "scheduler" / "scheduler_config.json").get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES or (prediction == "v_prediction" and not sdxl):
        raise ModelFilesError(f"'{folder.name}': {prediction} checkpoints are supported for SDXL only "
                              "(SD2-v and other v-prediction SD models are not)")
    return "sdxl" if sdxl else "sd"


def load_t2i(checkpoint: str | Path, config_dir: str | Path | None = None, dtype: torch.dtype = torch.float32) -> T2I:
    """UNet, VAE, text encoder(s), schedule and prediction type of a Stable Diffusion 1.x or SDXL T2I."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise ModelFilesError(f"checkpoint '{checkpoint}' does not exist")
    if checkpoint.is_dir():
        family = t2i_family(checkpoint)
        _require_folder(checkpoint, ("unet", "vae"), "checkpoint")
        unet = UNet2DConditionModel.from_pretrained(checkpoint, subfolder="unet", local_files_only=True, torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(checkpoint, subfolder="vae", local_files_only=True, torch_dtype=dtype)
        text = _sdxl_text_encoder(checkpoint, dtype) if family == "sdxl" else _text_encoder(checkpoint, dtype)
        return T2I(unet.eval(), vae.eval(), text, read_schedule(checkpoint, SD_SCHEDULE), _prediction_type(checkpoint))
    if checkpoint.suffix != ".safetensors":
        raise ModelFilesError(f"checkpoint '{checkpoint.name}': only .safetensors single files are loaded "
                              "(a .ckpt can run code when unpickled); convert it, or pass a diffusers folder")
    if config_dir is None:
        raise ModelFilesError("a single-file checkpoint needs --config-dir: a diffusers Stable Diffusion folder "
                              "with the matching configs and tokenizer (its weights are not needed)")
    config_dir = Path(config_dir)
    family = t2i_family(config_dir)
    _require_folder(config_dir, ("model_index.json", "unet", "vae", "text_encoder", "tokenizer"), "config")
    schedule, prediction = read_schedule(config_dir, SD_SCHEDULE), _prediction_type(config_dir)
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline.from_single_file(str(checkpoint), config=str(config_dir),
                                                          local_files_only=True, torch_dtype=dtype)
        text = SDXLTextEncoder((pipe.tokenizer, pipe.tokenizer_2), (pipe.text_encoder.eval(), pipe.text_encoder_2.eval()))
        return T2I(pipe.unet.eval(), pipe.vae.eval(), text, schedule, prediction)
    pipe = StableDiffusionPipeline.from_single_file(
        str(checkpoint), config=str(config_dir), local_files_only=True, torch_dtype=dtype,
        safety_checker=None, requires_safety_checker=False)
    return T2I(pipe.unet.eval(), pipe.vae.eval(), TextEncoder(pipe.tokenizer, pipe.text_encoder.eval()), schedule,
               prediction)


def _prediction_type(folder: Path) -> str:
    return _read_json(folder / "scheduler" / "scheduler_config.json").get("prediction_type", "epsilon")


def load_motion_t2v(path: str | Path, unet, solver: str = "auto", lora: str | Path | None = None,
                    copy: bool = False) -> T2VModel:
    """An AnimateDiff/AnimateLCM/SDXL T2V: the motion module injected into the T2I's own UNet, or, with
    ``copy``, diffusers' ``UNetMotionModel`` built from a copy of it (twice the UNet memory; not for
    Hotshot-XL, whose norms diffusers' motion UNet does not place as Hotshot does)."""
    from diffusers import UNetMotionModel

    adapter, info = load_motion_adapter(path)
    config = unet.config
    check_fits_unet(info, tuple(config.block_out_channels), config.cross_attention_dim, config.layers_per_block)
    if solver == "auto":
        solver = info.default_solver
    lora_state = load_weights_file(lora) if lora is not None else None
    if copy:
        if info.frame_pooled_spatial_norms:
            raise MotionModelError(f"{info.kind.label} runs only injected into the T2I's UNet, not as a UNetMotionModel copy")
        motion_unet = UNetMotionModel.from_unet2d(unet, adapter)
        if unet.add_embedding is not None:  # diffusers' from_unet2d does not copy SDXL's added-conditioning layers
            motion_unet.add_embedding.load_state_dict(unet.add_embedding.state_dict())
        t2v = t2v_from_motion_unet(motion_unet.to(unet.dtype).eval(), solver, info.schedule)
        t2v.lora = lora_state
    else:
        t2v = InjectedMotionT2V.for_motion_model(adapter, info, solver, lora_state)
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
                  solver: str = "auto", device: str = "cpu",
                  dtype: torch.dtype = torch.float32) -> ElevatorPipeline:
    """Everything ``generate`` needs, from disk. Exactly one T2V source must be given."""
    if solver not in SOLVERS:
        raise ModelFilesError(f"unknown T2V solver {solver!r}; use one of {', '.join(SOLVERS)}")
    if (motion_module is None) == (t2v_unet3d is None):
        raise ModelFilesError("give exactly one T2V: a motion module (--motion-module) or a UNet3D folder (--t2v-unet3d)")
    t2i = load_t2i(checkpoint, config_dir, dtype)
    if motion_module is not None:
        t2v = load_motion_t2v(motion_module, t2i.unet, solver, t2v_lora)
    else:
        t2v = load_unet3d_t2v(t2v_unet3d, dtype, solver)
        t2v.lora = load_weights_file(t2v_lora) if t2v_lora is not None else None
    pipe = ElevatorPipeline(t2i.unet, t2i.vae, t2i.text_encoder, t2v, t2i.schedule,
                            prediction_type=t2i.prediction_type)
    return pipe.to(device)
