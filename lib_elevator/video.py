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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
from PIL import Image, ExifTags
from PIL.PngImagePlugin import PngInfo

if TYPE_CHECKING:  # planning outputs (the CLI's checks, before any model work) must not wait for torch to import
    import torch

FORMATS = ("mp4", "webm", "gif", "webp", "png")

# Tried in order: the first encoder this PyAV build has is used.
VIDEO_ENCODERS = {
    "mp4": ("libx264", "libopenh264"),
    "webm": ("libvpx-vp9", "libvpx"),
}

# Constant-rate-factor ranges of the encoders above (H.264: 0-51, VP9: 0-63).
CRF_RANGES = {"mp4": (0, 51), "webm": (0, 63)}
MAX_LOOP = 65535  # GIF and WEBP store the loop count in 16 bits

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
    scaled = (video.detach().cpu().float().clamp(-1, 1) + 1) * 127.5
    return scaled.round().byte().permute(0, 2, 3, 1).contiguous().numpy()


class OutputError(ValueError):
    """An output setting that cannot work; the message names the setting and what is allowed."""


@dataclass(frozen=True)
class OutputPlan:
    """Where one video's files go and how they are encoded, checked before anything is generated."""

    stem: Path
    formats: tuple[str, ...]
    crf: int = 18
    loop: int = 0

    def target(self, fmt: str) -> Path:
        """The file (or, for PNG, the frames folder) written for ``fmt``."""
        if fmt == "png":
            return self.stem.with_name(f"{self.stem.name}-frames")
        return self.stem.with_name(f"{self.stem.name}.{fmt}")

    @property
    def targets(self) -> list[Path]:
        return [self.target(fmt) for fmt in self.formats]


def plan_outputs(path: str | Path, formats: Sequence[str] = ("mp4", "gif"), crf: int = 18, loop: int = 0) -> OutputPlan:
    """Check every output setting and the target folder without writing anything.

    ``path`` is a stem (``out/clip``) or a file name whose suffix is one of ``FORMATS``. Existing
    video files are replaced (atomically, once the new one is complete); an existing PNG frames
    folder is refused, since deleting a folder of the user's files is never safe.
    """
    requested = tuple(_validate_formats(formats))
    if isinstance(crf, bool) or not isinstance(crf, int):
        raise OutputError(f"crf={crf!r} is not allowed; a whole number")
    for fmt in requested:
        low, high = CRF_RANGES.get(fmt, (crf, crf))
        if not low <= crf <= high:
            raise OutputError(f"crf={crf} is not allowed; {low}..{high} for {fmt.upper()}")
    if isinstance(loop, bool) or not isinstance(loop, int) or not 0 <= loop <= MAX_LOOP:
        raise OutputError(f"loop={loop!r} is not allowed; a whole number in 0..{MAX_LOOP} (0 = forever)")
    stem = _output_stem(Path(path))
    if stem.name in ("", ".", ".."):
        raise OutputError(f"out={str(path)!r} is not allowed; a file name stem such as outputs/clip")
    plan = OutputPlan(stem, requested, crf, loop)
    _check_folder_writable(stem.parent)
    for fmt, target in zip(requested, plan.targets):
        if fmt == "png" and target.exists():
            raise OutputError(f"{target} already exists; refusing to overwrite a folder of frames "
                              "(move it away or choose another output name)")
        if fmt != "png" and target.is_dir():
            raise OutputError(f"{target} is a folder; choose another output name")
    return plan


def save_video(
    frames: np.ndarray,
    path: str | Path | OutputPlan,
    formats: Sequence[str] = ("mp4", "gif"),
    fps: float | Fraction = 8,
    loop: int = 0,
    parameters: str | None = None,
    crf: int = 18,
) -> list[Path]:
    """Write ``frames`` (uint8 [F, H, W, 3]) once per format and return the written paths.

    ``path`` is an ``OutputPlan`` or a stem (``out/clip``) or file name whose suffix is one of
    ``FORMATS``; each format gets its own suffix. PNG frames go into a folder ``<stem>-frames`` as
    ``<stem>-00000.png``…, and that folder is the path returned.

    ``loop`` (0 = forever) applies to GIF and WEBP; ``crf`` (constant-rate factor, lower is
    better: 0–51 for H.264, 0–63 for VP9) to MP4 and WEBM. Every output is first written to a
    temporary name in the target folder; only when all are complete are they renamed into place,
    so a failure or an interrupt leaves earlier files untouched and no partial file.
    """
    plan = path if isinstance(path, OutputPlan) else plan_outputs(path, formats, crf, loop)
    _validate_frames(frames)
    rate = _frame_rate(fps)
    plan.stem.parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as pending:
        for fmt in plan.formats:
            temporary = pending.enter_context(_atomic_output(plan.target(fmt), directory=fmt == "png"))
            if fmt == "png":
                _write_png_frames(frames, temporary, plan.stem.name, parameters)
            elif fmt in VIDEO_ENCODERS:
                _write_pyav_video(frames, temporary, fmt, rate, parameters, plan.crf)
            else:
                _write_pillow_animation(frames, temporary, fmt, rate, plan.loop, parameters)
    return plan.targets


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
    requested = list(dict.fromkeys(str(fmt).lower().lstrip(".") for fmt in formats))
    unknown = [fmt for fmt in requested if fmt not in FORMATS]
    if unknown:
        raise OutputError(f"format={', '.join(unknown)} is not allowed; one or more of {', '.join(FORMATS)}")
    if not requested:
        raise OutputError(f"no video format requested; one or more of {', '.join(FORMATS)}")
    return requested


def _check_folder_writable(folder: Path) -> None:
    """The output folder, or the nearest part of it that exists (the rest is created), must be a
    writable folder."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write under '{folder}': '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write under '{folder}': no write permission for '{existing}'")


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
    """Yield a temporary sibling of ``target`` and move it into place only when the enclosing
    block succeeds; on any failure (an interrupt included) the temporary is removed.

    A frames folder cannot replace an existing one atomically (``os.replace`` refuses a non-empty
    target), so it is checked again here: nothing is ever merged into or deleted from it."""
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
        if directory and target.exists():
            raise OutputError(f"{target} already exists; refusing to overwrite a folder of frames")
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
    # faststart moves the MP4 index to the front so browsers can play while downloading. Matroska
    # writes a random segment UID unless told to be bit-exact; the same video then gives the same bytes.
    container_options = {"movflags": "+faststart"} if fmt == "mp4" else {"fflags": "+bitexact"}
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


def _write_png_frames(frames: np.ndarray, folder: Path, name: str, parameters: str | None) -> None:
    """One lossless PNG per frame, each with the ``parameters`` chunk so any single frame pastes back."""
    png_info = PngInfo()
    if parameters:
        png_info.add_text(PARAMETERS_KEY, parameters)  # Pillow switches to iTXt for non-Latin-1 text
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{name}-{index:0{FRAME_NUMBER_DIGITS}d}.png", format="PNG",
                                    pnginfo=png_info)


def _decode_user_comment(user_comment: bytes) -> str:
    """EXIF UserComment is an 8-byte charset prefix followed by the text in that charset."""
    codec = _USER_COMMENT_CODECS.get(user_comment[:8], "utf-8")
    return user_comment[8:].decode(codec, errors="replace")
