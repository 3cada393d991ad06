"""Round-trip tests for lib_elevator.video: write every format, decode it back with PyAV or Pillow."""
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from lib_elevator import video

FRAME_COUNT, HEIGHT, WIDTH = 6, 48, 64
PARAMETERS = (
    "a red square sliding right, ünïcödé ✓ 猫\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 1234, " + "x" * 300
)


def moving_square_clip(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Grey background with a red square moving 8 px per frame, so consecutive frames differ."""
    frames = np.full((FRAME_COUNT, height, width, 3), 60, dtype=np.uint8)
    for index in range(FRAME_COUNT):
        frames[index, 16:32, 8 * index : 8 * index + 16] = (230, 30, 30)
    return frames


def decode_with_pyav(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        return stream.codec_context.name, stream.average_rate, decoded


def pillow_animation(path):
    with Image.open(path) as image:
        durations, decoded = [], []
        for index in range(image.n_frames):
            image.seek(index)
            image.load()
            durations.append(image.info["duration"])
            decoded.append(np.asarray(image.convert("RGB")))
        return image.format, image.size, image.info.get("loop"), durations, np.stack(decoded)


def test_tensor_to_uint8_frames_clamps_rounds_and_moves_channels_last():
    # (x + 1) * 127.5 lands on 10.4 and 10.6 for these inputs: they must round to 10 and 11.
    below, above = 10.4 / 127.5 - 1, 10.6 / 127.5 - 1
    row = torch.tensor([-5.0, -1.0, below, above, 0.0, 1.0, 5.0])
    video_tensor = torch.stack([row, -row, torch.zeros_like(row)]).reshape(1, 3, 1, 7)

    frames = video.tensor_to_uint8_frames(video_tensor)

    assert frames.dtype == np.uint8
    assert frames.shape == (1, 1, 7, 3)
    assert frames[0, 0, :, 0].tolist() == [0, 0, 10, 11, 128, 255, 255]
    assert frames[0, 0, :, 1].tolist() == [255, 255, 245, 244, 128, 0, 0]
    assert frames[0, 0, :, 2].tolist() == [128] * 7


def test_tensor_to_uint8_frames_accepts_half_precision():
    frames = video.tensor_to_uint8_frames(torch.full((2, 3, 4, 5), -1.0, dtype=torch.bfloat16))
    assert frames.shape == (2, 4, 5, 3)
    assert frames.max() == 0


def test_tensor_to_uint8_frames_rejects_channels_last_input():
    with pytest.raises(ValueError, match=r"\[F, 3, H, W\]"):
        video.tensor_to_uint8_frames(torch.zeros(2, 4, 5, 3))


@pytest.mark.parametrize(("fmt", "codec"), [("mp4", "h264"), ("webm", "vp9")])
def test_pyav_formats_round_trip(tmp_path, fmt, codec):
    frames = moving_square_clip()

    [path] = video.save_video(frames, tmp_path / "clip", formats=(fmt,), fps=12.5, parameters=PARAMETERS)

    assert path == tmp_path / f"clip.{fmt}"
    decoded_codec, rate, decoded = decode_with_pyav(path)
    assert decoded_codec == codec
    assert rate == Fraction(25, 2)
    assert decoded.shape == (FRAME_COUNT, HEIGHT, WIDTH, 3)
    assert np.abs(decoded.astype(int) - frames).mean() < 4
    assert video.read_parameters(path) == PARAMETERS


def test_gif_round_trip(tmp_path):
    frames = moving_square_clip()

    [path] = video.save_video(frames, tmp_path / "clip", formats=("gif",), fps=8, parameters=PARAMETERS)

    image_format, size, loop, durations, decoded = pillow_animation(path)
    assert image_format == "GIF"
    assert size == (WIDTH, HEIGHT)
    assert loop == 0
    # GIF counts in 10 ms ticks: frame boundaries are rounded (half to even), so 125 ms frames
    # become 120 or 130 ms and the clip still lasts 6 / 8 fps = 750 ms.
    assert durations == [120, 130, 130, 120, 120, 130]
    assert np.abs(decoded.astype(int) - frames).mean() < 4
    assert video.read_parameters(path) == PARAMETERS


def test_webp_round_trip(tmp_path):
    frames = moving_square_clip()

    [path] = video.save_video(frames, tmp_path / "clip", formats=("webp",), fps=8, parameters=PARAMETERS)

    image_format, size, loop, durations, decoded = pillow_animation(path)
    assert image_format == "WEBP"
    assert size == (WIDTH, HEIGHT)
    assert loop == 0
    assert durations == [125] * FRAME_COUNT
    assert np.abs(decoded.astype(int) - frames).mean() < 4
    assert video.read_parameters(path) == PARAMETERS


def test_png_frames_round_trip_losslessly(tmp_path):
    frames = moving_square_clip()

    [folder] = video.save_video(frames, tmp_path / "clip", formats=("png",), parameters=PARAMETERS)

    assert folder == tmp_path / "clip-frames"
    frame_files = sorted(folder.iterdir())
    assert [file.name for file in frame_files] == [f"clip-{index:05d}.png" for index in range(FRAME_COUNT)]
    for file, frame in zip(frame_files, frames):
        with Image.open(file) as image:
            assert image.size == (WIDTH, HEIGHT)
            assert np.array_equal(np.asarray(image), frame)
        assert video.read_parameters(file) == PARAMETERS
    assert video.read_parameters(folder) == PARAMETERS
    assert list(tmp_path.iterdir()) == [folder]


def test_every_format_at_once_reports_paths_in_requested_order(tmp_path):
    frames = moving_square_clip()
    paths = video.save_video(frames, tmp_path / "clip.mp4", formats=video.FORMATS, parameters=PARAMETERS)

    expected_names = ["clip.mp4", "clip.webm", "clip.gif", "clip.webp", "clip-frames"]
    assert [path.name for path in paths] == expected_names
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(expected_names)
    assert [video.read_parameters(path) for path in paths] == [PARAMETERS] * len(paths)


def test_without_parameters_nothing_is_read_back(tmp_path):
    paths = video.save_video(moving_square_clip(), tmp_path / "clip", formats=video.FORMATS)
    assert [video.read_parameters(path) for path in paths] == [None] * len(paths)


def test_odd_size_is_padded_for_pyav_formats_only(tmp_path):
    frames = moving_square_clip(height=HEIGHT - 1, width=WIDTH - 1)

    mp4, webm, gif = video.save_video(frames, tmp_path / "odd", formats=("mp4", "webm", "gif"))

    for path in (mp4, webm):
        _, _, decoded = decode_with_pyav(path)
        assert decoded.shape == (FRAME_COUNT, HEIGHT, WIDTH, 3)
        assert np.abs(decoded[:, -1].astype(int) - decoded[:, -2]).mean() < 4  # replicated last row
    with Image.open(gif) as image:
        assert image.size == (WIDTH - 1, HEIGHT - 1)


def test_loop_count_is_stored_for_gif_and_webp(tmp_path):
    for path in video.save_video(moving_square_clip(), tmp_path / "clip", formats=("gif", "webp"), loop=3):
        with Image.open(path) as image:
            assert image.info["loop"] == 3


def test_repeated_frames_are_merged_without_changing_the_timing(tmp_path):
    """Pillow (GIF) and libwebp merge repeated frames into one longer frame."""
    frames = np.zeros((FRAME_COUNT, HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames[4:, :8, :8] = 255
    for path in video.save_video(frames, tmp_path / "held", formats=("gif", "webp"), fps=8):
        _, _, _, durations, _ = pillow_animation(path)
        assert durations == [500, 250]


def test_unknown_format_raises_and_writes_nothing(tmp_path):
    with pytest.raises(video.OutputError, match="one or more of mp4, webm, gif, webp, png") as raised:
        video.save_video(moving_square_clip(), tmp_path / "clip", formats=("mp4", "avi"))
    assert "avi" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("frames", "fps"),
    [
        (moving_square_clip().astype(np.float32), 8),
        (moving_square_clip()[..., :2], 8),
        (moving_square_clip()[:0], 8),
        (moving_square_clip(), 0),
    ],
)
def test_bad_frames_or_fps_raise(tmp_path, frames, fps):
    with pytest.raises(ValueError):
        video.save_video(frames, tmp_path / "clip", formats=("gif",), fps=fps)


def test_failed_encode_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"previous video")
    # The PNG encoder cannot take yuv420p, so encoding fails after the output file was opened.
    monkeypatch.setitem(video.VIDEO_ENCODERS, "mp4", ("png",))

    with pytest.raises(av.error.FFmpegError):
        video.save_video(moving_square_clip(), target, formats=("mp4",))

    assert list(tmp_path.iterdir()) == [target]
    assert target.read_bytes() == b"previous video"


def test_missing_encoder_falls_back_to_the_next(tmp_path, monkeypatch):
    monkeypatch.setitem(video.VIDEO_ENCODERS, "webm", ("no-such-encoder", "libvpx"))

    [path] = video.save_video(moving_square_clip(), tmp_path / "clip", formats=("webm",))

    codec, _, decoded = decode_with_pyav(path)
    assert codec == "vp8"
    assert len(decoded) == FRAME_COUNT


def test_no_available_encoder_names_the_candidates(tmp_path, monkeypatch):
    monkeypatch.setitem(video.VIDEO_ENCODERS, "mp4", ("no-such-encoder",))

    with pytest.raises(RuntimeError, match="no-such-encoder"):
        video.save_video(moving_square_clip(), tmp_path / "clip", formats=("mp4",))
    assert list(tmp_path.iterdir()) == []


def test_existing_png_folder_is_not_overwritten(tmp_path):
    folder = tmp_path / "clip-frames"
    folder.mkdir()
    (folder / "mine.png").write_bytes(b"user file")

    with pytest.raises(video.OutputError, match="refusing to overwrite a folder of frames"):
        video.save_video(moving_square_clip(), tmp_path / "clip", formats=("png",))
    assert [path.name for path in folder.iterdir()] == ["mine.png"]
    assert list(tmp_path.iterdir()) == [folder]


def test_a_refused_second_format_leaves_the_first_formats_earlier_file_untouched(tmp_path):
    """A rerun into the same name: MP4 would be replaced, but the PNG frames folder exists, so
    nothing at all is written (before, the MP4 was already replaced when the refusal came)."""
    video.save_video(moving_square_clip(), tmp_path / "clip", formats=("mp4", "png"))
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")}
    mp4_bytes = (tmp_path / "clip.mp4").read_bytes()

    with pytest.raises(video.OutputError, match="clip-frames already exists"):
        video.save_video(moving_square_clip()[::-1].copy(), tmp_path / "clip", formats=("mp4", "png"))
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")} == before
    assert (tmp_path / "clip.mp4").read_bytes() == mp4_bytes


def test_a_failing_later_format_commits_no_earlier_one(tmp_path, monkeypatch):
    (tmp_path / "clip.gif").write_bytes(b"previous gif")
    monkeypatch.setitem(video.VIDEO_ENCODERS, "mp4", ("png",))  # fails after the GIF was encoded

    with pytest.raises(av.error.FFmpegError):
        video.save_video(moving_square_clip(), tmp_path / "clip", formats=("gif", "mp4"))
    assert [path.name for path in tmp_path.iterdir()] == ["clip.gif"]
    assert (tmp_path / "clip.gif").read_bytes() == b"previous gif"


@pytest.mark.parametrize(("options", "message"), [
    (dict(formats=("mp4",), crf=52), "crf=52 is not allowed; 0..51 for MP4"),
    (dict(formats=("webm",), crf=-5), "crf=-5 is not allowed; 0..63 for WEBM"),
    (dict(formats=("gif",), loop=-1), "loop=-1 is not allowed"),
    (dict(formats=("gif",), loop=70000), "loop=70000 is not allowed"),
    (dict(formats=()), "no video format requested"),
])
def test_bad_output_options_are_refused_before_writing(tmp_path, options, message):
    with pytest.raises(video.OutputError, match=message):
        video.plan_outputs(tmp_path / "clip", **options)
    assert list(tmp_path.iterdir()) == []


def test_output_under_a_file_or_read_only_folder_is_refused(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(video.OutputError, match="is a file, not a folder"):
        video.plan_outputs(tmp_path / "file" / "sub" / "clip")


def test_webm_is_byte_reproducible(tmp_path):
    first, second = (video.save_video(moving_square_clip(), tmp_path / name, formats=("webm",), parameters=PARAMETERS)[0]
                     for name in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()
    assert video.read_parameters(first) == PARAMETERS


def test_written_files_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        written = video.save_video(moving_square_clip(), tmp_path / "clip", ("mp4", "png"))
    finally:
        os.umask(old)
    modes = [stat.S_IMODE(path.stat().st_mode) for path in written]
    assert modes == [0o644, 0o755]
