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
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ..motion import (
    MotionModelError, MotionModuleInfo, check_fits_unet, describe_motion_module, load_motion_adapter, load_weights_file,
)
from ..motion.convert import read_adapter_config
from ..motion.detect import describe_diffusers_config
from ..motion.motion_lora import fit_problem, load_motion_lora
from ..schedules import SD_SCHEDULE, VPSchedule
from .conditioning import SDXLTextEncoder
from .pipeline import (
    PREDICTION_TYPES, ElevatorPipeline, InjectedMotionT2V, T2VModel, TextEncoder, t2v_from_motion_unet, t2v_from_unet3d,
)
from .resources import ModelShape, resolve_device, resolve_dtype

SOLVERS = ("auto", "ddim", "lcm")
# Per T2I family: where single-file checkpoints keep each component (diffusers' converter looks there),
# and the component folders of a diffusers folder whose weights are loaded.
SINGLE_FILE_PREFIXES = {
    "sd": {"UNet": ("model.diffusion_model.",),
           "text-encoder": ("cond_stage_model.transformer.", "cond_stage_model.model.")},
    "sdxl": {"UNet": ("model.diffusion_model.",),
             "text-encoder": ("conditioner.embedders.0.transformer.",),
             "second text-encoder": ("conditioner.embedders.1.model.",)},
}
WEIGHT_FOLDERS = {"sd": ("unet", "vae", "text_encoder"), "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2")}
TOKENIZER_FOLDERS = {"sd": ("tokenizer",), "sdxl": ("tokenizer", "tokenizer_2")}
PICKLED_WEIGHTS = ("*.bin", "*.ckpt", "*.pt", "*.pth")


class ModelFilesError(ValueError):
    """A model path that cannot be used; the message says what is missing and what to pass."""


@dataclass(frozen=True)
class ModelFiles:
    """What loading will read, found from configs and file headers without reading any weights."""

    unet_config: dict
    shape: ModelShape
    parameters: int  # tensors' elements to be loaded (a pickled motion file counted from its size)
    motion: MotionModuleInfo | None  # None for a UNet3D T2V or a pickled motion file (known once read)


def inspect_model_files(checkpoint, *, motion_module=None, t2v_unet3d=None, t2v_lora=None, config_dir=None,
                        solver: str = "auto") -> ModelFiles:
    """Check every path and header of a ``load_pipeline`` call: cheap, and before any weights are read."""
    if solver not in SOLVERS:
        raise ModelFilesError(f"solver={solver!r} is not allowed; one of {', '.join(SOLVERS)}")
    if (motion_module is None) == (t2v_unet3d is None):
        raise ModelFilesError("give exactly one T2V: a motion module (--motion-module) or a UNet3D folder (--t2v-unet3d)")
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise ModelFilesError(f"checkpoint '{checkpoint}' does not exist")
    if checkpoint.is_dir():
        family = t2i_family(checkpoint)
        _require_folder(checkpoint, WEIGHT_FOLDERS[family] + TOKENIZER_FOLDERS[family], "checkpoint")
        configs = checkpoint
        parameters = sum(_folder_parameters(checkpoint / part) for part in WEIGHT_FOLDERS[family])
    else:
        configs = _single_file_config_dir(checkpoint, config_dir)
        parameters = _single_file_parameters(checkpoint, t2i_family(configs))
    unet_config, vae_config = _read_config(configs / "unet"), _read_config(configs / "vae")
    shape = ModelShape(tuple(unet_config["block_out_channels"]), int(unet_config.get("layers_per_block", 2)),
                       tuple(vae_config["block_out_channels"]), int(unet_config.get("in_channels", 4)))
    motion = None
    if motion_module is not None:
        motion, motion_parameters = _inspect_motion(Path(motion_module), unet_config)
        parameters += motion_parameters
    else:
        folder = Path(t2v_unet3d)
        _require_folder(folder, ("unet", "text_encoder", "tokenizer"), "T2V")
        _read_config(folder / "unet")
        parameters += sum(_folder_parameters(folder / part) for part in ("unet", "text_encoder"))
    if t2v_lora is not None:
        parameters += _file_parameters(Path(t2v_lora), "T2V LoRA")
    return ModelFiles(unet_config, shape, parameters, motion)


