"""Context windows: the layout on its own, the windowed T2V against a reference, and the switch-over in generate."""
import pytest
import torch

from lib_elevator.context import WindowedDenoiser, context_windows, resolve_context, windowed
from lib_elevator.params import ElevatorParams, ParamError
from lib_elevator.schedules import ANIMATEDIFF_SCHEDULE
from lib_elevator.standalone.pipeline import (ElevatorPipeline, EpsDenoiser, InjectedMotionT2V, TextEncoder,
                                              generate, t2v_from_motion_unet)

LAYOUTS = [(frames, length, overlap, stride, loop)
           for frames in (2, 5, 16, 17, 33, 64, 70)
           for length in (2, 4, 16)
           for overlap in sorted({0, length // 4, length - 1})
           for stride in (1, 3)
           for loop in (False, True)]


def is_wrapped(window):
    return any(b <= a for a, b in zip(window, window[1:]))


@pytest.mark.parametrize("frames,length,overlap,stride,loop", LAYOUTS)
def test_window_layout_covers_every_frame_within_the_length(frames, length, overlap, stride, loop):
    windows = context_windows(frames, length, overlap, stride, loop)
    assert windows == context_windows(frames, length, overlap, stride, loop)  # deterministic
    assert set().union(*windows) == set(range(frames))
    assert all(1 <= len(w) <= length and len(set(w)) == len(w) for w in windows)
    assert all(0 <= i < frames for w in windows for i in w)
    if frames <= length:
        assert windows == [list(range(frames))]
    if not loop:
        assert not any(is_wrapped(w) for w in windows)


def test_closed_loop_wraps_the_last_windows_onto_the_first_frames():
    assert context_windows(10, 4, 1) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert context_windows(10, 4, 1, closed_loop=True) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 0, 1, 2]]
    # stride 2 adds windows over every second frame
    assert context_windows(8, 4, 0, stride=2)[2:] == [[0, 2, 4, 6], [1, 3, 5, 7]]


@pytest.mark.parametrize("args,fragment", [((8, 1, 0), "too short"), ((8, 4, 4), "overlap 4"), ((8, 4, 1, 0), "stride")])
def test_bad_layouts_are_refused(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        context_windows(*args)


def test_context_resolution_follows_the_motion_module_limit():
    assert resolve_context(ElevatorParams(frames=32), 32) is None  # fits: one call, exactly as before
    plan = resolve_context(ElevatorParams(frames=64), 32)
    assert (plan.length, plan.overlap, plan.stride, plan.closed_loop, plan.fuse) == (16, 4, 1, False, "pyramid")
    assert resolve_context(ElevatorParams(frames=64), 8).length == 8  # capped by the positional encoding
    assert resolve_context(ElevatorParams(frames=24, context_length=12, context_overlap=2), 32).length == 12
    assert resolve_context(ElevatorParams(frames=12, context_length=12), 32) is None
    with pytest.raises(ParamError, match="frames=40 .* at most 32 with context windows off"):
        resolve_context(ElevatorParams(frames=40, context=False), 32)
    with pytest.raises(ParamError, match="context_overlap"):
        ElevatorParams(context_length=8, context_overlap=8)


def guided_reference(motion_unet, x, sigma, cond, uncond, scale, windows, pyramid):
    """Each window through diffusers' UNetMotionModel with CFG, fused with the documented weights."""
    schedule = ANIMATEDIFF_SCHEDULE
    t = torch.tensor(schedule.timestep(sigma))
    total, weight = torch.zeros_like(x), torch.zeros(x.shape[0])
    for window in windows:
        size = len(window)
        z = x[window] / (1 + sigma**2) ** 0.5
        video = torch.cat([z, z]).unflatten(0, (2, size)).transpose(1, 2)
        contexts = torch.cat([uncond[window], cond[window]])
        eps_u, eps_c = motion_unet(video, t, encoder_hidden_states=contexts).sample.transpose(1, 2).flatten(0, 1).chunk(2)
        x0_u, x0_c = x[window] - sigma * eps_u, x[window] - sigma * eps_c
        denoised = x0_u + scale * (x0_c - x0_u)
        w = torch.tensor([float(min(i + 1, size - i)) if pyramid else 1.0 for i in range(size)])
        for position, frame in enumerate(window):
            total[frame] += w[position] * denoised[position]
            weight[frame] += w[position]
    return total / weight.view(-1, 1, 1, 1)


@pytest.mark.parametrize("fuse,loop", [("pyramid", False), ("flat", True)])
def test_windowed_t2v_equals_windows_of_the_plain_motion_unet_fused_by_weight(motion_unet, fuse, loop):
    frames, sigma = 11, 4.0
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(frames, 4, 8, 8, generator=generator) * 4
    cond = torch.randn(frames, 77, 32, generator=generator)  # a different conditioning row per frame
    uncond = torch.randn(1, 77, 32, generator=generator).expand(frames, -1, -1)
    t2v = t2v_from_motion_unet(motion_unet)
    denoiser = EpsDenoiser(t2v.eps_model, t2v.schedule, cond, uncond[:1], 2.0, frames)
    plan = resolve_context(ElevatorParams(frames=frames, context_length=4, context_overlap=1, context_fuse=fuse,
                                          closed_loop=loop), None)
    windowed_t2v = windowed(denoiser, plan, frames)
    assert isinstance(windowed_t2v, WindowedDenoiser)
    with torch.no_grad():
        ours, _ = windowed_t2v.guided(x, sigma)
        reference = guided_reference(motion_unet, x, sigma, cond, uncond, 2.0, plan.windows(frames), fuse == "pyramid")
    assert torch.allclose(ours, reference, rtol=0, atol=1e-5 * reference.abs().max())


@pytest.fixture(scope="module")
def injected(tiny):
    return ElevatorPipeline(tiny.unet, tiny.vae, TextEncoder(tiny.tokenizer, tiny.text_encoder),
                            InjectedMotionT2V(tiny.motion_adapter, solver="lcm"))


def run(pipe, **params):
    values = {"refine_at": (8, 4), "t2v_steps": 2, **params}
    return generate(pipe, "a red fox", "ugly", params=ElevatorParams(**values), width=64, height=64, steps=10,
                    seed=3, decode=False, disable_progress=True)


def test_a_clip_that_fits_runs_in_one_call_bit_identically(injected):
    baseline = run(injected, frames=6, context=False).latents
    assert torch.equal(run(injected, frames=6, context_length=8).latents, baseline)
    assert torch.equal(run(injected, frames=6).latents, baseline)


def test_a_clip_longer_than_the_positional_encoding_runs_through_windows(tiny, injected):
    limit = injected.t2v.frame_limit
    assert limit == 32
    calls = []
    handles = [slot.register_forward_hook(lambda m, args, out: calls.append(out.shape[0]))
               for slot in tiny.motion_adapter.down_blocks[0].motion_modules]
    try:
        result = run(injected, frames=limit + 4, refine_at=(4,), t2v_steps=1)
    finally:
        for handle in handles:
            handle.remove()
    assert result.latents.shape[0] == limit + 4 and torch.isfinite(result.latents).all()
    assert set(calls) == {2 * 16}  # a CFG batch of one 16-frame window per motion-module call
    assert result.counter.passes["t2v"] == 2 * (3 * 16) / (limit + 4)  # windows at 0, 12, 20: 48 frames of 36
    with pytest.raises(ParamError, match="context windows off"):
        run(injected, frames=limit + 4, context=False)
