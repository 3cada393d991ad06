"""Motion-model files in the real key layouts, scaled down, built from data/motion_module_layouts_spec.json.

Every kind keeps its real structure: number of UNet levels, modules per level, mid block, pe rows,
names, tensor ranks, dtypes and key order. Only widths shrink: channels, LoRA ranks and the text
width are divided by ``scale``. The full block structure is kept (rather than tiny.py's two levels)
because the number of levels is what tells SD1.5 (4) from SDXL (3) apart; at scale 10 the channels
are 32/64/128, which still fit 32-group GroupNorm and 8 heads. ``scale=1`` gives the real layouts,
as shapes only, so they can be compared with the published key lists without allocating anything.
"""
from __future__ import annotations

import functools
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

SPEC_PATH = Path(__file__).parent / "data" / "motion_module_layouts_spec.json"
TINY_SCALE = 10
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
PE_NAMES = ("pos_encoder.pe", "pos_encoder.positional_encoding")
LORA_ALPHA = 8.0


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    dtype: str


@functools.cache
def spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


def kinds() -> list[str]:
    return list(spec()["kinds"])


def layout(kind: str, scale: int = 1) -> list[Entry]:
    """Every tensor of ``kind``'s file, in file order, with widths divided by ``scale``."""
    kind_spec = spec()["kinds"][kind]
    build = {
        "motion_modules": _motion_module_layout,
        "hotshot_temporal_attentions": _motion_module_layout,
        "kohya_lora": _kohya_lora_layout,
        "attention_processor_lora": _processor_lora_layout,
        "motion_module_lora": _motion_lora_layout,
    }[kind_spec["layout"]]
    entries = build(kind_spec, scale)
    return sorted(entries, key=lambda e: e.name) if kind_spec["container"] == "safetensors" else entries


def _shape(expression: str, channels: int, length: int) -> tuple[int, ...]:
    """'8C,C' -> (8*C, C); 'L' is the positional-encoding length."""
    sizes = []
    for term in expression.split(","):
        if term == "L":
            sizes.append(length)
        elif term.endswith("C"):
            sizes.append(int(term[:-1] or 1) * channels)
        else:
            sizes.append(int(term))
    return tuple(sizes)


