"""SDXL motion models (AnimateDiff-SDXL beta, Hotshot-XL): detection, refusal, safe loading, injection.

Motion files are written in their released layouts (tests/motion_files.py) at a tenth of the width,
which is exactly the tiny SDXL-shaped UNet's width (lib_elevator/tiny.py), and go through the real
loader. AnimateDiff-SDXL is checked against diffusers' ``UNetMotionModel``; Hotshot-XL against
``hotshot_reference`` below, a forward written from Hotshot-XL's published architecture
(hotshotco/Hotshot-XL, hotshot_xl/models/{unet,unet_blocks,resnet,transformer_temporal}.py): the
whole UNet runs on ``b c f h w`` clips, the ResNet GroupNorms and the output norm see all frames,
convolutions, resamplers and spatial transformers run per frame, and each temporal layer
normalises per frame, adds the sinusoid table after its LayerNorms and attends over frames.
The reference reads the temporal weights straight from the Hotshot-named file.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNetMotionModel

import motion_files
from lib_elevator.motion import MotionKind, MotionModelError, check_fits_unet, describe_motion_module
from lib_elevator.motion import load_motion_adapter, load_weights_file
from lib_elevator.motion.inject import MotionInjection, T2VSwitch
from lib_elevator.tiny import SDXL_BLOCK_CHANNELS, tiny_sdxl_unet2d
from ldm_helpers import sgm_shaped_pair

FRAMES = 3
GROUPS = 2
TIMESTEP = 601.0
PARITY = 1e-5
SD15_UNET = ((320, 640, 1280, 1280), 768, 2)
SDXL_UNET = ((320, 640, 1280), 2048, 2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl_motion")
    written = {}
    for kind in ("animatediff_sdxl_beta", "hotshotxl"):
        suffix = "." + motion_files.spec()["kinds"][kind]["container"]
        path = folder / f"{kind}{suffix}"
        written[kind] = path, motion_files.write_kind(kind, path)
    return written


@pytest.fixture(scope="module")
def unet():
    return tiny_sdxl_unet2d()


def relative_difference(actual, expected) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def clip_inputs(seed: int = 0):
    """Latents [G·F, 4, 8, 8] (contiguous per clip) and per-clip SDXL conditioning."""
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(GROUPS * FRAMES, 4, 8, 8, generator=generator)
    context = torch.randn(GROUPS, 5, 64, generator=generator)
    pooled = torch.randn(GROUPS, 32, generator=generator)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]).repeat(GROUPS, 1)
    return sample, context, pooled, time_ids


def per_frame_call(unet, sample, context, pooled, time_ids):
    """The 2D UNet on every frame with its clip's conditioning (how the elevator calls it)."""
    added = {"text_embeds": pooled.repeat_interleave(FRAMES, 0), "time_ids": time_ids.repeat_interleave(FRAMES, 0)}
    with torch.no_grad():
        return unet(sample, TIMESTEP, encoder_hidden_states=context.repeat_interleave(FRAMES, 0),
                    added_cond_kwargs=added).sample


def snapshot(unet, inputs) -> dict:
    return {
        "state": {key: value.clone() for key, value in unet.state_dict().items()},
        "tree": [(name, type(module)) for name, module in unet.named_modules()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules()),
        "output": per_frame_call(unet, *inputs),
    }


def assert_same_snapshot(before, after) -> None:
    assert list(before["state"]) == list(after["state"])
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
    assert (before["tree"], before["hooks"]) == (after["tree"], after["hooks"])
    assert torch.equal(before["output"], after["output"])


# --- detection and refusal ------------------------------------------------------------------------

def full_size_shapes(kind: str) -> dict:
    return {entry.name: entry.shape for entry in motion_files.layout(kind, scale=1)}


