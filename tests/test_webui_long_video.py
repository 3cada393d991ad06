"""Long videos in the WebUI: the T2V runs on context windows through the host's own CFGDenoiser, on the
A1111 and Forge stand-ins, and the model comes back bit-identical; with windows off a long clip is refused."""
import pytest

from test_a1111 import (assert_untouched, elevator_p, extension_session, fingerprint, motion_file,  # noqa: F401
                       newest_mp4, requested_params, sampled_latents)

WINDOWED = dict(frames=10, context_length=4, context_overlap=1, closed_loop=True, refine_at="4,2", t2v_steps=2)


@pytest.fixture(params=["a1111", "forge"])
def session(request, tmp_path, motion_file):
    with extension_session(tmp_path, motion_file, request.param) as webui:
        yield webui


def test_a_long_clip_runs_on_context_windows_through_the_host_denoiser(session):
    before = fingerprint(session.unet)
    p = elevator_p(session, **WINDOWED)
    session.run(p)
    assert session.errors == []
    frames, _, comment = newest_mp4(session)
    assert len(frames) == 10 and "context_length=4" in comment and "closed_loop=on" in comment
    # windows 0-3, 3-6, 6-9, 9-2 (wrapped): 16 frame evaluations per T2V call over 10 frames
    assert p.videoelevator["passes"]["t2v"] == pytest.approx(2 * 2 * 2 * 16 / 10)
    assert_untouched(before, fingerprint(session.unet))


def test_64_frames_with_16_frame_windows(session):
    before = fingerprint(session.unet)
    p = elevator_p(session, frames=64, context_length=16, refine_at="2", t2v_steps=1, steps=3)
    session.run(p)
    assert session.errors == []
    assert len(newest_mp4(session)[0]) == 64
    assert_untouched(before, fingerprint(session.unet))


def test_a_clip_too_long_with_windows_off_is_refused_and_changes_nothing(session):
    before = fingerprint(session.unet)
    p = elevator_p(session, frames=65, context=False)
    with pytest.raises(ValueError, match="at most 64 frames and context windows are off; 65 were asked for"):
        session.run(p)
    assert_untouched(before, fingerprint(session.unet))


def test_progress_with_context_windows_counts_each_windowed_call_once(session, monkeypatch):
    """The bar's total is the plan's passes, and the sampler's callback ticks exactly through it: overlapping
    windows (16 frame evaluations over 10 frames per T2V call) neither run it ahead nor pin it at the end."""
    from modules import shared

    from lib_elevator.sampler import ElevatorPlan
    from lib_elevator.webui import run as webui_glue

    ticks = []

    class RecordingProgress(webui_glue.PassProgress):
        def __init__(self, callback, total):
            def record(step):
                ticks.append(step["i"])
                callback(step)
            super().__init__(record, total)

    monkeypatch.setattr(webui_glue, "PassProgress", RecordingProgress)
    p = elevator_p(session, **WINDOWED)
    session.run(p)
    assert session.errors == []
    total = ElevatorPlan.build(p.steps, requested_params(session, p)).passes
    assert shared.state.sampling_steps == total
    assert ticks == list(range(total))


def latents_of(session, **fields):
    """The latents ``sample_elevator`` returned for one run with these panel fields, and its passes."""
    with sampled_latents() as outputs:
        p = elevator_p(session, **fields)
        session.run(p)
    assert session.errors == [] and len(outputs) == 1
    return outputs[0], p.videoelevator["passes"]


def test_frames_per_batch_gives_the_one_batch_result_through_the_host_denoiser(session):
    """T2I, correction and inversion in chunks of 3 frames (7 = 3 + 3 + 1), frame 0's keys and values anchoring
    the later chunks, with the host splitting each CFG call into a cond and an uncond UNet call (A1111 without
    batch_cond_uncond, Forge short of memory): the unchunked result up to float rounding, same passes."""
    from modules import shared

    before = fingerprint(session.unet)
    fields = dict(frames=7, refine_at="4,2", t2v_steps=2, correction=True)
    whole, whole_passes = latents_of(session, **fields)
    if session.host == "forge":
        from backend.sampling import sampling_function

        sampling_function.BATCHING = "separate_cond_first"
    else:
        shared.opts.batch_cond_uncond = False
    chunked, chunked_passes = latents_of(session, frames_per_batch=3, **fields)
    assert chunked_passes == whole_passes
    assert (chunked - whole).abs().max() <= 1e-5 * whole.abs().max()
    assert_untouched(before, fingerprint(session.unet))
