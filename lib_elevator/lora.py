"""A LoRA that acts only during the T2V pass (AnimateLCM's t2v LoRA), on a UNet shared with the T2I.

The user's own LoRAs are merged into the UNet by the host and apply to both passes; this one must
not touch the T2I pass, so it is never merged. Instead every target Linear/Conv2d gets a forward
hook that adds ``scale · alpha/rank · up(down(x))`` while ``gate.active`` is true and does nothing
otherwise. Removing the hooks leaves the UNet bit-identical.

Files come in three key layouts, all read here: kohya (``lora_unet_<path_with_underscores>``
+ ``.lora_down.weight``/``.lora_up.weight``/``.alpha``, the AnimateLCM file's layout), diffusers
(``unet.<path>.lora.down.weight``, or ``…attn1.processor.to_q_lora.down.weight``) and PEFT
(``<path>.lora_A.weight``/``.lora_B.weight``). Module paths are diffusers UNet names; on an ldm
UNet (A1111/Forge) they are translated with diffusers' own ldm→diffusers UNet key converter.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from .motion.errors import MotionModelError
from .motion.library import list_motion_models
from .motion.safe_load import SAFETENSORS_SUFFIXES, load_weights_file
from .patches import Patch

_ROLE_SUFFIXES = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".alpha", "alpha"),
)
_PREFIXES = ("lora_unet_", "unet.", "base_model.model.")
# kohya (SD1/SDXL), diffusers and PEFT names of text-encoder LoRA weights
_TEXT_ENCODER_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "text_encoder.", "text_encoder_2.", "te.", "te1.", "te2.")
_PROCESSOR_LAYER = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora\.")


class Gate(Protocol):
    """Anything with an ``active`` flag, e.g. the motion modules' ``T2VSwitch``."""

    active: bool


class AlwaysOn:
    """The gate of a LoRA on modules that only run in T2V passes anyway (a T2V-only UNet, motion modules)."""

    active = True


@dataclass
class LoraWeights:
    """One layer's low-rank pair as stored in the file; ``source`` is one of its keys, for messages."""

    source: str
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def multiplier(self) -> float:
        """alpha/rank; a file without alphas means alpha = rank (no rescaling), as in PEFT and kohya."""
        return 1.0 if self.alpha is None else self.alpha / self.rank


def _split_key(key: str) -> tuple[str, str] | None:
    """(layer name with underscores for dots, role) for a UNet LoRA key; None when not one."""
    key = _PROCESSOR_LAYER.sub(lambda m: f".{m[1]}.0.lora." if m[1] == "to_out" else f".{m[1]}.lora.", key)
    for suffix, role in _ROLE_SUFFIXES:
        if key.endswith(suffix):
            stem = key[: -len(suffix)]
            prefix = next((p for p in _PREFIXES if stem.startswith(p)), "")
            return stem[len(prefix):].replace(".", "_"), role
    return None


def _examples(names) -> str:
    return ", ".join(sorted(names)[:3])


def not_a_unet_lora(names) -> str | None:
    """Why a file with these tensor names is not a LoRA for the UNet alone (None when it is one).

    Checked before anything is matched, so a wrong pick gets a reason a user can act on: a motion
    module, a motion LoRA (it changes the motion modules) and a checkpoint LoRA with text-encoder
    weights each look different from AnimateLCM's t2v LoRA.
    """
    names = list(names)
    motion = [name for name in names if ".motion_modules." in name or name.startswith("motion_modules.")]
    if motion:
        if any(_split_key(name) for name in motion):
            return "is a motion LoRA (it changes the motion modules), not a LoRA for the UNet"
        return "is a motion module, not a LoRA; pick it as the motion model"
    text = [name for name in names if name.startswith(_TEXT_ENCODER_PREFIXES)]
    if text:
        return (f"is not a UNet-only LoRA: it also has text-encoder weights (e.g. {_examples(text)}). Use it in the "
                "prompt as <lora:…>; a T2V LoRA holds UNet weights only, like AnimateLCM's t2v LoRA")
    unknown = [name for name in names if _split_key(name) is None]
    if unknown or not names:
        return f"is not a LoRA: {len(unknown)} of its {len(names)} tensors are not UNet LoRA weights, e.g. {_examples(unknown)}"
    return None


