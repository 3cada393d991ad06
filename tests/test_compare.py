"""The comparison: the three modes from the same seed, side by side with labels, in the Python API and the CLI."""
import av
import numpy as np
import pytest

from lib_elevator.compare import COMPARE_LABELS, label_strip, side_by_side
from lib_elevator.params import ElevatorParams
from lib_elevator.standalone.cli import main
from lib_elevator.standalone.pipeline import (
    ElevatorPipeline, InjectedMotionT2V, TextEncoder, generate, generate_comparison,
)
from lib_elevator.video import tensor_to_uint8_frames

FRAMES, SIZE, STEPS = 2, 64, 8
PARAMS = ElevatorParams(frames=FRAMES, refine_at=(6, 3), t2v_steps=2)
OPTIONS = dict(width=SIZE, height=SIZE, steps=STEPS, seed=5, disable_progress=True)


@pytest.fixture(scope="module")
def videos(tiny):
    pipe = ElevatorPipeline(tiny.unet, tiny.vae, TextEncoder(tiny.tokenizer, tiny.text_encoder),
                            InjectedMotionT2V(tiny.motion_adapter, solver="lcm"))
    compared = generate_comparison(pipe, "a boat", "blurry", params=PARAMS, **OPTIONS)
    single = {mode: generate(pipe, "a boat", "blurry", params=ElevatorParams(**{**PARAMS.to_dict(), "mode": mode}),
                             **OPTIONS) for mode in ("t2v", "t2i", "elevate")}
    return compared, single


def test_comparison_runs_each_mode_as_its_single_video_would(videos):
    compared, single = videos
    assert list(compared) == ["t2v", "t2i", "elevate"]
    for mode, result in compared.items():
        assert result.params.mode == mode
        assert np.array_equal(result.latents.numpy(), single[mode].latents.numpy()), mode
    assert {mode: r.counter.total for mode, r in compared.items()} == {"t2v": 2 * STEPS, "t2i": 2 * STEPS,
                                                                       "elevate": compared["elevate"].counter.total}


def test_side_by_side_panels_are_the_mode_videos_in_order_with_labels_under_them(videos):
    _, single = videos
    frames = {mode: tensor_to_uint8_frames(result.images) for mode, result in single.items()}
    combined = side_by_side(frames)
    strip = label_strip([COMPARE_LABELS[m] for m in ("t2v", "t2i", "elevate")], SIZE)
    assert combined.shape == (FRAMES, SIZE + strip.shape[0], 3 * SIZE, 3) and strip.shape[0] % 2 == 0
    for index, mode in enumerate(("t2v", "t2i", "elevate")):
        assert np.array_equal(combined[:, :SIZE, index * SIZE:(index + 1) * SIZE], frames[mode]), mode
        label = combined[:, SIZE:, index * SIZE:(index + 1) * SIZE]
        assert label.max() > 200 and (label == 0).mean() > 0.5  # light text on black, under its own panel
    assert not np.array_equal(strip[:, :SIZE], strip[:, SIZE:2 * SIZE])


def test_side_by_side_needs_all_three_modes(videos):
    _, single = videos
    with pytest.raises(ValueError, match="missing elevate"):
        side_by_side({mode: tensor_to_uint8_frames(single[mode].images) for mode in ("t2v", "t2i")})


def mp4_frames(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_cli_compare_writes_the_elevated_the_single_mode_and_the_side_by_side_videos(tmp_path, capsys):
    out = tmp_path / "D"
    assert main(["demo", "--compare", "--out", str(out), "--format", "mp4", "--quiet", "--frames", "2", "--steps",
                 "8", "--refine-at", "6,3", "--t2v-steps", "2"]) == 0
    report = capsys.readouterr().out
    assert "t2v: UNet passes" in report and "t2i: UNet passes" in report and "all modes:" in report
    elevated = mp4_frames(tmp_path / "D.mp4")
    compare = mp4_frames(tmp_path / "D-compare.mp4")
    assert len(compare) == len(elevated) == 2
    assert compare[0].shape[1] >= 3 * elevated[0].shape[1] and compare[0].shape[0] > elevated[0].shape[0]
    for mode in ("t2v", "t2i"):
        assert mp4_frames(tmp_path / f"D-{mode}.mp4")[0].shape == elevated[0].shape
    from lib_elevator.video import read_parameters

    assert "mode=t2v" in read_parameters(tmp_path / "D-t2v.mp4")


def test_cli_mode_t2v_runs_the_motion_model_alone(tmp_path, capsys):
    assert main(["demo", "--mode", "t2v", "--out", str(tmp_path / "v"), "--format", "mp4", "--quiet", "--frames",
                 "2", "--steps", "4"]) == 0
    assert "t2v: UNet passes (F-frame): t2i 0, correction 0, t2v 8, inversion 0" in capsys.readouterr().out
    assert (tmp_path / "v.mp4").exists() and not (tmp_path / "v-compare.mp4").exists()
