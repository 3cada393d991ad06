"""Turn decoded frames into video files that carry their generation parameters.

Encoding is left to PyAV (MP4, WEBM) and Pillow (GIF, animated WEBP, PNG frames). The
parameters string is stored where each format allows, in the place other tools look for it:
the container ``comment`` tag, the GIF comment extension, the EXIF UserComment (as the
AUTOMATIC1111 WebUI writes it for WEBP), and the PNG text chunk named ``parameters``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ExifTags
from PIL.PngImagePlugin import PngInfo

FORMATS = ("mp4", "webm", "gif", "webp", "png")

# Tried in order: the first encoder this PyAV build has is used.
VIDEO_ENCODERS = {
    "mp4": ("libx264", "libopenh264"),
    "webm": ("libvpx-vp9", "libvpx"),
}

PARAMETERS_KEY = "parameters"
WEBP_QUALITY = 90
FRAME_NUMBER_DIGITS = 5

# EXIF UserComment charset prefixes. UNICODE text is UTF-16 big-endian, the encoding piexif uses
# when the AUTOMATIC1111 WebUI writes parameters into JPEG/WEBP, so both sides read each other.
_UNICODE_PREFIX = b"UNICODE\0"
_USER_COMMENT_CODECS = {_UNICODE_PREFIX: "utf-16-be", b"ASCII\0\0\0": "ascii"}


def tensor_to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """Map decoder output [F, 3, H, W] in [-1, 1] to uint8 [F, H, W, 3], the layout encoders take.

    Values are clamped first because the VAE overshoots [-1, 1] slightly; rounding (not
    truncation) keeps mid-grey at 128 and avoids darkening every pixel by half a level.
    """
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"expected a [F, 3, H, W] tensor, got shape {tuple(video.shape)}")
    scaled = (video.detach().to("cpu", torch.float32).clamp(-1, 1) + 1) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def save_video(
    frames: np.ndarray,
    path: str | Path,
    formats: Sequence[str] = ("mp4", "gif"),
    fps: float | Fraction = 8,
    loop: int = 0,
    parameters: str | None = None,
    crf: int = 18,
) -> list[Path]:
    """Write ``frames`` (uint8 [F, H, W, 3]) once per format and return the written paths.

    ``path`` is a stem (``out/clip``) or a file name whose suffix is one of ``FORMATS``
    (``out/clip.mp4``); each format gets its own suffix. PNG frames go into a folder
    ``<stem>-frames`` as ``<stem>-00000.png``…, and that folder is the path returned.

    ``loop`` (0 = forever) applies to GIF and WEBP; ``crf`` (constant-rate factor, lower is
    better: 0–51 for H.264, 0–63 for VP9) to MP4 and WEBM. Each output is written to a
    temporary name and renamed when complete, so a failure never leaves a truncated file
    under the final name.
    """
    requested = _validate_formats(formats)
    _validate_frames(frames)
    rate = _frame_rate(fps)
    if loop < 0:
        raise ValueError(f"loop must be >= 0 (0 = forever), got {loop}")
    stem = _output_stem(Path(path))
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in requested:
        if fmt == "png":
            written.append(_write_png_frames(frames, stem, parameters))
            continue
        target = stem.with_name(f"{stem.name}.{fmt}")
        with _atomic_output(target) as temporary:
            if fmt in VIDEO_ENCODERS:
                _write_pyav_video(frames, temporary, fmt, rate, parameters, crf)
            else:
                _write_pillow_animation(frames, temporary, fmt, rate, loop, parameters)
        written.append(target)
    return written


def read_parameters(path: str | Path) -> str | None:
    """Return the parameters string embedded by ``save_video``, or None if the file has none.

    Accepts any output of ``save_video``, including the PNG frames folder (its first frame is read).
    """
    path = Path(path)
    if path.is_dir():
        frame_files = sorted(path.glob("*.png"))
        if not frame_files:
            raise FileNotFoundError(f"no PNG frames in {path}")
        path = frame_files[0]
    suffix = path.suffix.lower().lstrip(".")
    if suffix in VIDEO_ENCODERS:
        with av.open(str(path)) as container:
            # Matroska upper-cases tag names on write, so look the key up case-insensitively.
            tags = {key.lower(): value for key, value in container.metadata.items()}
        return tags.get("comment")
    with Image.open(path) as image:
        if suffix == "png":
            return image.info.get(PARAMETERS_KEY)
        if suffix == "gif":
            comment = image.info.get("comment")
            return comment.decode("utf-8", errors="replace") if comment else None
        if suffix == "webp":
            user_comment = image.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
            return _decode_user_comment(user_comment) if user_comment else None
    raise ValueError(f"cannot read parameters from {path.name}: expected one of {', '.join(FORMATS)}")


def _validate_formats(formats: Sequence[str]) -> list[str]:
    """Reject unknown names before anything is written, so a typo costs no partial output."""
    if isinstance(formats, str):
        formats = (formats,)
    requested = list(dict.fromkeys(fmt.lower().lstrip(".") for fmt in formats))
    unknown = [fmt for fmt in requested if fmt not in FORMATS]
    if unknown:
        raise ValueError(f"unknown video format(s) {', '.join(unknown)}; allowed: {', '.join(FORMATS)}")
    if not requested:
        raise ValueError(f"no video format requested; allowed: {', '.join(FORMATS)}")
    return requested


def _validate_frames(frames: np.ndarray) -> None:
    """Fail early with a hint, instead of deep inside an encoder with a cryptic message."""
    is_rgb_uint8 = isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
    if not is_rgb_uint8 or frames.shape[-1] != 3:
        described = f"{type(frames).__name__} {getattr(frames, 'dtype', '')} {getattr(frames, 'shape', '')}"
        raise ValueError(
            f"expected uint8 numpy frames [F, H, W, 3] (see tensor_to_uint8_frames), got {described}"
        )
    if 0 in frames.shape:
        raise ValueError(f"frames must be non-empty, got shape {frames.shape}")


def _frame_rate(fps: float | Fraction) -> Fraction:
    """Exact rational rate, so 12.5 or 30000/1001 fps give exact timestamps instead of drifting."""
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def _output_stem(path: Path) -> Path:
    """Drop a format suffix the caller may have given, since every format supplies its own."""
    return path.with_suffix("") if path.suffix.lower().lstrip(".") in FORMATS else path


@contextmanager
def _atomic_output(target: Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` and move it into place only if the block succeeds."""
    prefix, suffix = f".{target.name}.", ".partial"
    if directory:
        temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix, suffix=suffix))
    else:
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=suffix)
        os.close(handle)
        temporary = Path(name)
    try:
        yield temporary
        _permissions_like_a_new_file(temporary, directory)
        os.replace(temporary, target)
    except BaseException:
        if temporary.is_dir():
            shutil.rmtree(temporary)
        else:
            temporary.unlink(missing_ok=True)
        raise


