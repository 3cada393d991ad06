"""The comparison video: the T2V alone, the T2I alone and VideoElevator side by side, each labelled
underneath, so a user sees what elevation adds with their own checkpoint (the paper's figures).

Labels are drawn with Pillow's default font; panels are copied pixel for pixel.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COMPARE_ORDER = ("t2v", "t2i", "elevate")
COMPARE_LABELS = {"t2v": "T2V (motion model)", "t2i": "T2I (your checkpoint)", "elevate": "VideoElevator"}
COMPARE_SUFFIX = "-compare"
LABEL_PADDING = 4


def _font(panel_width: int):
    """Pillow's default font at a size that suits the panel (Pillow < 10.1 has one fixed bitmap size)."""
    try:
        return ImageFont.load_default(size=max(8, min(32, panel_width // 20)))
    except TypeError:
        return ImageFont.load_default()


def _wrapped(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels (a single over-long word keeps its own line)."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(candidate) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def label_strip(labels: list[str], panel_width: int) -> np.ndarray:
    """uint8 [h, n·W, 3]: white labels centred under each of n panels on black; h is even."""
    font = _font(panel_width)
    line_height = font.getbbox("Ag")[3] + 2
    wrapped = [_wrapped(label, font, panel_width - 2 * LABEL_PADDING) for label in labels]
    height = max(len(lines) for lines in wrapped) * line_height + 2 * LABEL_PADDING
    height += height % 2
    strip = Image.new("RGB", (panel_width * len(labels), height))
    draw = ImageDraw.Draw(strip)
    for index, lines in enumerate(wrapped):
        for row, line in enumerate(lines):
            left = index * panel_width + (panel_width - font.getlength(line)) / 2
            draw.text((left, LABEL_PADDING + row * line_height), line, fill=(255, 255, 255), font=font)
    return np.asarray(strip)


def side_by_side(videos: Mapping[str, np.ndarray]) -> np.ndarray:
    """The three mode videos (uint8 [F, H, W, 3] each, keyed by mode) as one labelled video,
    panels in ``COMPARE_ORDER``: uint8 [F, H + label height, 3·W, 3]."""
    missing = [mode for mode in COMPARE_ORDER if mode not in videos]
    if missing:
        raise ValueError(f"the comparison needs a video for every mode; missing {', '.join(missing)}")
    panels = [videos[mode] for mode in COMPARE_ORDER]
    if len({panel.shape for panel in panels}) != 1:
        raise ValueError(f"the mode videos differ in shape: {[panel.shape for panel in panels]}")
    frames, _, width, _ = panels[0].shape
    strip = label_strip([COMPARE_LABELS[mode] for mode in COMPARE_ORDER], width)
    row = np.concatenate(panels, axis=2)
    return np.concatenate([row, np.broadcast_to(strip, (frames, *strip.shape))], axis=1)
