"""Long videos in the WebUI: the T2V runs on context windows through the host's own CFGDenoiser, on the
A1111 and Forge stand-ins, and the model comes back bit-identical; with windows off a long clip is refused."""
import pytest

from test_a1111 import assert_untouched, elevator_p, extension_session, fingerprint, motion_file, newest_mp4  # noqa: F401

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