def _read_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise ModelFilesError(f"'{folder}' has no config.json (a diffusers-format folder is needed)") from None
    except (OSError, ValueError) as error:
        raise ModelFilesError(f"'{config_file}' cannot be read: {error}") from None
    if not isinstance(config, dict) or "block_out_channels" not in config:
        raise ModelFilesError(f"'{config_file}' is not a diffusers model config (no block_out_channels)")
    return config


def _tensor_header(path: Path, what: str) -> dict[str, tuple[int, ...]]:
    """``name -> shape`` of a .safetensors file, read from its header only."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ModelFilesError(f"{what} '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFilesError(f"{what} '{path.name}' is not a readable .safetensors file "
                              f"({' '.join(str(error).split())})") from None


def _count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def _folder_parameters(folder: Path) -> int:
    """Elements in a diffusers/transformers component folder; pickled-only folders are refused."""
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = sorted(path.name for pattern in PICKLED_WEIGHTS for path in folder.glob(pattern))
        if pickled:
            raise ModelFilesError(f"'{folder}' holds only pickled weights ({', '.join(pickled)}); only .safetensors "
                                  "weights are loaded (unpickling can run code): convert them to .safetensors")
        raise ModelFilesError(f"'{folder}' has no .safetensors weights")
    return sum(_count(_tensor_header(path, folder.name)) for path in weights)


def _file_parameters(path: Path, what: str) -> int:
    if not path.is_file():
        raise ModelFilesError(f"{what} '{path}' does not exist")
    if path.suffix == ".safetensors":
        return _count(_tensor_header(path, what))
    return path.stat().st_size // 2  # a pickle is read only later, by the restricted unpickler; fp16 assumed


def _single_file_config_dir(checkpoint: Path, config_dir) -> Path:
    if checkpoint.suffix != ".safetensors":
        raise ModelFilesError(f"checkpoint '{checkpoint.name}': only .safetensors single files are loaded "
                              "(a .ckpt can run code when unpickled); convert it, or pass a diffusers folder")
    if config_dir is None:
        raise ModelFilesError("a single-file checkpoint needs --config-dir: a diffusers Stable Diffusion folder "
                              "with the matching configs and tokenizer (its weights are not needed)")
    config_dir = Path(config_dir)
    _require_folder(config_dir, ("model_index.json", "unet", "vae", "text_encoder", "tokenizer"), "config")
    return config_dir


def _single_file_parameters(checkpoint: Path, family: str) -> int:
    """Elements of a single-file checkpoint, refused early when a component is not where such files keep it."""
    shapes = _tensor_header(checkpoint, "checkpoint")
    for component, prefixes in SINGLE_FILE_PREFIXES[family].items():
        if not any(name.startswith(prefixes) for name in shapes):
            kind = "SDXL" if family == "sdxl" else "SD1.x/2.x"
            raise ModelFilesError(
                f"checkpoint '{checkpoint.name}' has no {component} weights where {kind} single files keep them "
                f"({' or '.join(prefix + '*' for prefix in prefixes)}); pass a diffusers folder instead")
    return _count(shapes)


def _inspect_motion(path: Path, unet_config: dict) -> tuple[MotionModuleInfo | None, int]:
    """The motion model's kind from its header or config, checked against the UNet."""
    if not path.is_dir() and path.suffix != ".safetensors":
        return None, _file_parameters(path, "motion module")  # a pickle: checked once read, before the T2I loads
    shapes = None if path.is_dir() else _tensor_header(path, "motion module")
    try:
        info = describe_diffusers_config(read_adapter_config(path)) if path.is_dir() else describe_motion_module(shapes)
        check_motion_fits(info, unet_config)
    except MotionModelError as error:
        raise MotionModelError(f"Cannot use {'folder ' if path.is_dir() else ''}'{path.name}' as a motion module. "
                               f"{error}") from None
    return info, _folder_parameters(path) if path.is_dir() else _count(shapes)


