"""Turn a motion-model file or folder into a diffusers ``MotionAdapter``.

Names are mapped by diffusers' own single-file converter (``convert_animatediff_checkpoint_to_diffusers``,
a pure function on a state dict: no download). The config is built from the detected structure
instead of letting ``MotionAdapter.from_single_file`` fetch one from the Hub, which fails offline
and misreads AnimateLCM as an SD v1 checkpoint. The adapter is built on the meta device and adopts
the file's tensors as they are (``assign=True``), so a 1.8 GB module is held once, not twice.

The only entries a file may lack are diffusers' ``pos_embed.pe`` buffers: diffusers rebuilds them
from the sinusoid formula and its converter drops the file's ``pos_encoder.pe`` copies. Where a file
stores them they are checked to be that same table, so nothing stored is silently replaced.
Hotshot-XL files are renamed to AnimateDiff's naming first; their temporal norms work per frame.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from diffusers import MotionAdapter
from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers
from diffusers.models.embeddings import SinusoidalPositionalEmbedding
from diffusers.utils import is_accelerate_available

from .detect import MotionKind, MotionModuleInfo, animatediff_naming, describe_diffusers_config, describe_motion_module
from .groupnorm import per_frame_norms
from .errors import MotionModelError
from .safe_load import load_weights_file

RELEASED_NORM_GROUPS = 32
REBUILT_BUFFER_SUFFIX = ".pos_embed.pe"
# Rounding a [-1, 1] table to fp16 moves it by at most ~5e-4; a different table differs by far more.
PE_TOLERANCE = 2e-3
_STORED_PE_TAIL = re.compile(r"attention_blocks\.\d+\.pos_encoder\.pe$")


def load_motion_adapter(path: str | os.PathLike, check=None) -> tuple[MotionAdapter, MotionModuleInfo]:
    """A ready ``MotionAdapter`` (eval mode, CPU) and what it is, from a motion-model file or diffusers folder.

    ``check(info)`` runs once the kind is known and before the adapter is built; its
    ``MotionModelError`` comes back naming the file.
    """
    path = Path(path)
    if path.is_dir():
        return load_diffusers_folder(path, check)
    state = load_weights_file(path)
    try:
        info = describe_motion_module(tensor_shapes(state))
        if check is not None:
            check(info)
        return adapter_from_checkpoint(state, info), info
    except MotionModelError as error:
        raise MotionModelError(f"Cannot use '{path.name}' as a motion module. {error}") from error


def tensor_shapes(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in tensors.items()}


def motion_adapter_config(info: MotionModuleInfo) -> dict:
    """``MotionAdapter`` arguments that reproduce the detected module (GroupNorm groups: 32 in every release)."""
    return dict(
        block_out_channels=info.block_out_channels,
        motion_layers_per_block=info.motion_modules_per_down_block,
        motion_mid_block_layers_per_block=1,
        motion_num_attention_heads=info.attention_heads,
        motion_norm_num_groups=RELEASED_NORM_GROUPS,
        motion_max_seq_length=info.positional_encoding_length,
        use_motion_mid_block=info.has_mid_block,
    )


def diffusers_entries(state: Mapping[str, object]) -> dict[str, object]:
    """Motion-module entries under ``MotionAdapter`` names; other UNet weights (training checkpoints) are dropped."""
    motion_entries = {name: value for name, value in state.items() if ".motion_modules." in name}
    return convert_animatediff_checkpoint_to_diffusers(motion_entries)


def layout_problems(expected: Mapping[str, Sequence[int]], given: Mapping[str, Sequence[int]]) -> str | None:
    """What keeps ``given`` from loading strictly into ``expected``; rebuilt pe buffers may be absent."""
    missing = [n for n in expected if n not in given and not n.endswith(REBUILT_BUFFER_SUFFIX)]
    unexpected = [n for n in given if n not in expected]
    reshaped = [n for n in given if n in expected and tuple(given[n]) != tuple(expected[n])]
    problems = [
        f"{label} {len(names)} (e.g. {names[0]})"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped))
        if names
    ]
    return "; ".join(problems) or None


def empty_motion_adapter(info: MotionModuleInfo) -> MotionAdapter:
    """The adapter's structure without memory behind it (meta device)."""
    return motion_adapter_for(info, device="meta")


