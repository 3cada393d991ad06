"""Tell which motion model a weights file holds from its tensor names and shapes alone.

Released AnimateDiff-family files differ only in structure: v2 and AnimateLCM add a mid-block
motion module, v1 and v3 have identical names and differ only in the length of the stored
positional-encoding tables (24 vs 32 rows), and AnimateLCM stores no tables at all (its code
hard-codes 64 rows). SDXL modules have three UNet levels instead of four: AnimateDiff-SDXL (beta)
uses AnimateDiff's naming with 32-row tables, Hotshot-XL its own naming (``temporal_attentions``)
with 24-row tables, renamed here to AnimateDiff's. Detection works on ``name -> shape`` so it can
run on full-size layouts without allocating them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from ..schedules import ANIMATEDIFF_SCHEDULE, ANIMATEDIFF_SDXL_SCHEDULE, SD_SCHEDULE, VPSchedule
from .errors import MotionModelError

RELEASED_ATTENTION_HEADS = 8
SD15_BLOCK_CHANNELS = (320, 640, 1280, 1280)
BASE_MODEL_BY_LEVELS = {4: "SD1.5", 3: "SDXL"}
SDXL_BLOCK_CHANNELS = (320, 640, 1280)
TEXT_WIDTH_BY_BASE_CHANNELS = {("SD1.5", SD15_BLOCK_CHANNELS): 768, ("SDXL", SDXL_BLOCK_CHANNELS): 2048}
KNOWN_UNETS = {
    (SD15_BLOCK_CHANNELS, 768): "SD1.5",
    (SD15_BLOCK_CHANNELS, 1024): "SD2",
    (SDXL_BLOCK_CHANNELS, 2048): "SDXL",
}

_MOTION_KEY = re.compile(
    r"^(?:(?P<section>down_blocks|up_blocks)\.(?P<block>\d+)|mid_block)"
    r"\.motion_modules\.(?P<module>\d+)\.temporal_transformer\.(?P<inner>.+)$"
)
_STORED_PE = re.compile(r"^transformer_blocks\.\d+\.attention_blocks\.\d+\.pos_encoder\.pe$")
_DIFFUSERS_NAMING = re.compile(r"\.motion_modules\.\d+\.(?:norm|proj_in|proj_out|transformer_blocks)\.")
_HOTSHOT_NAMING = re.compile(r"\.temporal_attentions\.(\d+)\.")
_HOTSHOT_PE = "pos_encoder.positional_encoding"
_PROCESSOR_LORA = re.compile(r"\.processor\.to_(?:q|k|v|out)_lora\.(?:down|up)\.")
_ANY_LORA = re.compile(r"(?:^|[._])lora[._]")
# AnimateDiff v2 camera-motion LoRAs, original naming and diffusers' converted copies ('unet.' prefix).
_MOTION_LORA_KEY = re.compile(
    r"^(?P<diffusers>unet\.)?(?P<block>(?:down_blocks|up_blocks)\.\d+|mid_block)\.motion_modules\.(?P<module>\d+)\."
    r"(?:temporal_transformer\.transformer_blocks\.0\.attention_blocks\.(?P<attention>[01])"
    r"|transformer_blocks\.0\.attn(?P<diffusers_attention>[12]))"
    r"\.processor\.to_(?P<projection>q|k|v|out)_lora\.(?P<side>down|up)\.weight$"
)


class MotionKind(Enum):
    """The motion models this loader knows; ``label`` is the name users know them by."""

    ANIMATEDIFF_V1 = "animatediff_v1"
    ANIMATEDIFF_V2 = "animatediff_v2"
    ANIMATEDIFF_V3 = "animatediff_v3"
    ANIMATELCM_T2V = "animatelcm_t2v"
    ANIMATEDIFF_SDXL_BETA = "animatediff_sdxl_beta"
    HOTSHOT_XL = "hotshotxl"
    DIFFUSERS = "diffusers"

    @property
    def label(self) -> str:
        return _KIND_LABELS[self]


_KIND_LABELS = {
    MotionKind.ANIMATEDIFF_V1: "AnimateDiff v1",
    MotionKind.ANIMATEDIFF_V2: "AnimateDiff v2",
    MotionKind.ANIMATEDIFF_V3: "AnimateDiff v3",
    MotionKind.ANIMATELCM_T2V: "AnimateLCM",
    MotionKind.ANIMATEDIFF_SDXL_BETA: "AnimateDiff-SDXL (beta)",
    MotionKind.HOTSHOT_XL: "Hotshot-XL",
    MotionKind.DIFFUSERS: "diffusers MotionAdapter",
}

# (has mid-block module, stored positional-encoding rows) -> kind; the released files, nothing else.
KIND_BY_MID_BLOCK_AND_STORED_PE = {
    (False, 24): MotionKind.ANIMATEDIFF_V1,
    (False, 32): MotionKind.ANIMATEDIFF_V3,
    (True, 32): MotionKind.ANIMATEDIFF_V2,
    (True, None): MotionKind.ANIMATELCM_T2V,
}
# (Hotshot's own naming, stored positional-encoding rows) -> SDXL kind; neither has a mid-block module.
SDXL_KIND_BY_NAMING_AND_STORED_PE = {
    (False, 32): MotionKind.ANIMATEDIFF_SDXL_BETA,
    (True, 24): MotionKind.HOTSHOT_XL,
}
# The β schedule each motion model was trained with (see shared/data/motion_module_layouts.json):
# SD1.5 modules plain linear, AnimateDiff-SDXL scaled_linear to 0.020, Hotshot-XL SDXL's own.
SCHEDULE_BY_KIND = {
    MotionKind.ANIMATEDIFF_SDXL_BETA: ANIMATEDIFF_SDXL_SCHEDULE,
    MotionKind.HOTSHOT_XL: SD_SCHEDULE,
}
# AnimateLCM stores no table; its PositionalEncoding is hard-coded to 64 rows.
ANIMATELCM_PE_LENGTH = 64


@dataclass(frozen=True)
class MotionModuleInfo:
    """What a motion model is and the UNet it fits.

    ``attention_heads`` cannot be read off the weights (q/k/v are C x C for any head count); every
    released file uses 8, so single files report 8 and diffusers folders report their config.
    ``unet_cross_attention_dim`` is the text width of the base model it was trained with, known
    only for the real SD1.5 channel counts (None for scaled-down or custom layouts).
    """

    kind: MotionKind
    base_model: str
    block_out_channels: tuple[int, ...]
    motion_modules_per_down_block: int
    motion_modules_per_up_block: int
    has_mid_block: bool
    positional_encoding_length: int
    positional_encoding_stored: bool
    attention_heads: int
    unet_cross_attention_dim: int | None

    @property
    def schedule(self) -> VPSchedule:
        """The noise schedule the motion model was trained with (its σ→t map in T2V passes)."""
        if self.kind is MotionKind.DIFFUSERS and self.base_model == "SDXL":
            return ANIMATEDIFF_SDXL_SCHEDULE  # diffusers' SDXL MotionAdapter is the AnimateDiff-SDXL beta
        return SCHEDULE_BY_KIND.get(self.kind, ANIMATEDIFF_SCHEDULE)

    @property
    def frame_pooled_spatial_norms(self) -> bool:
        """Hotshot-XL trained the UNet's ResNet GroupNorms on whole clips (and its own norm per frame)."""
        return self.kind is MotionKind.HOTSHOT_XL

    @property
    def default_solver(self) -> str:
        """AnimateLCM is a consistency model and needs the LCM solver; AnimateDiff modules use DDIM."""
        return "lcm" if self.kind is MotionKind.ANIMATELCM_T2V else "ddim"


