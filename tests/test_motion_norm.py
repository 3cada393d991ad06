"""motion_norm: the paper's pooled motion-module GroupNorm (diffusers) or the original AnimateDiff's
per-frame one, on every injection path (ldm hooks on A1111, Forge's block modifier, diffusers hooks and
the UNetMotionModel copy standalone), checked against a per-frame reference written here."""
import inspect
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

from lib_elevator.params import ElevatorParams, ParamError
from lib_elevator.standalone.pipeline import (
    ElevatorPipeline, InjectedMotionT2V, TextEncoder, generate, t2v_from_motion_unet, t2v_from_unet3d,
)
from test_a1111 import elevator_p, extension_session, motion_file  # noqa: F401


def per_frame_reference(module, x, frames):
    """The original AnimateDiff motion module: GroupNorm statistics of each frame alone.

    Each frame's channel groups are standardised here with explicit means and variances; the unmodified
    (pooled-norm) module then sees frames whose statistics are all 0/1, so its pooled norm is the
    per-frame one, and the residual is swapped back to the real input."""
    norm = module.norm
    rows, channels, height, width = x.shape
    grouped = x.double().reshape(rows, norm.num_groups, -1)
    mean = grouped.mean(-1, keepdim=True)
    variance = grouped.var(-1, unbiased=False, keepdim=True)
    standardised = ((grouped - mean) / (variance + norm.eps).sqrt()).reshape(x.shape).to(x.dtype)
    with torch.no_grad():
        return module(standardised, num_frames=frames) - standardised + x


@contextmanager
def recorded_motion_calls():
    """(module, input, frames, output) of every motion-transformer call while the block runs, whoever
    makes it (a global forward hook, so the WebUI runs need no handle on the cached adapter)."""
    calls = []

    def record(module, args, kwargs, output):
        if type(module).__name__ == "AnimateDiffTransformer3D":
            frames = inspect.signature(module.forward).bind(*args, **kwargs).arguments["num_frames"]
            calls.append((module, args[0].detach().clone(), frames, output.detach().clone()))

    handle = register_module_forward_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def assert_calls_follow(calls, motion_norm):
    assert calls, "no motion-module call was recorded"
    for module, x, frames, output in calls:
        assert type(module.norm) is nn.GroupNorm  # the per-frame norm is gone after the run
        with torch.no_grad():
            pooled = module(x, num_frames=frames)
        per_frame = per_frame_reference(module, x, frames)
        expected, other = (per_frame, pooled) if motion_norm == "per_frame" else (pooled, per_frame)
        scale = expected.std()
        assert (output - expected).abs().max() <= 1e-4 * scale
        assert (output - other).abs().max() > 1e-3 * scale  # the two norms are told apart on these inputs


def test_schema_default_is_the_paper_and_bad_values_name_the_field():
    assert ElevatorParams().motion_norm == "paper"
    pasted = ElevatorParams.from_infotext(ElevatorParams(motion_norm="per_frame").to_infotext())
    assert pasted.motion_norm == "per_frame"
    with pytest.raises(ParamError) as error:
        ElevatorParams(motion_norm="frames")
    assert error.value.name == "motion_norm" and "paper, per_frame" in str(error.value)


@pytest.mark.parametrize("motion_norm", ["paper", "per_frame"])
@pytest.mark.parametrize("host", ["a1111", "forge"])
def test_webui_hosts_run_the_motion_norm_asked_for(tmp_path, motion_file, host, motion_norm):
    with extension_session(tmp_path, motion_file, host) as webui:
        p = elevator_p(webui, steps=4, refine_at="2", t2v_steps=1, motion_norm=motion_norm)
        with recorded_motion_calls() as calls:
            webui.run(p)
        assert webui.errors == []
        assert f"motion_norm={motion_norm}" in p.extra_generation_params["VideoElevator"]
    assert_calls_follow(calls, motion_norm)


@pytest.mark.parametrize("motion_norm", ["paper", "per_frame"])
@pytest.mark.parametrize("t2v_kind", ["injected", "copy"])
def test_standalone_runs_the_motion_norm_asked_for(tiny, motion_unet, t2v_kind, motion_norm):
    text = TextEncoder(tiny.tokenizer, tiny.text_encoder)
    if t2v_kind == "injected":
        t2v = InjectedMotionT2V(tiny.motion_adapter, solver="lcm")
    else:
        t2v = t2v_from_motion_unet(motion_unet, "lcm")
    pipe = ElevatorPipeline(tiny.unet, tiny.vae, text, t2v)
    params = ElevatorParams(frames=3, refine_at=(4,), t2v_steps=2, motion_norm=motion_norm)
    with recorded_motion_calls() as calls:
        generate(pipe, "a dancing robot", params=params, width=64, height=64, steps=6, seed=1, decode=False,
                 disable_progress=True)
    assert_calls_follow(calls, motion_norm)


def test_a_unet3d_t2v_refuses_per_frame(tiny, t2v_text_encoder):
    pipe = ElevatorPipeline(tiny.unet, tiny.vae, TextEncoder(tiny.tokenizer, tiny.text_encoder),
                            t2v_from_unet3d(tiny.unet3d, t2v_text_encoder))
    before = {name: type(module) for name, module in tiny.unet3d.named_modules()}
    with pytest.raises(ParamError) as error:
        generate(pipe, "a dancing robot", params=ElevatorParams(frames=3, refine_at=(4,), t2v_steps=2,
                                                                motion_norm="per_frame"),
                 width=64, height=64, steps=6, seed=1, decode=False, disable_progress=True)
    assert error.value.name == "motion_norm"
    assert {name: type(module) for name, module in tiny.unet3d.named_modules()} == before