def check_motion_fits(info: MotionModuleInfo, unet_config: dict) -> None:
    """The motion model must fit the T2I's UNet (the clip length is ``generate``'s to check: context windows)."""
    check_fits_unet(info, tuple(unet_config["block_out_channels"]), unet_config["cross_attention_dim"],
                    unet_config.get("layers_per_block", 2))


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
    model = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True, torch_dtype=dtype,
                                          use_safetensors=True)
    return TextEncoder(tokenizer, model.eval())


def _sdxl_text_encoder(folder: Path, dtype: torch.dtype) -> SDXLTextEncoder:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    _require_folder(folder, ("tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2"), "SDXL text encoder")
    tokenizers = tuple(CLIPTokenizer.from_pretrained(folder, subfolder=sub, local_files_only=True)
                       for sub in ("tokenizer", "tokenizer_2"))
    models = (CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True, torch_dtype=dtype,
                                            use_safetensors=True),
              CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", local_files_only=True,
                                                          torch_dtype=dtype, use_safetensors=True))
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

    checkpoint, dtype = Path(checkpoint), resolve_dtype(dtype)
    if not checkpoint.exists():
        raise ModelFilesError(f"checkpoint '{checkpoint}' does not exist")
    if checkpoint.is_dir():
        family = t2i_family(checkpoint)
        _require_folder(checkpoint, ("unet", "vae"), "checkpoint")
        unet = UNet2DConditionModel.from_pretrained(checkpoint, subfolder="unet", local_files_only=True,
                                                    torch_dtype=dtype, use_safetensors=True)
        vae = AutoencoderKL.from_pretrained(checkpoint, subfolder="vae", local_files_only=True, torch_dtype=dtype,
                                            use_safetensors=True)
        text = _sdxl_text_encoder(checkpoint, dtype) if family == "sdxl" else _text_encoder(checkpoint, dtype)
        return T2I(unet.eval(), vae.eval(), text, read_schedule(checkpoint, SD_SCHEDULE), _prediction_type(checkpoint))
    config_dir = _single_file_config_dir(checkpoint, config_dir)
    family = t2i_family(config_dir)
    schedule, prediction = read_schedule(config_dir, SD_SCHEDULE), _prediction_type(config_dir)
    try:
        if family == "sdxl":
            pipe = StableDiffusionXLPipeline.from_single_file(str(checkpoint), config=str(config_dir),
                                                              local_files_only=True, torch_dtype=dtype)
        else:
            pipe = StableDiffusionPipeline.from_single_file(
                str(checkpoint), config=str(config_dir), local_files_only=True, torch_dtype=dtype,
                safety_checker=None, requires_safety_checker=False)
    except Exception as error:  # diffusers reports unusable files with assorted exception types
        raise ModelFilesError(f"checkpoint '{checkpoint.name}' cannot be loaded with the configs in '{config_dir}': "
                              f"{type(error).__name__}: {' '.join(str(error).split())}") from error
    if family == "sdxl":
        text = SDXLTextEncoder((pipe.tokenizer, pipe.tokenizer_2), (pipe.text_encoder.eval(), pipe.text_encoder_2.eval()))
        return T2I(pipe.unet.eval(), pipe.vae.eval(), text, schedule, prediction)
    return T2I(pipe.unet.eval(), pipe.vae.eval(), TextEncoder(pipe.tokenizer, pipe.text_encoder.eval()), schedule,
               prediction)


def _prediction_type(folder: Path) -> str:
    return _read_json(folder / "scheduler" / "scheduler_config.json").get("prediction_type", "epsilon")


