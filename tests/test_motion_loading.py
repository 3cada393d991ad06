"""Motion-model loading: safe reading, detection, conversion to diffusers, on files in the real layouts.

Files are built by motion_files.py from the committed spec (data/motion_module_layouts_spec.json),
scaled down to channels 32/64/128 with the real block structure. The last test checks the spec
against the full published layouts in ../shared/data when that folder exists.
"""
from __future__ import annotations

import builtins
import json
import pickle
from pathlib import Path

import pytest
import torch

import motion_files
from lib_elevator.motion import (
    MotionKind,
    MotionModelError,
    check_fits_unet,
    describe_motion_lora,
    describe_motion_module,
    load_motion_adapter,
    load_weights_file,
)
from lib_elevator.motion.detect import animatediff_naming
from lib_elevator.motion.convert import diffusers_entries, empty_motion_adapter, layout_problems, tensor_shapes

SHARED_LAYOUTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "motion_module_layouts.json"
SD15_CHANNELS = (320, 640, 1280, 1280)
TINY_SD15_CHANNELS = (32, 64, 128, 128)
SDXL_CHANNELS = (320, 640, 1280)
# base model -> (full-size block channels, text width)
BASE_SHAPES = {"SD1.5": (SD15_CHANNELS, 768), "SDXL": (SDXL_CHANNELS, 2048)}

# kind -> (detected kind, has mid block, pe rows, pe stored, base model)
SUPPORTED = {
    "animatediff_v1": (MotionKind.ANIMATEDIFF_V1, False, 24, True, "SD1.5"),
    "animatediff_v2": (MotionKind.ANIMATEDIFF_V2, True, 32, True, "SD1.5"),
    "animatediff_v3": (MotionKind.ANIMATEDIFF_V3, False, 32, True, "SD1.5"),
    "animatelcm_t2v": (MotionKind.ANIMATELCM_T2V, True, 64, False, "SD1.5"),
    "animatediff_sdxl_beta": (MotionKind.ANIMATEDIFF_SDXL_BETA, False, 32, True, "SDXL"),
    "hotshotxl": (MotionKind.HOTSHOT_XL, False, 24, True, "SDXL"),
}
# kind -> what the refusal must name
UNSUPPORTED = {
    "animatelcm_t2v_lora": r"LoRA for the image UNet \(like AnimateLCM",
    "animatediff_v3_adapter_lora": r"LoRA .* v3 domain adapter",
}
NOT_SUPPORTED_YET = r"not supported as a motion module \(yet\)"
# kind -> layout the motion-LoRA detector reports
MOTION_LORAS = {"animatediff_v2_motion_lora": "original", "animatediff_v2_motion_lora_diffusers": "diffusers"}
NOT_A_MOTION_MODULE = r"motion LoRA \(an AnimateDiff v2 camera-motion LoRA.*not a motion module"
V2_MOTION_LORA_LAYERS = 21 * 2 * 4


@pytest.fixture(scope="session")
def written(tmp_path_factory):
    """Scaled-down files, written once per (kind, suffix): returns (path, tensors written)."""
    folder = tmp_path_factory.mktemp("motion_files")
    cache = {}

    def write(kind: str, suffix: str):
        if (kind, suffix) not in cache:
            path = folder / f"{kind}{suffix}"
            cache[kind, suffix] = path, motion_files.write_kind(kind, path)
        return cache[kind, suffix]

    return write


def native_suffix(kind: str) -> str:
    return "." + motion_files.spec()["kinds"][kind]["container"]