@pytest.mark.parametrize("kind, expected, pe_length", [
    ("animatediff_sdxl_beta", MotionKind.ANIMATEDIFF_SDXL_BETA, 32),
    ("hotshotxl", MotionKind.HOTSHOT_XL, 24),
])
def test_sdxl_kinds_are_detected_with_their_schedule_and_norms(kind, expected, pe_length):
    info = describe_motion_module(full_size_shapes(kind))
    assert (info.kind, info.base_model, info.positional_encoding_length) == (expected, "SDXL", pe_length)
    assert (info.block_out_channels, info.unet_cross_attention_dim, info.has_mid_block) == ((320, 640, 1280), 2048, False)
    assert info.default_solver == "ddim"
    betas = 1 - info.schedule.alphas_cumprod[1:] / info.schedule.alphas_cumprod[:-1]
    beta_end = {MotionKind.ANIMATEDIFF_SDXL_BETA: 0.020, MotionKind.HOTSHOT_XL: 0.012}[expected]
    assert float(betas[-1]) == pytest.approx(beta_end, rel=1e-3)
    assert info.frame_pooled_spatial_norms is (expected is MotionKind.HOTSHOT_XL)
    check_fits_unet(info, *SDXL_UNET)


@pytest.mark.parametrize("module, unet_shape, both_sides", [
    ("animatediff_sdxl_beta", SD15_UNET,
     r"^The AnimateDiff-SDXL \(beta\) motion module is made for SDXL UNets .* but the loaded model's UNet is SD1\.5-shaped"),
    ("hotshotxl", SD15_UNET, r"^The Hotshot-XL motion module is made for SDXL UNets .* but the loaded model's UNet is SD1\.5-shaped"),
    ("animatediff_v3", SDXL_UNET, r"^The AnimateDiff v3 motion module is made for SD1\.5 UNets .* but the loaded model's UNet is SDXL-shaped"),
    ("animatelcm_t2v", SDXL_UNET, r"^The AnimateLCM motion module is made for SD1\.5 UNets .* but the loaded model's UNet is SDXL-shaped"),
])
def test_every_sd15_sdxl_mismatch_is_refused_in_one_sentence_naming_both(module, unet_shape, both_sides):
    info = describe_motion_module(full_size_shapes(module))
    with pytest.raises(MotionModelError, match=both_sides) as refusal:
        check_fits_unet(info, *unet_shape)
    assert str(refusal.value).count(". ") == 1  # the refusal sentence, then what to do


def test_sdxl_layouts_that_are_not_released_are_refused():
    shapes = full_size_shapes("animatediff_sdxl_beta")
    shorter = {name: (shape[0], 24, shape[2]) if name.endswith("pos_encoder.pe") else shape for name, shape in shapes.items()}
    with pytest.raises(MotionModelError, match="neither AnimateDiff-SDXL .* nor Hotshot-XL"):
        describe_motion_module(shorter)


def shared_storage_checkpoint(kind: str, seed: int = 0) -> dict:
    """The full-size layout with random values, each tensor a stride-0 view of one random row, so the
    file keeps every real name and shape but only a row per tensor on disk; pe tables are real."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for entry in motion_files.layout(kind, scale=1):
        if motion_files.is_pe(entry.name):
            tensors[entry.name] = motion_files.sinusoid_table(entry.shape[1], entry.shape[2]).float()
        else:
            tensors[entry.name] = torch.randn(entry.shape[-1], generator=generator).expand(entry.shape)
    return tensors


@pytest.mark.parametrize("kind, expected", [
    ("animatediff_sdxl_beta", MotionKind.ANIMATEDIFF_SDXL_BETA), ("hotshotxl", MotionKind.HOTSHOT_XL),
])
def test_full_size_random_files_in_both_layouts_load_through_the_safe_loader(tmp_path, kind, expected):
    tensors = shared_storage_checkpoint(kind)
    path = motion_files.save_weights(tensors, tmp_path / f"{kind}_full.ckpt")
    assert path.stat().st_size < 20_000_000
    loaded = load_weights_file(path)
    assert list(loaded) == list(tensors)
    adapter, info = load_motion_adapter(path)
    assert (info.kind, info.block_out_channels) == (expected, (320, 640, 1280))
    state = adapter.state_dict()
    proj = "down_blocks.2.motion_modules.1.proj_in.weight"
    original = proj.replace("motion_modules.1.", "temporal_attentions.1." if kind == "hotshotxl"
                            else "motion_modules.1.temporal_transformer.")
    assert state[proj].shape == (1280, 1280) and torch.equal(state[proj], tensors[original])
    assert sum(t.numel() for t in state.values()) > 230_000_000


# --- injection: AnimateDiff-SDXL equals diffusers' UNetMotionModel ----------------------------------

def injected_calls(unet, adapter, info, inputs):
    """The UNet's output before injection, with the motion modules injected but off, and on."""
    before = snapshot(unet, inputs)
    switch = T2VSwitch(FRAMES)
    with MotionInjection(unet, adapter, switch, info.frame_pooled_spatial_norms):
        off = per_frame_call(unet, *inputs)
        with switch.on():
            moving = per_frame_call(unet, *inputs)
    return before, off, moving


