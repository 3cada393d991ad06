"""Motion modules and the T2V LoRA inside a shared UNet: placement, on/off, removal, key layouts.

Placement is proven numerically: the hooked diffusers UNet equals diffusers' own
``UNetMotionModel``, and an ldm UNet with the same weights equals the diffusers UNet with motion
on and off. The "sd15_shaped" configs have SD1.5's block structure (every resampler position,
two layers per level) at toy width.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from diffusers import UNetMotionModel

from lib_elevator.lora import GatedLora, lora_target_layers, parse_lora
from lib_elevator.motion.inject import MotionInjection, T2VSwitch, plan_motion_slots
from ldm_helpers import (
    ADAPTER_CONFIGS,
    SD15_SHAPED_ADAPTER_CONFIG,
    UNET_CONFIGS,
    diffusers_unet,
    ldm_unet_like,
    motion_adapter,
    run_unet,
)

FRAMES = 3
GROUPS = 2
TIMESTEP = 601.0
PARITY = 1e-5
REPO = Path(__file__).resolve().parents[1]
LAYOUTS_JSON_CANDIDATES = tuple(
    folder / "shared" / "data" / "motion_module_layouts.json" for folder in (REPO, REPO.parent)
)
LCM_LORA_TARGET_SUFFIXES = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "time_emb_proj", "downsamplers.0.conv", "upsamplers.0.conv",
)


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def clip_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[G·F, C, H, W] latents, contiguous per group, and the per-frame text context [G·F, 5, dim]."""
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(GROUPS * FRAMES, 4, 8, 8, generator=generator)
    context = torch.randn(GROUPS, 5, 32, generator=generator).repeat_interleave(FRAMES, 0)
    return sample, context


def unet_pair(shape: str = "tiny"):
    unet = diffusers_unet(UNET_CONFIGS[shape])
    return unet, ldm_unet_like(unet, UNET_CONFIGS[shape])


def snapshot(unet, sample, context) -> dict:
    """Everything removal must restore: state_dict keys and values, module tree, hooks, output."""
    return {
        "state": {key: value.clone() for key, value in unet.state_dict().items()},
        "tree": [(name, type(module)) for name, module in unet.named_modules()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules()),
        "output": run_unet(unet, sample, TIMESTEP, context),
    }


def assert_same_snapshot(before: dict, after: dict) -> None:
    assert list(before["state"]) == list(after["state"])
    assert all(torch.equal(before["state"][key], after["state"][key]) for key in before["state"])
    assert before["tree"] == after["tree"]
    assert before["hooks"] == after["hooks"]
    assert torch.equal(before["output"], after["output"])


# --- motion modules: placement ---------------------------------------------------------------

@pytest.mark.parametrize("shape", ["tiny", "sd15_shaped"])
def test_injected_diffusers_unet_equals_unet_motion_model(shape):
    unet, adapter = diffusers_unet(UNET_CONFIGS[shape]), motion_adapter(ADAPTER_CONFIGS[shape])
    reference = UNetMotionModel.from_unet2d(unet, adapter).eval()
    sample, context = clip_batch()
    clips = sample.unflatten(0, (GROUPS, FRAMES)).transpose(1, 2)
    with torch.no_grad():
        expected = reference(clips, TIMESTEP, encoder_hidden_states=context).sample.transpose(1, 2).flatten(0, 1)

    switch = T2VSwitch(frames=FRAMES)
    with MotionInjection(unet, adapter, switch), switch.on():
        moving = run_unet(unet, sample, TIMESTEP, context)
    plain = run_unet(unet, sample, TIMESTEP, context)

    assert relative_difference(moving, expected) <= PARITY
    assert relative_difference(plain, expected) > 1e-2


@pytest.mark.parametrize("shape", ["tiny", "sd15_shaped"])
def test_ldm_unet_with_converted_weights_equals_diffusers_unet(shape):
    unet, ldm_unet = unet_pair(shape)
    sample, context = clip_batch()
    expected = run_unet(unet, sample, TIMESTEP, context)
    assert relative_difference(run_unet(ldm_unet, sample, TIMESTEP, context), expected) <= PARITY