def list_t2v_loras(folders) -> dict[str, Path]:
    """File name → path of the T2V LoRAs in ``folders``: ``.safetensors`` files whose tensor names
    (read from the header alone) make a UNet-only LoRA, and pickle files with "lora" in their name
    (looking inside those would mean loading them)."""
    return {name: path for name, path in list_motion_models(folders).items() if _looks_like_t2v_lora(path)}


def _looks_like_t2v_lora(path: Path) -> bool:
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        return "lora" in path.stem.lower()
    try:
        with safe_open(str(path), framework="pt") as file:
            return not_a_unet_lora(file.keys()) is None
    except (SafetensorError, OSError):
        return False


def resolve_t2v_lora(name: str, folders) -> Path:
    """The file a T2V LoRA name stands for; any weights file in ``folders`` so that a wrong pick is
    explained by ``load_t2v_lora`` rather than reported missing."""
    available = list_motion_models(folders)
    if name not in available:
        raise MotionModelError(f"T2V LoRA {name!r} not found in the LoRA folders ({', '.join(map(str, folders))})")
    return available[name]


def load_t2v_lora(path: Path) -> dict[str, torch.Tensor]:
    """A T2V LoRA's tensors, refused with the reason when the file is not a UNet-only LoRA."""
    state_dict = load_weights_file(path)
    problem = not_a_unet_lora(state_dict)
    if problem:
        raise MotionModelError(f"T2V LoRA {Path(path).name!r} {problem}")
    return state_dict


def parse_lora(state_dict: dict[str, torch.Tensor]) -> dict[str, LoraWeights]:
    """Group a LoRA state dict by layer, keyed by the layer's diffusers name with ``_`` for ``.``.

    Using the underscore form for every layout makes kohya names (which lost their dots) and
    dotted diffusers/PEFT names meet in one namespace.
    """
    problem = not_a_unet_lora(state_dict)
    if problem:
        raise ValueError(problem)
    layers: dict[str, LoraWeights] = {}
    for key, tensor in state_dict.items():
        name, role = _split_key(key)
        weights = layers.setdefault(name, LoraWeights(source=key))
        if role == "alpha":
            weights.alpha = float(tensor)
        else:
            setattr(weights, role, tensor)
    incomplete = sorted(w.source for w in layers.values() if w.down is None or w.up is None)
    if incomplete:
        raise ValueError(f"{len(incomplete)} LoRA layers lack a down or up weight, e.g. {', '.join(incomplete[:5])}")
    return layers


def diffusers_to_ldm_names(unet: nn.Module) -> dict[str, str]:
    """diffusers parameter name → the ldm UNet's parameter name, from diffusers' converter run over names."""
    from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint

    blocks = unet.num_res_blocks
    layers_per_block = blocks if isinstance(blocks, int) else blocks[0]
    names = {LDM_UNET_KEY + name: name for name in unet.state_dict()}
    return convert_ldm_unet_checkpoint(names, {"layers_per_block": layers_per_block})


def lora_target_layers(unet: nn.Module) -> dict[str, nn.Module]:
    """The UNet's Linear/Conv2d layers keyed by diffusers module name, whatever the UNet's own naming."""
    if hasattr(unet, "input_blocks"):
        modules = {
            name.removesuffix(".weight"): unet.get_submodule(ldm_name.removesuffix(".weight"))
            for name, ldm_name in diffusers_to_ldm_names(unet).items()
            if name.endswith(".weight")
        }
    else:
        modules = dict(unet.named_modules())
    return {name: module for name, module in modules.items() if isinstance(module, nn.Conv2d) or _is_linear(module)}


def _is_linear(module: nn.Module) -> bool:
    """torch's Linear, or a host's own (Forge's ``operations.Linear`` is a bare Module with the same fields)."""
    return isinstance(module, nn.Linear) or (hasattr(module, "in_features") and hasattr(module, "out_features"))