def test_injected_sdxl_unet_equals_diffusers_unet_motion_model(files, unet):
    adapter, info = load_motion_adapter(files["animatediff_sdxl_beta"][0])
    check_fits_unet(info, SDXL_BLOCK_CHANNELS, 64, 2)
    reference = UNetMotionModel.from_unet2d(unet, adapter).eval()
    # diffusers 0.42.1's from_unet2d leaves SDXL's add_embedding (pooled text + time ids) at its random init
    reference.load_state_dict(unet.state_dict(), strict=False)
    sample, context, pooled, time_ids = inputs = clip_inputs()
    with torch.no_grad():
        expected = reference(sample.unflatten(0, (GROUPS, FRAMES)).transpose(1, 2), TIMESTEP,
                             encoder_hidden_states=context.repeat_interleave(FRAMES, 0),
                             added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    expected = expected.transpose(1, 2).flatten(0, 1)

    before, off, moving = injected_calls(unet, adapter, info, inputs)
    assert relative_difference(moving, expected) <= PARITY
    assert relative_difference(before["output"], expected) > 1e-2
    assert torch.equal(off, before["output"])
    assert_same_snapshot(before, snapshot(unet, inputs))


# --- injection: Hotshot-XL equals a forward written from Hotshot-XL's architecture --------------------

def group_norm(norm, hidden):
    return F.group_norm(hidden, norm.num_groups, norm.weight, norm.bias, norm.eps)


def per_frame(layer, clips, *args, **kwargs):
    """Run a 2D layer on every frame of ``b c f h w`` clips (Hotshot's Conv3d/Upsample3D/Downsample3D)."""
    frames = clips.shape[2]
    out = layer(clips.transpose(1, 2).flatten(0, 1), *args, **kwargs)
    out = out.sample if hasattr(out, "sample") else out
    return out.unflatten(0, (-1, frames)).transpose(1, 2)


def resnet_3d(resnet, clips, emb):
    """Hotshot's ResnetBlock3D: GroupNorms over whole clips, convolutions per frame."""
    hidden = per_frame(resnet.conv1, F.silu(group_norm(resnet.norm1, clips)))
    hidden = hidden + resnet.time_emb_proj(F.silu(emb))[:, :, None, None, None]
    hidden = per_frame(resnet.conv2, F.silu(group_norm(resnet.norm2, hidden)))
    shortcut = per_frame(resnet.conv_shortcut, clips) if resnet.conv_shortcut is not None else clips
    return (shortcut + hidden) / resnet.output_scale_factor


def spatial_transformer(attention, clips, context):
    frames = clips.shape[2]
    return per_frame(attention, clips, encoder_hidden_states=context.repeat_interleave(frames, 0))


def temporal_layer(weights: dict, prefix: str, clips, heads: int = 8):
    """Hotshot's TransformerTemporal with one TransformerBlock of two TemporalAttentions, from file weights."""
    w = {name[len(prefix):]: tensor for name, tensor in weights.items() if name.startswith(prefix)}
    batch, channels, frames, height, width = clips.shape
    skip = clips.transpose(1, 2).flatten(0, 1)  # (b f) c h w
    hidden = F.group_norm(skip, 32, w["norm.weight"], w["norm.bias"], 1e-6)  # per frame
    hidden = hidden.flatten(2).transpose(1, 2)  # (b f) (h w) c
    hidden = F.linear(hidden, w["proj_in.weight"], w["proj_in.bias"])
    block = "transformer_blocks.0."
    for a in range(2):
        normed = F.layer_norm(hidden, (channels,), w[f"{block}norms.{a}.weight"], w[f"{block}norms.{a}.bias"])
        tokens = normed.unflatten(0, (batch, frames)).permute(0, 2, 1, 3).flatten(0, 1)  # (b s) f c
        tokens = tokens + w[f"{block}attention_blocks.{a}.pos_encoder.positional_encoding"][:, :frames]
        attn = f"{block}attention_blocks.{a}."
        q, k, v = (F.linear(tokens, w[attn + f"to_{x}.weight"]).unflatten(-1, (heads, -1)).transpose(1, 2)
                   for x in "qkv")
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        mixed = F.linear(mixed, w[attn + "to_out.0.weight"], w[attn + "to_out.0.bias"])
        hidden = mixed.unflatten(0, (batch, height * width)).permute(0, 2, 1, 3).flatten(0, 1) + hidden
    normed = F.layer_norm(hidden, (channels,), w[f"{block}ff_norm.weight"], w[f"{block}ff_norm.bias"])
    value, gate = F.linear(normed, w[f"{block}ff.net.0.proj.weight"], w[f"{block}ff.net.0.proj.bias"]).chunk(2, -1)
    hidden = F.linear(value * F.gelu(gate), w[f"{block}ff.net.2.weight"], w[f"{block}ff.net.2.bias"]) + hidden
    hidden = F.linear(hidden, w["proj_out.weight"], w["proj_out.bias"])
    out = hidden.transpose(1, 2).unflatten(2, (height, width)) + skip
    return out.unflatten(0, (batch, frames)).transpose(1, 2)


def hotshot_reference(unet, weights, sample, timestep, context, pooled, time_ids):
    """Hotshot-XL's UNet3DConditionModel forward on the SDXL UNet's weights plus the temporal layers."""
    clips = sample.unflatten(0, (GROUPS, FRAMES)).transpose(1, 2)
    t_emb = unet.time_proj(torch.full((GROUPS,), timestep))
    time_embeds = unet.add_time_proj(time_ids.flatten()).reshape(GROUPS, -1)
    emb = unet.time_embedding(t_emb) + unet.add_embedding(torch.cat([pooled, time_embeds], -1))
    hidden = per_frame(unet.conv_in, clips)
    skips = [hidden]
    for i, block in enumerate(unet.down_blocks):
        for j, resnet in enumerate(block.resnets):
            hidden = resnet_3d(resnet, hidden, emb)
            if getattr(block, "attentions", None):
                hidden = spatial_transformer(block.attentions[j], hidden, context)
            hidden = temporal_layer(weights, f"down_blocks.{i}.temporal_attentions.{j}.", hidden)
            skips.append(hidden)
        if block.downsamplers:
            hidden = per_frame(block.downsamplers[0], hidden)
            skips.append(hidden)
    mid = unet.mid_block
    hidden = resnet_3d(mid.resnets[0], hidden, emb)
    hidden = spatial_transformer(mid.attentions[0], hidden, context)
    hidden = resnet_3d(mid.resnets[1], hidden, emb)
    for i, block in enumerate(unet.up_blocks):
        for j, resnet in enumerate(block.resnets):
            hidden = resnet_3d(resnet, torch.cat([hidden, skips.pop()], dim=1), emb)
            if getattr(block, "attentions", None):
                hidden = spatial_transformer(block.attentions[j], hidden, context)
            hidden = temporal_layer(weights, f"up_blocks.{i}.temporal_attentions.{j}.", hidden)
        if block.upsamplers:
            hidden = per_frame(block.upsamplers[0], hidden)
    hidden = per_frame(unet.conv_out, F.silu(group_norm(unet.conv_norm_out, hidden)))
    return hidden.transpose(1, 2).flatten(0, 1)


@pytest.fixture(scope="module")
def hotshot_expected(files, unet):
    weights = files["hotshotxl"][1]
    with torch.no_grad():
        return hotshot_reference(unet, weights, *clip_inputs_for_reference())


def clip_inputs_for_reference():
    sample, context, pooled, time_ids = clip_inputs()
    return sample, TIMESTEP, context, pooled, time_ids


def test_injected_hotshot_equals_hotshot_architecture(files, unet, hotshot_expected):
    adapter, info = load_motion_adapter(files["hotshotxl"][0])
    assert info.frame_pooled_spatial_norms
    inputs = clip_inputs()
    before, off, moving = injected_calls(unet, adapter, info, inputs)
    assert relative_difference(moving, hotshot_expected) <= PARITY
    assert torch.equal(off, before["output"])  # T2I passes: every norm per frame, no motion
    assert_same_snapshot(before, snapshot(unet, inputs))


@pytest.mark.parametrize("missing", ["frame-pooled spatial norms", "per-frame temporal norm"])
def test_hotshot_reference_tells_each_norm_placement_apart(files, unet, hotshot_expected, missing):
    adapter, info = load_motion_adapter(files["hotshotxl"][0])
    if missing == "per-frame temporal norm":
        for module in adapter.modules():
            if hasattr(module, "proj_in") and hasattr(module, "norm"):
                module.norm.__class__ = torch.nn.GroupNorm
    switch = T2VSwitch(FRAMES)
    pooled_norms = missing != "frame-pooled spatial norms"
    with MotionInjection(unet, adapter, switch, pooled_norms), switch.on():
        moving = per_frame_call(unet, *clip_inputs())
    assert relative_difference(moving, hotshot_expected) > 1e-3


def test_failure_inside_a_t2v_pass_still_restores_the_unet(files, unet):
    adapter, info = load_motion_adapter(files["hotshotxl"][0])
    inputs = clip_inputs()
    before = snapshot(unet, inputs)
    switch = T2VSwitch(FRAMES + 1)  # the batch is not whole clips of this length: the first norm refuses it
    with pytest.raises(ValueError, match="whole number"):
        with MotionInjection(unet, adapter, switch, info.frame_pooled_spatial_norms), switch.on():
            per_frame_call(unet, *inputs)
    assert_same_snapshot(before, snapshot(unet, inputs))


# --- the ldm/sgm UNet tree (A1111's SDXL UNet is sgm's UNetModel, ldm's with per-level depth and a vector input) ----

def sgm_call(sgm, diffusers_unet, sample, context, pooled, time_ids):
    vector = torch.cat([pooled, diffusers_unet.add_time_proj(time_ids.flatten()).reshape(GROUPS, -1)], -1)
    with torch.no_grad():
        return sgm(sample, timesteps=torch.full((sample.shape[0],), TIMESTEP), context=context.repeat_interleave(FRAMES, 0),
                   y=vector.repeat_interleave(FRAMES, 0))


@pytest.mark.parametrize("kind", ["animatediff_sdxl_beta", "hotshotxl"])
def test_sgm_shaped_unet_equals_diffusers_with_each_sdxl_motion_model(files, kind):
    unet, sgm = sgm_shaped_pair()
    adapter, info = load_motion_adapter(files[kind][0])
    inputs = clip_inputs()
    plain = per_frame_call(unet, *inputs)
    assert relative_difference(sgm_call(sgm, unet, *inputs), plain) <= PARITY
    results = {}
    for name, model in (("diffusers", unet), ("sgm", sgm)):
        switch = T2VSwitch(FRAMES)
        with MotionInjection(model, adapter, switch, info.frame_pooled_spatial_norms):
            call = (lambda: per_frame_call(unet, *inputs)) if name == "diffusers" else (lambda: sgm_call(sgm, unet, *inputs))
            off = call()
            with switch.on():
                results[name] = call()
        assert torch.equal(off, call())
    assert relative_difference(results["sgm"], results["diffusers"]) <= PARITY
    assert relative_difference(results["diffusers"], plain) > 1e-2