@pytest.mark.parametrize("shape", ["tiny", "sd15_shaped"])
def test_ldm_and_diffusers_stay_equal_with_the_same_motion_modules(shape):
    unet, ldm_unet = unet_pair(shape)
    adapter = motion_adapter(ADAPTER_CONFIGS[shape])
    sample, context = clip_batch()
    switch = T2VSwitch(frames=FRAMES)
    with MotionInjection(unet, adapter, switch), MotionInjection(ldm_unet, adapter, switch):
        for active in (True, False):
            switch.active = active
            expected = run_unet(unet, sample, TIMESTEP, context)
            assert relative_difference(run_unet(ldm_unet, sample, TIMESTEP, context), expected) <= PARITY


def test_ldm_positions_follow_animatediff_layout_for_sd15():
    """The SD1.5 table: appended to input_blocks 1,2,4,5,7,8,10,11; middle before its last
    ResBlock; output_blocks 2, 5, 8 before their Upsample; the rest appended."""
    _, ldm_unet = unet_pair("sd15_shaped")
    adapter = motion_adapter(SD15_SHAPED_ADAPTER_CONFIG)
    slots = {slot.motion_name: slot.host_name for slot in plan_motion_slots(ldm_unet, adapter)}
    assert slots == {
        "down_blocks.0.motion_modules.0": "input_blocks.1.1", "down_blocks.0.motion_modules.1": "input_blocks.2.1",
        "down_blocks.1.motion_modules.0": "input_blocks.4.1", "down_blocks.1.motion_modules.1": "input_blocks.5.1",
        "down_blocks.2.motion_modules.0": "input_blocks.7.1", "down_blocks.2.motion_modules.1": "input_blocks.8.1",
        "down_blocks.3.motion_modules.0": "input_blocks.10.0", "down_blocks.3.motion_modules.1": "input_blocks.11.0",
        "mid_block.motion_modules.0": "middle_block.1",
        "up_blocks.0.motion_modules.0": "output_blocks.0.0", "up_blocks.0.motion_modules.1": "output_blocks.1.0",
        "up_blocks.0.motion_modules.2": "output_blocks.2.0",
        "up_blocks.1.motion_modules.0": "output_blocks.3.1", "up_blocks.1.motion_modules.1": "output_blocks.4.1",
        "up_blocks.1.motion_modules.2": "output_blocks.5.1",
        "up_blocks.2.motion_modules.0": "output_blocks.6.1", "up_blocks.2.motion_modules.1": "output_blocks.7.1",
        "up_blocks.2.motion_modules.2": "output_blocks.8.1",
        "up_blocks.3.motion_modules.0": "output_blocks.9.1", "up_blocks.3.motion_modules.1": "output_blocks.10.1",
        "up_blocks.3.motion_modules.2": "output_blocks.11.1",
    }
    layer_types = [type(layer).__name__ for layer in ldm_unet.output_blocks[5]]
    assert layer_types == ["ResBlock", "SpatialTransformer", "Upsample"]


def test_motion_model_for_other_channels_is_refused():
    unet, ldm_unet = unet_pair()
    wrong = motion_adapter({**ADAPTER_CONFIGS["tiny"], "block_out_channels": (64, 64)})
    for host in (unet, ldm_unet):
        with pytest.raises(ValueError, match="channels"):
            MotionInjection(host, wrong, T2VSwitch(frames=FRAMES))


# --- motion modules: switch, removal, failure ------------------------------------------------

@pytest.mark.parametrize("kind", ["diffusers", "ldm"])
def test_motion_off_is_bit_identical_and_remove_restores_everything(kind):
    unet = dict(zip(("diffusers", "ldm"), unet_pair()))[kind]
    sample, context = clip_batch()
    before = snapshot(unet, sample, context)
    switch = T2VSwitch(frames=FRAMES)
    injection = MotionInjection(unet, motion_adapter(ADAPTER_CONFIGS["tiny"]), switch).install()
    assert torch.equal(run_unet(unet, sample, TIMESTEP, context), before["output"])
    with switch.on():
        assert not torch.equal(run_unet(unet, sample, TIMESTEP, context), before["output"])
    injection.remove()
    injection.remove()
    assert_same_snapshot(before, snapshot(unet, sample, context))