def assert_adapter_holds(adapter, tensors) -> None:
    """Every adapter entry comes from the file, bit-identical; pe is the sinusoid table (fp32 angles: ~4e-6 off)."""
    state = adapter.state_dict()
    weights = {motion_files.diffusers_name(n): t for n, t in tensors.items() if not motion_files.is_pe(n)}
    pe_names = {n for n in state if n.endswith(".pos_embed.pe")}
    assert set(state) == set(weights) | pe_names
    for name, tensor in weights.items():
        assert torch.equal(state[name], tensor), name
    for name in pe_names:
        _, length, channels = state[name].shape
        assert torch.allclose(state[name].double(), motion_files.sinusoid_table(length, channels), atol=1e-5)
    for name, stored in tensors.items():
        if motion_files.is_pe(name):
            assert torch.allclose(state[motion_files.diffusers_pe_name(name)], stored, atol=1e-5)
    assert not any(t.is_meta for t in state.values())


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("kind", SUPPORTED)
def test_each_supported_kind_is_detected_and_loaded_intact(written, kind, suffix):
    path, tensors = written(kind, suffix)
    adapter, info = load_motion_adapter(path)

    expected_kind, has_mid_block, pe_length, pe_stored, base_model = SUPPORTED[kind]
    assert info.kind is expected_kind
    assert (info.has_mid_block, info.positional_encoding_length, info.positional_encoding_stored) == (
        has_mid_block,
        pe_length,
        pe_stored,
    )
    assert info.block_out_channels == tuple(c // motion_files.TINY_SCALE for c in BASE_SHAPES[base_model][0])
    assert (info.motion_modules_per_down_block, info.motion_modules_per_up_block) == (2, 3)
    assert (info.base_model, info.attention_heads, info.unet_cross_attention_dim) == (base_model, 8, None)
    assert (adapter.mid_block is not None) == has_mid_block
    assert_adapter_holds(adapter, tensors)


def test_converted_adapter_runs_a_motion_module(written):
    adapter, _ = load_motion_adapter(written("animatediff_v2", ".ckpt")[0])
    frames, channels = 6, TINY_SD15_CHANNELS[0]
    hidden = torch.randn(2 * frames, channels, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = adapter.down_blocks[0].motion_modules[0](hidden, num_frames=frames)
    assert out.shape == hidden.shape and torch.isfinite(out).all()


def test_fp16_file_loads_as_fp16_with_matching_positional_encodings(written, tmp_path):
    _, tensors = written("animatediff_v2", ".ckpt")
    half = {name: tensor.half() for name, tensor in tensors.items()}
    adapter, _ = load_motion_adapter(motion_files.save_weights(half, tmp_path / "mm_fp16.safetensors"))
    assert {t.dtype for t in adapter.state_dict().values()} == {torch.float16}


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("kind", UNSUPPORTED)
def test_unsupported_layouts_are_refused_by_name(written, kind, suffix):
    path, _ = written(kind, suffix)
    with pytest.raises(MotionModelError, match=NOT_SUPPORTED_YET) as refusal:
        load_motion_adapter(path)
    assert path.name in str(refusal.value)
    assert refusal.match(UNSUPPORTED[kind])


def full_size_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    return {entry.name: entry.shape for entry in motion_files.layout(kind, scale=1)}


@pytest.mark.parametrize(
    "module_kind, unet, both_sides",
    [
        ("tiny", ((32, 64, 128), 32, 2), r"channels 32/64/128/128.*shaped differently \(block channels 32/64/128,"),
        ("tiny", (TINY_SD15_CHANNELS, 32, 1), r"2 layers per block.*1 layers per block"),
        ("full", (SD15_CHANNELS, 1024, 2), r"made for SD1\.5 .*text width 768.*SD2-shaped .*text width 1024"),
        ("full", ((320, 640, 1280), 2048, 2), r"made for SD1\.5 .*320/640/1280/1280.*SDXL-shaped .*320/640/1280,"),
    ],
)
def test_mismatched_unet_is_refused_in_one_message_naming_both_sides(written, module_kind, unet, both_sides):
    if module_kind == "tiny":
        info = load_motion_adapter(written("animatediff_v2", ".ckpt")[0])[1]
    else:
        info = describe_motion_module(full_size_shapes("animatediff_v2"))
    with pytest.raises(MotionModelError, match=both_sides):
        check_fits_unet(info, *unet)


def test_matching_unet_is_accepted(written):
    check_fits_unet(describe_motion_module(full_size_shapes("animatediff_v3")), SD15_CHANNELS, 768, 2)
    tiny_info = load_motion_adapter(written("animatediff_v3", ".ckpt")[0])[1]
    check_fits_unet(tiny_info, list(TINY_SD15_CHANNELS), 32, 2)


class RunsCode:
    """A pickle payload that creates ``marker`` when unpickled: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_the_malicious_payload_is_live(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps({"weight": RunsCode(marker)}))
    assert marker.exists()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_malicious_ckpt_runs_nothing_and_is_refused(tmp_path, zip_format):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    checkpoint = {"weight": torch.zeros(2), "payload": RunsCode(marker)}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    refusal = r"Refused to load 'evil\.ckpt'.*\('(builtins\.)?exec'\).*Nothing from it was run"
    with pytest.raises(MotionModelError, match=refusal):
        load_motion_adapter(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_truncated_file_is_reported_as_damaged(written, tmp_path, suffix):
    source, _ = written("animatediff_v3", suffix)
    path = motion_files.truncated_copy(source, tmp_path / f"cut{suffix}")
    with pytest.raises(MotionModelError, match=rf"Cannot read 'cut{suffix}': the file is damaged or incomplete"):
        load_motion_adapter(path)


def assert_motion_lora_fits(info, adapter, layout: str, rank: int) -> None:
    """Every LoRA pair names a Linear of the v2 adapter with the LoRA's width on both sides."""
    assert (info.layout, info.rank, len(info.pairs)) == (layout, rank, V2_MOTION_LORA_LAYERS)
    layers = dict(adapter.named_modules())
    for layer, width in info.widths.items():
        assert (layers[layer].in_features, layers[layer].out_features) == (width, width), layer


@pytest.mark.parametrize("kind", MOTION_LORAS)
def test_motion_loras_are_detected_from_their_keys_and_refused_as_motion_modules(written, kind):
    path, tensors = written(kind, native_suffix(kind))
    with pytest.raises(MotionModelError, match=NOT_A_MOTION_MODULE) as refusal:
        load_motion_adapter(path)
    assert path.name in str(refusal.value)
    adapter, _ = load_motion_adapter(written("animatediff_v2", ".ckpt")[0])
    assert_motion_lora_fits(describe_motion_lora(tensor_shapes(tensors)), adapter, MOTION_LORAS[kind], rank=6)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_empty_file_is_reported_as_damaged(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.touch()
    with pytest.raises(MotionModelError, match=r"damaged or incomplete"):
        load_weights_file(path)


def wrapped_checkpoints(tensors):
    return {
        "state_dict_wrapper": {"state_dict": dict(tensors), "epoch": 3, "global_step": 1200},
        "animatediff_config_entry": {**tensors, "animatediff_config": {"use_inflated_groupnorm": True, "heads": 8}},
        "train_py_ddp_full_unet": {
            "state_dict": {**{f"module.{n}": t for n, t in tensors.items()}, "module.conv_in.weight": torch.ones(4)},
            "epoch": 1,
        },
    }


@pytest.mark.parametrize("variant", ["state_dict_wrapper", "animatediff_config_entry", "train_py_ddp_full_unet"])
def test_wrapped_checkpoints_and_extra_entries_load(written, tmp_path, variant):
    _, tensors = written("animatediff_v3", ".ckpt")
    path = tmp_path / f"{variant}.ckpt"
    torch.save(wrapped_checkpoints(tensors)[variant], path)
    adapter, info = load_motion_adapter(path)
    assert info.kind is MotionKind.ANIMATEDIFF_V3
    assert_adapter_holds(adapter, tensors)


def test_v1_and_v3_without_stored_pe_cannot_be_told_apart(written, tmp_path):
    _, tensors = written("animatediff_v3", ".ckpt")
    stripped = {n: t for n, t in tensors.items() if not motion_files.is_pe(n)}
    path = motion_files.save_weights(stripped, tmp_path / "no_pe.safetensors")
    with pytest.raises(MotionModelError, match=r"'no_pe\.safetensors'.*v1 and v3 cannot be told apart"):
        load_motion_adapter(path)


def test_non_standard_positional_encodings_are_refused(written, tmp_path):
    _, tensors = written("animatediff_v1", ".ckpt")
    altered = dict(tensors)
    pe_name = next(n for n in altered if motion_files.is_pe(n))
    altered[pe_name] = altered[pe_name] + 0.1
    with pytest.raises(MotionModelError, match=r"not the standard sinusoidal table"):
        load_motion_adapter(motion_files.save_weights(altered, tmp_path / "odd_pe.safetensors"))


def test_missing_weight_is_refused_with_its_name(written, tmp_path):
    _, tensors = written("animatediff_v2", ".ckpt")
    gone = "up_blocks.3.motion_modules.2.temporal_transformer.proj_out.bias"
    partial = {n: t for n, t in tensors.items() if n != gone}
    with pytest.raises(MotionModelError, match=r"AnimateDiff v2 layout: missing 1 \(e\.g\. up_blocks\.3"):
        load_motion_adapter(motion_files.save_weights(partial, tmp_path / "partial.safetensors"))


def test_a_regular_checkpoint_is_not_taken_for_a_motion_module(tmp_path):
    spatial_only = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4)}
    path = motion_files.save_weights(spatial_only, tmp_path / "sd.ckpt")
    with pytest.raises(MotionModelError, match=r"holds no AnimateDiff motion-module weights"):
        load_motion_adapter(path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.ckpt", None, r"no such file"),
        ("weights.gguf", b"GGUF", r"unknown file type '\.gguf'"),
    ],
)
def test_unreadable_paths_are_explained(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MotionModelError, match=message):
        load_motion_adapter(path)