def describe_motion_module(shapes: Mapping[str, Sequence[int]]) -> MotionModuleInfo:
    """Describe an original-layout motion module (AnimateDiff or Hotshot-XL naming), or refuse it with the reason."""
    hotshot = any(_HOTSHOT_NAMING.search(name) for name in shapes)
    shapes = animatediff_naming(shapes)
    refuse_other_formats(shapes.keys())
    modules = motion_module_channels(shapes)
    if not modules:
        raise MotionModelError(
            "It holds no AnimateDiff motion-module weights (no 'motion_modules' entries); "
            "it is probably a regular Stable Diffusion checkpoint or another kind of model."
        )
    down_channels, down_counts = level_structure(modules, "down_blocks")
    up_channels, up_counts = level_structure(modules, "up_blocks")
    has_mid_block = _check_mid_block(modules, down_channels)
    _check_levels_mirror(down_channels, down_counts, up_channels, up_counts)
    base_model = BASE_MODEL_BY_LEVELS.get(len(down_channels), f"unknown ({len(down_channels)} UNet levels)")
    pe_length = stored_pe_length(shapes)
    if base_model == "SDXL":
        kind = sdxl_kind(hotshot, has_mid_block, pe_length)
    elif hotshot:
        raise MotionModelError("It uses Hotshot-XL's naming but has 4 UNet levels; Hotshot-XL is an SDXL model.")
    else:
        kind = kind_from_structure(has_mid_block, pe_length)
    return MotionModuleInfo(
        kind=kind,
        base_model=base_model,
        block_out_channels=down_channels,
        motion_modules_per_down_block=down_counts[0],
        motion_modules_per_up_block=up_counts[0],
        has_mid_block=has_mid_block,
        positional_encoding_length=pe_length or ANIMATELCM_PE_LENGTH,
        positional_encoding_stored=pe_length is not None,
        attention_heads=RELEASED_ATTENTION_HEADS,
        unet_cross_attention_dim=TEXT_WIDTH_BY_BASE_CHANNELS.get((base_model, down_channels)),
    )