@pytest.mark.parametrize("kind", ["diffusers", "ldm"])
def test_failure_during_a_motion_forward_still_restores_the_unet(kind):
    unet = dict(zip(("diffusers", "ldm"), unet_pair()))[kind]
    sample, context = clip_batch()
    before = snapshot(unet, sample, context)
    switch = T2VSwitch(frames=FRAMES)
    with pytest.raises(ValueError, match="whole number of 3-frame groups"):
        with MotionInjection(unet, motion_adapter(ADAPTER_CONFIGS["tiny"]), switch), switch.on():
            run_unet(unet, sample[:-1], TIMESTEP, context[:-1])
    assert not switch.active
    assert_same_snapshot(before, snapshot(unet, sample, context))


def test_partial_install_failure_rolls_back(monkeypatch):
    unet, _ = unet_pair()
    sample, context = clip_batch()
    before = snapshot(unet, sample, context)
    injection = MotionInjection(unet, motion_adapter(ADAPTER_CONFIGS["tiny"]), T2VSwitch(frames=FRAMES))
    failing_host = injection.slots[3].host

    def refuse(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(failing_host, "register_forward_hook", refuse)
    with pytest.raises(RuntimeError, match="simulated"):
        injection.install()
    assert not injection.installed
    monkeypatch.undo()
    assert_same_snapshot(before, snapshot(unet, sample, context))


def test_double_install_is_refused_and_clip_limits_are_checked():
    unet, _ = unet_pair()
    switch = T2VSwitch(frames=FRAMES)
    adapter = motion_adapter({**ADAPTER_CONFIGS["tiny"], "motion_max_seq_length": 2})
    with MotionInjection(unet, adapter, switch) as injection:
        with pytest.raises(RuntimeError, match="already installed"):
            injection.install()
        sample, context = clip_batch()
        with switch.on(), pytest.raises(ValueError, match="at most 2 frames"):
            run_unet(unet, sample, TIMESTEP, context)


def test_motion_modules_follow_the_unet_dtype():
    unet = diffusers_unet(UNET_CONFIGS["tiny"]).double()
    adapter = motion_adapter(ADAPTER_CONFIGS["tiny"])
    switch = T2VSwitch(frames=FRAMES)
    sample, context = clip_batch()
    with MotionInjection(unet, adapter, switch), switch.on():
        output = run_unet(unet, sample.double(), TIMESTEP, context.double())
    assert output.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in adapter.parameters())


# --- T2V LoRA --------------------------------------------------------------------------------

def lcm_lora_layers(unet) -> dict[str, torch.nn.Module]:
    """The diffusers LCM-LoRA target list, which the AnimateLCM t2v LoRA covers."""
    return {
        name: module for name, module in unet.named_modules()
        if any(name.endswith("." + suffix) for suffix in LCM_LORA_TARGET_SUFFIXES)
    }


def random_lora(unet, rank: int = 4, alpha: float = 2.0, seed: int = 7) -> dict[str, tuple]:
    """diffusers layer name → (down, up, alpha) shaped like a trained LoRA for that layer."""
    generator = torch.Generator().manual_seed(seed)
    lora = {}
    for name, layer in sorted(lcm_lora_layers(unet).items()):
        if isinstance(layer, torch.nn.Conv2d):
            down_shape, up_shape = (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, 1, 1)
        else:
            down_shape, up_shape = (rank, layer.in_features), (layer.out_features, rank)
        down = torch.randn(down_shape, generator=generator) / down_shape[1] ** 0.5
        up = torch.randn(up_shape, generator=generator) / rank**0.5
        lora[name] = (down, up, alpha)
    return lora


def kohya_layout(lora: dict) -> dict[str, torch.Tensor]:
    state = {}
    for name, (down, up, alpha) in lora.items():
        stem = "lora_unet_" + name.replace(".", "_")
        state |= {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up, f"{stem}.alpha": torch.tensor(alpha)}
    return state