def _motion_modules(kind_spec: dict, scale: int):
    """(path prefix, channels) of every motion module in state_dict order: down blocks, up blocks, mid block."""
    levels = spec()["unet_levels"][kind_spec["base_model"]]
    channels = [c // scale for c in levels["block_channels"]]
    blocks = [(f"down_blocks.{i}", c, levels["modules_per_down_block"]) for i, c in enumerate(channels)]
    blocks += [(f"up_blocks.{i}", c, levels["modules_per_up_block"]) for i, c in enumerate(reversed(channels))]
    if kind_spec["mid_block"]:
        blocks.append(("mid_block", channels[-1], 1))
    for block, width, count in blocks:
        for j in range(count):
            yield f"{block}.{kind_spec['module_path'].format(j=j)}", width


def _motion_module_layout(kind_spec: dict, scale: int) -> list[Entry]:
    entries = []
    for module_path, width in _motion_modules(kind_spec, scale):
        for suffix, expression in spec()["motion_module_template"]["keys"]:
            is_pe = suffix.endswith("pos_encoder.pe")
            if is_pe and not kind_spec["pe_stored"]:
                continue
            if is_pe:
                suffix = suffix.replace("pos_encoder.pe", kind_spec["pe_name"])
            shape = _shape(expression, width, kind_spec["pe_length"])
            entries.append(Entry(module_path + suffix, shape, kind_spec["dtype"]))
    return entries


@functools.cache
def _sd15_unet(scale: int):
    """diffusers' SD1.5 UNet on the meta device (names and shapes only), widths divided by ``scale``."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in spec()["sd15_unet_config"].items() if k != "doc"}
    config["block_out_channels"] = [c // scale for c in config["block_out_channels"]]
    config["cross_attention_dim"] = config["cross_attention_dim"] // scale
    with torch.device("meta"):
        return UNet2DConditionModel(**config)


def _targeted_layers(targets: list[str], scale: int):
    for name, module in _sd15_unet(scale).named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and any(
            name == t or name.endswith("." + t) for t in targets
        ):
            yield name, module


def _kohya_lora_layout(kind_spec: dict, scale: int) -> list[Entry]:
    rank, dtype = kind_spec["rank"] // scale, kind_spec["dtype"]
    entries = []
    for name, layer in _targeted_layers(kind_spec["targets"], scale):
        base = "lora_unet_" + name.replace(".", "_")
        if isinstance(layer, torch.nn.Conv2d):
            down = (rank, layer.in_channels, *layer.kernel_size)
            up = (layer.out_channels, rank, 1, 1)
        else:
            down, up = (rank, layer.in_features), (layer.out_features, rank)
        entries += [
            Entry(f"{base}.alpha", (), dtype),
            Entry(f"{base}.lora_down.weight", down, dtype),
            Entry(f"{base}.lora_up.weight", up, dtype),
        ]
    return entries


def _processor_lora_layout(kind_spec: dict, scale: int) -> list[Entry]:
    rank, dtype = kind_spec["rank"] // scale, kind_spec["dtype"]
    entries = []
    for name, layer in _targeted_layers(kind_spec["targets"], scale):
        attention, target = name.rsplit(".to_", 1)
        base = f"{attention}.processor.to_{target.split('.')[0]}_lora"
        entries += [
            Entry(f"{base}.down.weight", (rank, layer.in_features), dtype),
            Entry(f"{base}.up.weight", (layer.out_features, rank), dtype),
        ]
    return entries


def _motion_lora_layout(kind_spec: dict, scale: int) -> list[Entry]:
    """AnimateDiff v2 motion LoRAs: a rank-r pair on each temporal attention projection of every module."""
    template = spec()["motion_lora_template"]
    rank, dtype = kind_spec["rank"] // scale, kind_spec["dtype"]
    entries = []
    for module_path, width in _motion_modules(kind_spec, scale):
        for attention in range(template["attentions"]):
            for projection in template["projections"]:
                base = f"{module_path}transformer_blocks.0.attention_blocks.{attention}.processor.to_{projection}_lora"
                entries += [Entry(f"{base}.down.weight", (rank, width), dtype), Entry(f"{base}.up.weight", (width, rank), dtype)]
    if kind_spec["naming"] == "diffusers":
        entries = [Entry("unet." + diffusers_name(e.name), e.shape, e.dtype) for e in entries]
    return entries


def sinusoid_table(length: int, channels: int) -> torch.Tensor:
    """pe[0, p, 2i] = sin(p / 10000^(2i/C)), pe[0, p, 2i+1] = cos(same): the table AnimateDiff stores."""
    table = torch.zeros(1, length, channels, dtype=torch.float64)
    for i in range(0, channels, 2):
        angles = torch.arange(length, dtype=torch.float64) / 10000 ** (i / channels)
        table[0, :, i] = torch.sin(angles)
        table[0, :, i + 1] = torch.cos(angles)
    return table


def is_pe(name: str) -> bool:
    return name.endswith(PE_NAMES)


def make_tensors(entries: list[Entry], seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """Seeded random weights for ``entries``; pe tables hold the real sinusoid, LoRA alphas a constant."""
    generator = torch.Generator().manual_seed(seed)
    tensors = OrderedDict()
    for entry in entries:
        if is_pe(entry.name):
            value = sinusoid_table(entry.shape[1], entry.shape[2])
        elif entry.shape == ():
            value = torch.tensor(LORA_ALPHA)
        else:
            fan_in = math.prod(entry.shape[1:])
            value = torch.randn(entry.shape, generator=generator) / math.sqrt(fan_in)
        tensors[entry.name] = value.to(DTYPES[entry.dtype])
    return tensors


def save_weights(checkpoint: dict, path: Path) -> Path:
    """``.safetensors`` (tensors only) or a torch zip pickle for every other suffix."""
    if path.suffix == ".safetensors":
        save_file(dict(checkpoint), path, metadata={"format": "pt"})
    else:
        torch.save(checkpoint, path)
    return path


def write_kind(kind: str, path: Path, scale: int = TINY_SCALE, seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """Write a scaled-down ``kind`` file to ``path`` and return the tensors written."""
    tensors = make_tensors(layout(kind, scale), seed)
    save_weights(tensors, path)
    return tensors


def truncated_copy(source: Path, target: Path) -> Path:
    """The first half of ``source``, as an interrupted download leaves it."""
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


_DIFFUSERS_RENAMES = (
    (".temporal_transformer.", "."),
    (".temporal_attentions.", ".motion_modules."),
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
)


def diffusers_name(name: str) -> str:
    """Where an original-layout weight lives in a diffusers ``MotionAdapter`` (pe tables excluded)."""
    for old, new in _DIFFUSERS_RENAMES:
        name = name.replace(old, new)
    return name


def diffusers_pe_name(name: str) -> str:
    """The one diffusers pe buffer per transformer block that both stored tables of that block map to."""
    head, _ = diffusers_name(name).split(".attn")
    return f"{head}.pos_embed.pe"