def animatediff_naming(entries: Mapping[str, object]) -> dict[str, object]:
    """Hotshot-XL's names in AnimateDiff's (``temporal_attentions.j.`` → ``motion_modules.j.temporal_transformer.``,
    ``positional_encoding`` → ``pe``), as ComfyUI-AnimateDiff-Evolved renames them; other names unchanged."""
    renamed = {}
    for name, value in entries.items():
        if _HOTSHOT_NAMING.search(name):
            name = _HOTSHOT_NAMING.sub(r".motion_modules.\1.temporal_transformer.", name)
            name = name.replace(_HOTSHOT_PE, "pos_encoder.pe")
        renamed[name] = value
    return renamed


def sdxl_kind(hotshot: bool, has_mid_block: bool, pe_length: int | None) -> MotionKind:
    """AnimateDiff-SDXL (beta) or Hotshot-XL; any other SDXL structure is refused."""
    kind = None if has_mid_block else SDXL_KIND_BY_NAMING_AND_STORED_PE.get((hotshot, pe_length))
    if kind is None:
        stored = f"{pe_length} frames" if pe_length else "not stored"
        raise MotionModelError(
            "It is an SDXL motion module but neither AnimateDiff-SDXL (beta) nor Hotshot-XL as released "
            f"(naming: {'Hotshot-XL' if hotshot else 'AnimateDiff'}, mid-block module: "
            f"{'yes' if has_mid_block else 'no'}, positional encodings: {stored})."
        )
    return kind


def refuse_other_formats(names) -> None:
    """Name the look-alike files users pick by mistake: LoRAs, diffusers weights."""
    names = list(names)
    if any(_MOTION_LORA_KEY.match(name) for name in names):
        raise MotionModelError(
            "It is a motion LoRA (an AnimateDiff v2 camera-motion LoRA like v2_lora_ZoomIn.ckpt), not a motion "
            "module: pick an AnimateDiff v2 motion module as the motion model and add the LoRA as a motion LoRA."
        )
    for pattern, explanation in _LOOK_ALIKES:
        if any(pattern.search(name) for name in names):
            raise MotionModelError(explanation)


_LOOK_ALIKES = (  # checked in this order: the first match explains the file
    (_PROCESSOR_LORA,
     "It is a LoRA for the image UNet's attention layers (the layout of AnimateDiff's v3 domain "
     "adapter, v3_sd15_adapter.ckpt), not a motion module. LoRA files are not supported as a motion "
     "module (yet)."),
    (_ANY_LORA,
     "It is a LoRA for the image UNet (like AnimateLCM's t2v LoRA, which goes with the AnimateLCM "
     "motion module), not a motion module. LoRA files are not supported as a motion module (yet)."),
    (_DIFFUSERS_NAMING,
     "It holds diffusers MotionAdapter weights, which need their config.json; "
     "choose the folder that contains both files instead of the weights file."),
)