def diffusers_layout(lora: dict) -> dict[str, torch.Tensor]:
    """Old diffusers names: attention projections through their processor, the rest ``.lora.down``;
    1x1 conv pairs stored 2-D, as linear-projection trainers write them."""
    state = {}
    for name, (down, up, alpha) in lora.items():
        parent, _, leaf = name.rpartition(".")
        if leaf in ("to_q", "to_k", "to_v") or name.endswith("to_out.0"):
            projection = "to_out" if name.endswith("to_out.0") else leaf
            stem = f"unet.{name.removesuffix('.to_out.0').removesuffix('.' + leaf)}.processor.{projection}_lora"
            weights = {f"{stem}.down.weight": down, f"{stem}.up.weight": up}
        else:
            flat = down.ndim == 4 and down.shape[2:] == (1, 1)
            weights = {
                f"unet.{name}.lora.down.weight": down.flatten(1) if flat else down,
                f"unet.{name}.lora.up.weight": up.flatten(1) if flat else up,
            }
        state |= weights | {f"unet.{name}.alpha": torch.tensor(alpha)}
    return state


def peft_layout(lora: dict, prefix: str) -> dict[str, torch.Tensor]:
    state = {}
    for name, (down, up, alpha) in lora.items():
        state |= {
            f"{prefix}{name}.lora_A.weight": down,
            f"{prefix}{name}.lora_B.weight": up,
            f"{prefix}{name}.alpha": torch.tensor(alpha),
        }
    return state


LAYOUTS = {
    "kohya": kohya_layout,
    "diffusers": diffusers_layout,
    "diffusers_peft": lambda lora: peft_layout(lora, "unet."),
    "peft": lambda lora: peft_layout(lora, "base_model.model."),
}


def merged_copy(unet, lora: dict, scale: float):
    """The UNet with the LoRA merged into its weights: an independent reference for the hooks."""
    merged = copy.deepcopy(unet)
    with torch.no_grad():
        for name, (down, up, alpha) in lora.items():
            weight = merged.get_submodule(name).weight
            delta = up.flatten(1) @ down.flatten(1)
            weight += (scale * alpha / down.shape[0]) * delta.reshape(weight.shape)
    return merged


def test_t2v_lora_acts_only_while_the_gate_is_on_and_matches_merged_weights():
    unet = diffusers_unet(UNET_CONFIGS["tiny"])
    lora = random_lora(unet)
    sample, context = clip_batch()
    before = snapshot(unet, sample, context)
    gate = T2VSwitch(frames=FRAMES)
    with GatedLora(unet, kohya_layout(lora), gate, scale=0.8) as gated:
        assert len(gated.targets) == len(lora)
        assert torch.equal(run_unet(unet, sample, TIMESTEP, context), before["output"])
        with gate.on():
            adapted = run_unet(unet, sample, TIMESTEP, context)
            gated.scale = 0.0
            assert torch.equal(run_unet(unet, sample, TIMESTEP, context), before["output"])
    expected = run_unet(merged_copy(unet, lora, 0.8), sample, TIMESTEP, context)
    assert relative_difference(adapted, expected) <= PARITY
    assert relative_difference(before["output"], expected) > 1e-3
    assert_same_snapshot(before, snapshot(unet, sample, context))


def test_lora_layouts_agree_on_diffusers_and_ldm_unets():
    unet, ldm_unet = unet_pair()
    lora = random_lora(unet)
    sample, context = clip_batch()
    gate = T2VSwitch(frames=FRAMES, active=True)
    outputs = {}
    for layout, write in LAYOUTS.items():
        for kind, host in (("diffusers", unet), ("ldm", ldm_unet)):
            with GatedLora(host, write(lora), gate, scale=0.8):
                outputs[layout, kind] = run_unet(host, sample, TIMESTEP, context)
    reference = outputs["kohya", "diffusers"]
    for (layout, kind), output in outputs.items():
        assert relative_difference(output, reference) <= PARITY, (layout, kind)
        assert torch.equal(output, outputs["kohya", kind]), (layout, kind)


