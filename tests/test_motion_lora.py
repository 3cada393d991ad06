"""Motion LoRAs (AnimateDiff v2 camera LoRAs): read in both published layouts, hooked onto the motion modules
only (so only T2V passes change), equal to merging W += weight·up@down, strength 0 = none, several add up,
nothing left behind after a run or an interrupt, and refused for a motion module they do not fit."""
import copy
import re

import pytest
import torch

import motion_files
from lib_elevator.motion import MotionModelError
from lib_elevator.motion.motion_lora import MotionLora, fit_problem, load_motion_lora
from lib_elevator.params import ElevatorParams
from lib_elevator.standalone.cli import main
from lib_elevator.standalone.pipeline import ElevatorPipeline, InjectedMotionT2V, TextEncoder, generate
from test_standalone import cli_args  # model_files (SD1.5-shaped model files on disk) comes from conftest

FRAMES, SIZE, STEPS = 2, 64, 8
PARAMS = dict(frames=FRAMES, refine_at=(6, 3), t2v_steps=2)
_ATTENTION = re.compile(r"^(.*\.motion_modules\.\d+)\.transformer_blocks\.0\.attn([12])\.(to_q|to_k|to_v|to_out\.0)$")


def original_layout_lora(adapter, seed, rank=4):
    """A motion LoRA in the original v2 layout for every temporal attention projection of ``adapter``."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in adapter.named_modules():
        match = _ATTENTION.match(name)
        if match is None:
            continue
        projection = "to_out" if match[3] == "to_out.0" else match[3]
        base = (f"{match[1]}.temporal_transformer.transformer_blocks.0.attention_blocks.{int(match[2]) - 1}"
                f".processor.{projection}_lora")
        tensors[f"{base}.down.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.3
        tensors[f"{base}.up.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.3
    return MotionLora.from_tensors(f"lora{seed}.ckpt", tensors)


def pipeline(tiny, adapter=None, loras=()):
    return ElevatorPipeline(tiny.unet, tiny.vae, TextEncoder(tiny.tokenizer, tiny.text_encoder),
                            InjectedMotionT2V(adapter or tiny.motion_adapter, solver="lcm", motion_loras=tuple(loras)))


def run(pipe, callback=None, **overrides):
    return generate(pipe, "a boat", "blurry", params=ElevatorParams(**{**PARAMS, **overrides}), width=SIZE,
                    height=SIZE, steps=STEPS, seed=2, decode=False, disable_progress=True, callback=callback).latents


def adapter_state(adapter):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in adapter.modules())
    return {k: v.clone() for k, v in adapter.state_dict().items()}, hooks


def assert_same_adapter(before, after):
    assert before[1] == after[1] and before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])


def test_the_two_published_layouts_name_the_same_layers(tmp_path):
    motion_files.write_kind("animatediff_v2_motion_lora", tmp_path / "a.ckpt")
    motion_files.write_kind("animatediff_v2_motion_lora_diffusers", tmp_path / "b.safetensors")
    original, diffusers = load_motion_lora(tmp_path / "a.ckpt"), load_motion_lora(tmp_path / "b.safetensors")
    assert {k: (tuple(v.down.shape), tuple(v.up.shape)) for k, v in original.layers.items()} == \
        {k: (tuple(v.down.shape), tuple(v.up.shape)) for k, v in diffusers.layers.items()}
    assert (original.info.layout, diffusers.info.layout) == ("original", "diffusers")
    assert original.block_channels == (32, 64, 128, 128)


def test_motion_lora_acts_in_t2v_passes_only_and_strength_zero_is_none(tiny):
    lora = original_layout_lora(tiny.motion_adapter, seed=1)
    plain = pipeline(tiny)
    with_lora = pipeline(tiny, loras=[(lora, 1.0)])
    assert torch.equal(run(with_lora, mode="t2i"), run(plain, mode="t2i"))  # T2I output unchanged
    assert not torch.equal(run(with_lora), run(plain))  # the elevator's T2V passes changed
    assert torch.equal(run(pipeline(tiny, loras=[(lora, 0.0)])), run(plain))


def test_motion_loras_add_up_as_merged_weights_would(tiny):
    loras = [(original_layout_lora(tiny.motion_adapter, seed=1), 0.7), (original_layout_lora(tiny.motion_adapter, seed=2), 0.5)]
    hooked = run(pipeline(tiny, loras=loras), mode="t2v")
    merged_adapter = copy.deepcopy(tiny.motion_adapter)
    layers = dict(merged_adapter.named_modules())
    with torch.no_grad():
        for lora, weight in loras:
            for layer in lora.info.pairs:
                pair = lora.layers[layer.replace(".", "_")]
                layers[layer].weight += weight * (pair.up @ pair.down)
    merged = run(pipeline(tiny, adapter=merged_adapter), mode="t2v")
    assert (hooked - merged).abs().max() <= 1e-5 * merged.std()
    assert not torch.allclose(hooked, run(pipeline(tiny), mode="t2v"), atol=1e-3)


def test_motion_modules_are_bit_identical_after_a_run_and_after_an_interrupt(tiny):
    lora = original_layout_lora(tiny.motion_adapter, seed=1)
    pipe = pipeline(tiny, loras=[(lora, 1.0)])
    before = adapter_state(tiny.motion_adapter)
    run(pipe)
    assert_same_adapter(before, adapter_state(tiny.motion_adapter))

    def interrupt(info):
        if info["i"] == 4:  # after the first refinement: the LoRA hooks are installed
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(pipe, callback=interrupt)
    assert_same_adapter(before, adapter_state(tiny.motion_adapter))


@pytest.mark.parametrize("module_kind", ["animatediff_v1", "animatediff_v3", "animatelcm_t2v"])
def test_motion_lora_is_refused_for_a_module_it_does_not_fit_in_one_sentence(tmp_path, module_kind):
    from lib_elevator.motion import load_motion_adapter

    lora_path = tmp_path / "v2_lora_ZoomIn.ckpt"
    motion_files.write_kind("animatediff_v2_motion_lora", lora_path)
    lora = load_motion_lora(lora_path)
    module_path = tmp_path / f"{module_kind}.ckpt"
    motion_files.write_kind(module_kind, module_path)
    adapter, info = load_motion_adapter(module_path)
    problem = fit_problem(lora, info, module_path.name, adapter)
    assert problem.count(".") == problem.count(".ckpt")  # one sentence
    assert "'v2_lora_ZoomIn.ckpt'" in problem and f"'{module_kind}.ckpt'" in problem and info.kind.label in problem
    motion_files.write_kind("animatediff_v2", tmp_path / "v2.ckpt")
    v2_adapter, v2_info = load_motion_adapter(tmp_path / "v2.ckpt")
    assert fit_problem(lora, v2_info, "v2.ckpt", v2_adapter) is None


def test_cli_motion_lora_flag_applies_and_refuses(model_files, tmp_path, capsys):
    lora = tmp_path / "v2_lora_PanLeft.ckpt"
    motion_files.write_kind("animatediff_v2_motion_lora", lora)
    v2 = tmp_path / "mm_sd_v15_v2.ckpt"
    motion_files.write_kind("animatediff_v2", v2)
    assert main(cli_args(model_files, tmp_path / "ok", "--motion-module", str(v2), "--motion-lora", f"{lora}:0.8",
                         "--motion-lora", str(lora))) == 0
    from lib_elevator.video import read_parameters

    assert "v2_lora_PanLeft.ckpt:0.8, v2_lora_PanLeft.ckpt:1" in read_parameters(tmp_path / "ok.mp4")
    capsys.readouterr()
    assert main(cli_args(model_files, tmp_path / "refused", "--motion-lora", str(lora))) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "'v2_lora_PanLeft.ckpt'" in error and "AnimateLCM" in error
    assert not list(tmp_path.glob("refused*"))