def _permissions_like_a_new_file(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create owner-only (0600/0700) entries; outputs should follow the umask
    like any other file the user writes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def _pick_encoder(fmt: str) -> str:
    """First encoder for ``fmt`` that this PyAV build ships; PyAV wheels differ in which they include."""
    for name in VIDEO_ENCODERS[fmt]:
        try:
            av.codec.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            continue
        return name
    raise RuntimeError(
        f"this PyAV build has none of the {fmt.upper()} encoders {', '.join(VIDEO_ENCODERS[fmt])}; "
        "install a PyAV build that includes one, or save another format"
    )


def _quality_options(encoder: str, crf: int) -> dict[str, str]:
    """Constant-quality settings, spelled the way each encoder expects them."""
    if encoder == "libx264":
        return {"crf": str(crf)}
    if encoder == "libvpx-vp9":
        return {"crf": str(crf), "b": "0"}  # bitrate 0 selects pure constant-quality mode
    if encoder == "libvpx":
        return {"crf": str(max(crf, 4)), "b": "0"}  # VP8 rejects crf below 4
    return {}


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Repeat the last row/column of odd-sized frames: yuv420p stores chroma per 2×2 block and
    H.264 encoders refuse odd sizes. Applied to MP4 and WEBM alike so both come out the same size."""
    _, height, width, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def _write_pyav_video(
    frames: np.ndarray, path: Path, fmt: str, rate: Fraction, parameters: str | None, crf: int
) -> None:
    """Encode to yuv420p, the pixel format every browser and player decodes."""
    encoder = _pick_encoder(fmt)
    frames = _pad_to_even(frames)
    # faststart moves the MP4 index to the front so browsers can play while downloading.
    container_options = {"movflags": "+faststart"} if fmt == "mp4" else {}
    with av.open(str(path), "w", format=fmt, options=container_options) as container:
        if parameters:
            container.metadata["comment"] = parameters
        stream = container.add_stream(encoder, rate=rate, options=_quality_options(encoder, crf))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = index, 1 / rate
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


def _frame_durations_ms(count: int, rate: Fraction, tick_ms: int) -> list[int]:
    """Per-frame durations on the format's clock (GIF: 10 ms, WEBP: 1 ms).

    Rounding frame boundaries rather than each duration keeps the total length right, e.g.
    8 fps as GIF mixes 120 and 130 ms frames instead of drifting with 120 ms everywhere.
    """
    boundaries = [round(Fraction(1000 * index) / (rate * tick_ms)) * tick_ms for index in range(count + 1)]
    return [end - start for start, end in zip(boundaries, boundaries[1:])]


def _write_pillow_animation(
    frames: np.ndarray, path: Path, fmt: str, rate: Fraction, loop: int, parameters: str | None
) -> None:
    """GIF or animated WEBP.

    Pillow quantises each GIF frame to 256 colours. Both encoders merge repeated consecutive
    frames into one longer frame (timing is kept); a WEBP whose frames are all identical thus
    becomes a still image.
    """
    images = [Image.fromarray(frame) for frame in frames]
    format_options = {}
    if fmt == "gif":
        tick_ms = 10
        if parameters:
            format_options["comment"] = parameters.encode("utf-8")
    else:
        tick_ms = 1
        format_options["quality"] = WEBP_QUALITY
        if parameters:
            exif = Image.Exif()
            user_comment = _UNICODE_PREFIX + parameters.encode("utf-16-be")
            exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = user_comment
            format_options["exif"] = exif
    images[0].save(
        path,
        format=fmt.upper(),
        save_all=True,
        append_images=images[1:],
        duration=_frame_durations_ms(len(images), rate, tick_ms),
        loop=loop,
        **format_options,
    )


def _write_png_frames(frames: np.ndarray, stem: Path, parameters: str | None) -> Path:
    """One lossless PNG per frame, each with the ``parameters`` chunk so any single frame pastes back.

    The folder appears only once every frame is written. An existing folder is an error rather
    than overwritten or merged, since deleting a folder of the user's files is never safe.
    """
    folder = stem.with_name(f"{stem.name}-frames")
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; refusing to overwrite a folder of frames")
    png_info = PngInfo()
    if parameters:
        png_info.add_text(PARAMETERS_KEY, parameters)  # Pillow switches to iTXt for non-Latin-1 text
    with _atomic_output(folder, directory=True) as temporary:
        for index, frame in enumerate(frames):
            frame_path = temporary / f"{stem.name}-{index:0{FRAME_NUMBER_DIGITS}d}.png"
            Image.fromarray(frame).save(frame_path, format="PNG", pnginfo=png_info)
    return folder


def _decode_user_comment(user_comment: bytes) -> str:
    """EXIF UserComment is an 8-byte charset prefix followed by the text in that charset."""
    codec = _USER_COMMENT_CODECS.get(user_comment[:8], "utf-8")
    return user_comment[8:].decode(codec, errors="replace")