def test_diffusers_folder_loads_offline_and_its_weights_file_alone_is_explained(tmp_path):
    from lib_elevator.tiny import tiny_motion_adapter

    original = tiny_motion_adapter()
    original.save_pretrained(tmp_path / "adapter")
    adapter, info = load_motion_adapter(tmp_path / "adapter")
    assert info.kind is MotionKind.DIFFUSERS
    assert (info.block_out_channels, info.attention_heads, info.has_mid_block) == ((32, 64), 2, True)
    expected = original.state_dict()
    assert all(torch.equal(adapter.state_dict()[n], t) for n, t in expected.items())
    with pytest.raises(MotionModelError, match=r"choose the folder"):
        load_motion_adapter(tmp_path / "adapter" / "diffusion_pytorch_model.safetensors")


@pytest.mark.parametrize(
    "config, message",
    [(None, r"has no config\.json"), ({"_class_name": "UNet2DConditionModel"}, r"describes a UNet2DConditionModel")],
)
def test_folders_that_are_not_motion_adapters_are_explained(tmp_path, config, message):
    folder = tmp_path / "not_an_adapter"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MotionModelError, match=rf"folder 'not_an_adapter'.*{message}"):
        load_motion_adapter(folder)


def assert_full_size_layout_is_understood(kind: str, shapes) -> None:
    """Detection and the strict-load layout check, on shapes only (the adapter lives on the meta device)."""
    if kind in MOTION_LORAS:
        with pytest.raises(MotionModelError, match=NOT_A_MOTION_MODULE):
            describe_motion_module(shapes)
        adapter = empty_motion_adapter(describe_motion_module(full_size_shapes("animatediff_v2")))
        assert_motion_lora_fits(describe_motion_lora(shapes), adapter, MOTION_LORAS[kind], rank=64)
        return
    if kind in UNSUPPORTED:
        with pytest.raises(MotionModelError, match=NOT_SUPPORTED_YET):
            describe_motion_module(shapes)
        return
    info = describe_motion_module(shapes)
    assert info.kind is SUPPORTED[kind][0]
    assert (info.block_out_channels, info.unet_cross_attention_dim) == BASE_SHAPES[SUPPORTED[kind][4]]
    adapter = empty_motion_adapter(info)
    assert layout_problems(tensor_shapes(adapter.state_dict()), diffusers_entries(animatediff_naming(shapes))) is None


@pytest.mark.parametrize("kind", motion_files.kinds())
def test_full_size_layouts_from_the_spec_are_understood(kind):
    assert_full_size_layout_is_understood(kind, full_size_shapes(kind))


@pytest.mark.skipif(not SHARED_LAYOUTS.exists(), reason="needs ../shared/data/motion_module_layouts.json")
def test_spec_reproduces_every_published_layout_at_full_size():
    published = json.loads(SHARED_LAYOUTS.read_text())["kinds"]
    assert set(published) == set(motion_files.kinds())
    for kind, layout in published.items():
        real = [(name, tuple(entry["shape"]), entry["dtype"]) for name, entry in layout["keys"].items()]
        ours = [(entry.name, entry.shape, entry.dtype) for entry in motion_files.layout(kind, scale=1)]
        if native_suffix(kind) == ".ckpt":
            assert ours == real, kind  # names, shapes, dtypes and state_dict order
        else:
            assert sorted(ours) == sorted(real), kind  # safetensors headers carry no meaningful order
        assert_full_size_layout_is_understood(kind, {name: shape for name, shape, _ in real})