def motion_adapter_for(info: MotionModuleInfo, device="meta") -> MotionAdapter:
    """A ``MotionAdapter`` with ``info``'s structure on ``device``; Hotshot-XL's temporal norms work per frame."""
    with torch.device(device):
        adapter = MotionAdapter(**motion_adapter_config(info))
        if info.kind is MotionKind.HOTSHOT_XL:
            per_frame_norms(adapter)
        return adapter


def adapter_from_checkpoint(state: Mapping[str, torch.Tensor], info: MotionModuleInfo) -> MotionAdapter:
    """Load original-layout weights strictly into a ``MotionAdapter`` built for ``info``."""
    state = animatediff_naming(state)
    converted = diffusers_entries(state)
    adapter = empty_motion_adapter(info)
    problems = layout_problems(tensor_shapes(adapter.state_dict()), tensor_shapes(converted))
    if problems:
        raise MotionModelError(f"Its weights do not match the {info.kind.label} layout: {problems}.")
    dtype = shared_float_dtype(converted.values())
    adapter.load_state_dict({name: t.to(dtype) for name, t in converted.items()}, strict=False, assign=True)
    rebuild_positional_encodings(adapter, dtype)
    check_stored_positional_encodings(state, adapter)
    return adapter.eval()


def shared_float_dtype(tensors) -> torch.dtype:
    """The file's dtype (fp16 re-releases stay fp16); float32 when a file mixes dtypes."""
    dtypes = {tensor.dtype for tensor in tensors}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def rebuild_positional_encodings(adapter: MotionAdapter, dtype: torch.dtype) -> None:
    """Fill the meta ``pe`` buffers with diffusers' own sinusoidal table, as its constructor would."""
    for module in adapter.modules():
        if isinstance(module, SinusoidalPositionalEmbedding) and module.pe.is_meta:
            _, length, channels = module.pe.shape
            module.pe = SinusoidalPositionalEmbedding(channels, length).pe.to(dtype)


def stored_pe_name_in_diffusers(name: str) -> str:
    """Both stored tables of a block (``attention_blocks.{0,1}.pos_encoder.pe``) map to its one ``pos_embed.pe``."""
    return _STORED_PE_TAIL.sub("pos_embed.pe", name.replace(".temporal_transformer", ""))


def check_stored_positional_encodings(state: Mapping[str, torch.Tensor], adapter: MotionAdapter) -> None:
    """Refuse a file whose stored pe tables differ from the ones diffusers rebuilt (they would be lost)."""
    rebuilt = adapter.state_dict()
    for name, stored in state.items():
        if ".motion_modules." not in name or not _STORED_PE_TAIL.search(name):
            continue
        table = rebuilt[stored_pe_name_in_diffusers(name)]
        if not torch.allclose(stored.float(), table.float(), atol=PE_TOLERANCE, rtol=0):
            raise MotionModelError(
                f"Its positional encodings ({name}) are not the standard sinusoidal table that diffusers uses, "
                "so they would be replaced; this file was modified in a way that is not supported."
            )


def load_diffusers_folder(folder: Path, check=None) -> tuple[MotionAdapter, MotionModuleInfo]:
    """A diffusers ``MotionAdapter`` folder (config.json + weights), read offline."""
    try:
        info = describe_diffusers_config(read_adapter_config(folder))
        if check is not None:
            check(info)
        adapter = MotionAdapter.from_pretrained(
            folder, local_files_only=True, low_cpu_mem_usage=is_accelerate_available()
        )
    except MotionModelError as error:
        raise MotionModelError(f"Cannot use folder '{folder.name}' as a motion module. {error}") from error
    except (OSError, ValueError, RuntimeError) as error:
        raise MotionModelError(
            f"Cannot use folder '{folder.name}' as a motion module: diffusers could not load it ({error})."
        ) from error
    return adapter.eval(), info


def read_adapter_config(folder: Path) -> dict:
    """config.json of a diffusers folder, checked to describe a ``MotionAdapter``."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise MotionModelError(
            "It has no config.json; a diffusers MotionAdapter folder holds config.json and "
            "diffusion_pytorch_model.safetensors."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise MotionModelError(f"Its config.json cannot be read ({error}).") from error
    if not isinstance(config, dict) or config.get("_class_name") != "MotionAdapter":
        found = config.get("_class_name") if isinstance(config, dict) else type(config).__name__
        raise MotionModelError(f"Its config.json describes a {found}, not a MotionAdapter.")
    return config