def test_motion_and_t2v_lora_share_one_switch_and_both_leave_no_trace():
    unet, ldm_unet = unet_pair()
    adapter = motion_adapter(ADAPTER_CONFIGS["tiny"])
    lora = kohya_layout(random_lora(unet))
    sample, context = clip_batch()
    outputs = {}
    for kind, host in (("diffusers", unet), ("ldm", ldm_unet)):
        before = snapshot(host, sample, context)
        switch = T2VSwitch(frames=FRAMES)
        with MotionInjection(host, adapter, switch), GatedLora(host, lora, switch, scale=0.8):
            assert torch.equal(run_unet(host, sample, TIMESTEP, context), before["output"])
            with switch.on():
                outputs[kind] = run_unet(host, sample, TIMESTEP, context)
        assert_same_snapshot(before, snapshot(host, sample, context))
    assert relative_difference(outputs["ldm"], outputs["diffusers"]) <= PARITY


def real_layout_keys(kind: str) -> list[str] | None:
    """Key names of a real file from the published layouts, when a shared/ folder holds them."""
    for path in LAYOUTS_JSON_CANDIDATES:
        if path.exists():
            return list(json.loads(path.read_text())["kinds"][kind]["keys"])
    return None


def test_animatelcm_t2v_lora_key_layout_maps_completely_on_both_unets():
    """The real file's 834 keys (278 layers, kohya names, fp16, scalar fp16 alphas) at toy width."""
    unet, ldm_unet = unet_pair("sd15_shaped")
    state = {key: value.half() for key, value in kohya_layout(random_lora(unet, rank=4, alpha=8.0)).items()}
    assert len(state) == 834
    real_keys = real_layout_keys("animatelcm_t2v_lora")
    if real_keys is not None:
        assert sorted(state) == sorted(real_keys)
    sample, context = clip_batch()
    outputs = {}
    for kind, host in (("diffusers", unet), ("ldm", ldm_unet)):
        gate = T2VSwitch(frames=FRAMES)
        plain = run_unet(host, sample, TIMESTEP, context)
        with GatedLora(host, state, gate, scale=0.8) as gated:
            assert len(gated.targets) == 278
            assert all(target.down.dtype == torch.float32 for target in gated.targets)
            with gate.on():
                outputs[kind] = run_unet(host, sample, TIMESTEP, context)
        assert relative_difference(outputs[kind], plain) > 1e-3
    assert relative_difference(outputs["ldm"], outputs["diffusers"]) <= PARITY


def test_ldm_lora_targets_cover_the_same_layers_as_diffusers():
    unet, ldm_unet = unet_pair("sd15_shaped")
    diffusers_layers, ldm_layers = lora_target_layers(unet), lora_target_layers(ldm_unet)
    assert sorted(diffusers_layers) == sorted(ldm_layers)
    assert all(type(diffusers_layers[name]) is type(ldm_layers[name]) for name in diffusers_layers)


def test_unmatched_or_unknown_lora_keys_are_named_in_the_error():
    unet, ldm_unet = unet_pair()
    state = kohya_layout(random_lora(unet))
    stray = {"lora_unet_down_blocks_7_resnets_0_conv1.lora_down.weight": torch.zeros(4, 8),
             "lora_unet_down_blocks_7_resnets_0_conv1.lora_up.weight": torch.zeros(8, 4)}
    for host in (unet, ldm_unet):
        with pytest.raises(ValueError, match="1 of .* match no .*down_blocks_7_resnets_0_conv1"):
            GatedLora(host, state | stray, T2VSwitch(frames=FRAMES))
    with pytest.raises(ValueError, match="not UNet LoRA weights, e.g. model.something"):
        parse_lora(state | {"model.something": torch.zeros(1)})
    with pytest.raises(ValueError, match="lack a down or up"):
        parse_lora({"lora_unet_conv_in.lora_down.weight": torch.zeros(4, 4, 3, 3)})