@dataclass(frozen=True)
class MotionLoraInfo:
    """A motion LoRA's layout and what it adapts.

    ``pairs`` maps each adapted layer, named as in diffusers' ``MotionAdapter``
    (``down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q``), to the file's
    (down, up) key names; ``widths`` gives that layer's channels.
    """

    layout: str
    rank: int
    pairs: dict[str, tuple[str, str]]
    widths: dict[str, int]

    @property
    def label(self) -> str:
        return f"AnimateDiff v2 motion LoRA ({self.layout} layout)"


def describe_motion_lora(shapes: Mapping[str, Sequence[int]]) -> MotionLoraInfo:
    """Describe an AnimateDiff v2 motion LoRA from its tensor names and shapes, or refuse the file."""
    halves: dict[str, dict[str, str]] = {}
    layouts, ranks, widths = set(), set(), {}
    for name, shape in shapes.items():
        match = _MOTION_LORA_KEY.match(name)
        if match is None:
            raise MotionModelError(f"It is not an AnimateDiff motion LoRA: {name!r} is not a motion-module LoRA weight.")
        attention = match["diffusers_attention"] or str(int(match["attention"]) + 1)
        projection = "to_out.0" if match["projection"] == "out" else f"to_{match['projection']}"
        layer = f"{match['block']}.motion_modules.{match['module']}.transformer_blocks.0.attn{attention}.{projection}"
        halves.setdefault(layer, {})[match["side"]] = name
        layouts.add("diffusers" if match["diffusers"] else "original")
        rank, width = (shape[0], shape[1]) if match["side"] == "down" else (shape[1], shape[0])
        ranks.add(int(rank))
        widths[layer] = int(width)
    if not halves:
        raise MotionModelError("It holds no motion-LoRA weights.")
    incomplete = sorted(layer for layer, pair in halves.items() if set(pair) != {"down", "up"})
    if incomplete or len(ranks) != 1 or len(layouts) != 1:
        raise MotionModelError(
            "Its motion-LoRA weights are incomplete or inconsistent "
            f"(unpaired: {incomplete[:1] or 'none'}, ranks {sorted(ranks)}, layouts {sorted(layouts)})."
        )
    pairs = {layer: (pair["down"], pair["up"]) for layer, pair in halves.items()}
    return MotionLoraInfo(layout=layouts.pop(), rank=ranks.pop(), pairs=pairs, widths=widths)


def motion_module_channels(shapes: Mapping[str, Sequence[int]]) -> dict[tuple[str, int], dict[int, int]]:
    """Channels of every motion module, read from its GroupNorm: ``{(section, block): {module: C}}``."""
    modules: dict[tuple[str, int], dict[int, int]] = {}
    for name, shape in shapes.items():
        match = _MOTION_KEY.match(name)
        if match is None:
            continue
        section = match["section"] or "mid_block"
        block = int(match["block"] or 0)
        per_block = modules.setdefault((section, block), {})
        if match["inner"] == "norm.weight":
            per_block[int(match["module"])] = int(shape[0])
    return modules