def motion_t2v(adapter, info: MotionModuleInfo, unet, solver: str = "auto", lora_state: dict | None = None,
               copy: bool = False) -> T2VModel:
    """An AnimateDiff/AnimateLCM/SDXL T2V: the motion module injected into the T2I's own UNet, or, with
    ``copy``, diffusers' ``UNetMotionModel`` built from a copy of it (twice the UNet memory; not for
    Hotshot-XL, whose norms diffusers' motion UNet does not place as Hotshot does)."""
    from diffusers import UNetMotionModel

    if solver == "auto":
        solver = info.default_solver
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
    t2v.description = f"{info.kind.label} ({solver}{', t2v LoRA' if lora_state is not None else ''})"
    return t2v


def load_unet3d_t2v(folder: str | Path, dtype: torch.dtype = torch.float32, solver: str = "auto") -> T2VModel:
    from diffusers import UNet3DConditionModel

    folder, dtype = Path(folder), resolve_dtype(dtype)
    _require_folder(folder, ("unet", "text_encoder", "tokenizer"), "T2V")
    unet3d = UNet3DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True, torch_dtype=dtype,
                                                  use_safetensors=True)
    t2v = t2v_from_unet3d(unet3d.eval(), _text_encoder(folder, dtype), read_schedule(folder, SD_SCHEDULE),
                          "ddim" if solver == "auto" else solver)
    t2v.description = f"UNet3D '{folder.name}' ({t2v.solver})"
    return t2v


def load_motion_loras(motion_loras, info: MotionModuleInfo, motion_name: str, adapter) -> tuple:
    """``(MotionLora, weight)`` for ``(file, weight)`` pairs, each refused if it does not fit the motion module."""
    loaded = tuple((load_motion_lora(file), float(weight)) for file, weight in motion_loras)
    for lora, _ in loaded:
        problem = fit_problem(lora, info, motion_name, adapter)
        if problem:
            raise MotionModelError(problem[0].upper() + problem[1:] + ".")
    return loaded


def load_pipeline(checkpoint, *, motion_module=None, t2v_unet3d=None, t2v_lora=None, config_dir=None,
                  solver: str = "auto", device="cpu", dtype=torch.float32, motion_loras=()) -> ElevatorPipeline:
    """Everything ``generate`` needs, from disk. Exactly one T2V source must be given; ``motion_loras``
    ((file, weight) pairs of AnimateDiff v2 motion LoRAs) need a motion module.

    Every argument, path and file header is checked first (``inspect_model_files``); the motion
    model is read and checked before the T2I, so a wrong or too-short one costs no T2I load.
    ``dtype`` is a torch dtype or its name; ``device`` a torch device or its name (``auto``: CUDA
    when available).
    """
    dtype, device = resolve_dtype(dtype), resolve_device(str(device))
    files = inspect_model_files(checkpoint, motion_module=motion_module, t2v_unet3d=t2v_unet3d, t2v_lora=t2v_lora,
                                config_dir=config_dir, solver=solver)
    lora_state = load_weights_file(t2v_lora) if t2v_lora is not None else None
    motion = None
    if motion_loras and motion_module is None:
        raise ModelFilesError("motion LoRAs (--motion-lora) need a motion module (--motion-module), not a UNet3D T2V")
    if motion_module is not None:
        motion = load_motion_adapter(motion_module, lambda info: check_motion_fits(info, files.unet_config))
        loaded_loras = load_motion_loras(motion_loras, motion[1], Path(motion_module).name, motion[0])
    t2i = load_t2i(checkpoint, config_dir, dtype)
    if motion is not None:
        t2v = motion_t2v(*motion, t2i.unet, solver, lora_state)
        t2v.motion_loras = loaded_loras
        t2v.description = t2v.description[:-1] + "".join(f", {lora.name}:{w:g}" for lora, w in loaded_loras) + ")"
    else:
        t2v = load_unet3d_t2v(t2v_unet3d, dtype, solver)
        t2v.lora = lora_state
    pipe = ElevatorPipeline(t2i.unet, t2i.vae, t2i.text_encoder, t2v, t2i.schedule,
                            prediction_type=t2i.prediction_type)
    return pipe.to(device)