def _fit_to_layer(layer: nn.Module, weights: LoraWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """down/up shaped for ``layer`` (2-D pairs on 1x1 convs and 1x1 pairs on linears are both seen)."""
    down, up = weights.down, weights.up
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError(f"LoRA on grouped convolution {weights.source} is not supported")
        down = down if down.ndim == 4 else down[:, :, None, None]
        up = up if up.ndim == 4 else up[:, :, None, None]
        expected_down = (weights.rank, layer.in_channels, *layer.kernel_size)
        expected_up = (layer.out_channels, weights.rank, 1, 1)
    else:
        down = down.flatten(1) if down.ndim == 4 else down
        up = up.flatten(1) if up.ndim == 4 else up
        expected_down = (weights.rank, layer.in_features)
        expected_up = (layer.out_features, weights.rank)
    if tuple(down.shape) != expected_down or tuple(up.shape) != expected_up:
        raise ValueError(
            f"LoRA {weights.source}: down {tuple(weights.down.shape)} / up {tuple(weights.up.shape)} do not fit "
            f"{type(layer).__name__} expecting {expected_down} / {expected_up}"
        )
    return down, up


def _placed_like(layer: nn.Module, down: torch.Tensor, up: torch.Tensor,
                 store_on: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair in the layer's dtype, on ``store_on`` or else the layer's device (so a call does not convert it)."""
    reference = layer.weight
    # fp8/NF4/GGUF-stored weights: keep the pair in float32 (it is cast to the activations' dtype per call)
    dtype = reference.dtype if reference.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float32
    device = store_on if store_on is not None else reference.device
    return down.to(device, dtype), up.to(device, dtype)


def lora_fit_problem(unet: nn.Module, state_dict: dict[str, torch.Tensor]) -> str | None:
    """Why this LoRA cannot be hooked onto ``unet`` (None when every layer fits); copies nothing."""
    try:
        GatedLora.match(unet, parse_lora(state_dict), place=False)
    except ValueError as error:
        return str(error)
    return None


@dataclass(frozen=True)
class LoraTarget:
    """One UNet layer and the low-rank pair added to its output."""

    name: str
    layer: nn.Module
    down: torch.Tensor
    up: torch.Tensor
    multiplier: float


class GatedLora(Patch):
    """A LoRA hooked onto a UNet that only acts while ``gate.active``; ``remove()`` restores the UNet.

    ``scale`` is the user's strength (the paper uses 0.8 for AnimateLCM's t2v LoRA) and may be
    changed while installed. ``store_on`` (the CPU, on a low-VRAM host) keeps the pairs there; each
    call then copies them to the activations' device for that call only.
    """

    what = "the T2V LoRA"

    def __init__(self, unet: nn.Module, state_dict: dict[str, torch.Tensor] | None, gate: Gate, scale: float = 1.0,
                 store_on: torch.device | None = None, *, layers: dict[str, LoraWeights] | None = None):
        """``state_dict`` is a UNet LoRA file's tensors; or ``layers``, pairs already grouped by layer
        (a motion LoRA, which ``parse_lora`` refuses as a UNet LoRA)."""
        super().__init__()
        self.gate = gate
        self.scale = scale
        self.targets = self.match(unet, layers if layers is not None else parse_lora(state_dict), store_on=store_on)

    @staticmethod
    def match(unet: nn.Module, layers: dict[str, LoraWeights], place: bool = True,
              store_on: torch.device | None = None) -> list[LoraTarget]:
        """Each LoRA layer's UNet layer and its shape-checked pair (moved to the layer when ``place``)."""
        by_underscored = {name.replace(".", "_"): (name, module) for name, module in lora_target_layers(unet).items()}
        unmatched = sorted(weights.source for key, weights in layers.items() if key not in by_underscored)
        if unmatched:
            raise ValueError(
                f"{len(unmatched)} of {len(layers)} LoRA layers match no Linear/Conv2d layer of this UNet, "
                f"e.g. {', '.join(unmatched[:5])}"
            )
        targets = []
        for key, weights in sorted(layers.items()):
            name, layer = by_underscored[key]
            down, up = _fit_to_layer(layer, weights)
            if place:
                down, up = _placed_like(layer, down, up, store_on)
            targets.append(LoraTarget(name, layer, down, up, weights.multiplier))
        return targets

    def _install(self) -> None:
        for target in self.targets:
            self._undo.append(target.layer.register_forward_hook(self._hook(target), with_kwargs=True).remove)

    def _hook(self, target: LoraTarget):
        def add_low_rank_update(layer, args, kwargs, output):
            if not self.gate.active or self.scale == 0:
                return None
            x = args[0] if args else kwargs["input"]
            down = target.down.to(x.device, x.dtype)
            up = target.up.to(x.device, x.dtype)
            if isinstance(layer, nn.Conv2d):
                update = F.conv2d(F.conv2d(x, down, None, layer.stride, layer.padding, layer.dilation), up)
            else:
                update = F.linear(F.linear(x, down), up)
            return output + (update * (self.scale * target.multiplier)).to(output.dtype)

        return add_low_rank_update