def level_structure(modules, section: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Channels and module count of each block in ``section``, checking blocks and modules are numbered 0..n-1."""
    blocks = sorted(block for found_section, block in modules if found_section == section)
    if blocks != list(range(len(blocks))) or not blocks:
        raise MotionModelError(f"Its motion modules are incomplete: {section} numbered {blocks}.")
    channels, counts = [], []
    for block in blocks:
        per_module = modules[(section, block)]
        if sorted(per_module) != list(range(len(per_module))) or len(set(per_module.values())) != 1:
            raise MotionModelError(f"Its motion modules are incomplete or inconsistent in {section}.{block}.")
        channels.append(next(iter(per_module.values())))
        counts.append(len(per_module))
    return tuple(channels), tuple(counts)


def _check_mid_block(modules, down_channels: tuple[int, ...]) -> bool:
    mid = modules.get(("mid_block", 0))
    if mid is None:
        return False
    if mid != {0: down_channels[-1]}:
        raise MotionModelError("Its mid-block motion module does not match a single module at the deepest level.")
    return True


def _check_levels_mirror(down_channels, down_counts, up_channels, up_counts) -> None:
    """AnimateDiff's up path mirrors the down path with one more module per level (the skip concat)."""
    uniform_down = len(set(down_counts)) == 1
    mirrored = up_channels == down_channels[::-1] and up_counts == tuple(count + 1 for count in down_counts)
    if not (uniform_down and mirrored):
        raise MotionModelError(
            f"Its motion modules have an unrecognised layout: down blocks {down_channels} x {down_counts}, "
            f"up blocks {up_channels} x {up_counts}."
        )


def stored_pe_length(shapes: Mapping[str, Sequence[int]]) -> int | None:
    """Rows of the stored positional-encoding tables ([1, L, C]), or None when the file stores none."""
    lengths = set()
    for name, shape in shapes.items():
        match = _MOTION_KEY.match(name)
        if match and _STORED_PE.match(match["inner"]):
            lengths.add(int(shape[1]))
    if len(lengths) > 1:
        raise MotionModelError(f"Its positional encodings have different lengths ({sorted(lengths)}).")
    return lengths.pop() if lengths else None


def kind_from_structure(has_mid_block: bool, pe_length: int | None) -> MotionKind:
    """The released model with this structure; v1 and v3 differ only in pe length (24 vs 32)."""
    kind = KIND_BY_MID_BLOCK_AND_STORED_PE.get((has_mid_block, pe_length))
    if kind is not None:
        return kind
    if not has_mid_block and pe_length is None:
        raise MotionModelError(
            "It has no mid-block module and stores no positional encodings, so AnimateDiff v1 and v3 "
            "cannot be told apart (the released files store them). Use the original file."
        )
    stored = f"{pe_length} frames" if pe_length else "not stored"
    raise MotionModelError(
        "It is not a released AnimateDiff or AnimateLCM module (mid-block module: "
        f"{'yes' if has_mid_block else 'no'}, positional encodings: {stored})."
    )


def describe_diffusers_config(config: Mapping) -> MotionModuleInfo:
    """Describe a diffusers ``MotionAdapter`` from its config.json."""
    channels = tuple(int(c) for c in config.get("block_out_channels", SD15_BLOCK_CHANNELS))
    base_model = BASE_MODEL_BY_LEVELS.get(len(channels), f"unknown ({len(channels)} UNet levels)")
    layers = _uniform(config.get("motion_layers_per_block", 2), "motion_layers_per_block")
    return MotionModuleInfo(
        kind=MotionKind.DIFFUSERS,
        base_model=base_model,
        block_out_channels=channels,
        motion_modules_per_down_block=layers,
        motion_modules_per_up_block=layers + 1,
        has_mid_block=bool(config.get("use_motion_mid_block", True)),
        positional_encoding_length=int(config.get("motion_max_seq_length", 32)),
        positional_encoding_stored=True,
        attention_heads=_uniform(config.get("motion_num_attention_heads", 8), "motion_num_attention_heads"),
        unet_cross_attention_dim=TEXT_WIDTH_BY_BASE_CHANNELS.get((base_model, channels)),
    )


def _uniform(value, field: str) -> int:
    values = set(value) if isinstance(value, (list, tuple)) else {value}
    if len(values) != 1:
        raise MotionModelError(f"Its config sets a different {field} per level ({value}), which is not supported.")
    return int(values.pop())


def check_fits_unet(
    info: MotionModuleInfo, block_out_channels: Sequence[int], cross_attention_dim: int, layers_per_block: int
) -> None:
    """Refuse a motion model whose UNet differs from the loaded one, in one message naming both sides."""
    channels = tuple(int(c) for c in block_out_channels)
    fits = (
        channels == info.block_out_channels
        and layers_per_block == info.motion_modules_per_down_block
        and info.unet_cross_attention_dim in (None, cross_attention_dim)
    )
    if fits:
        return
    text_width = info.unet_cross_attention_dim or "any"
    made_for = (
        f"{info.base_model} UNets (block channels {_slashed(info.block_out_channels)}, "
        f"{info.motion_modules_per_down_block} layers per block, text width {text_width})"
    )
    unet_family = KNOWN_UNETS.get((channels, cross_attention_dim))
    shaped = f"{unet_family}-shaped" if unet_family else "shaped differently"
    loaded = (
        f"{shaped} (block channels {_slashed(channels)}, {layers_per_block} layers per block, "
        f"text width {cross_attention_dim})"
    )
    raise MotionModelError(
        f"The {info.kind.label} motion module is made for {made_for}, but the loaded model's UNet is {loaded}. "
        "Use a motion module made for the same base model as the checkpoint."
    )


def _slashed(values: Sequence[int]) -> str:
    return "/".join(str(v) for v in values)
