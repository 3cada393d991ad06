"""Stand-in for the parts of A1111 ``modules/images.py`` that processing and extensions use, written for
these tests.

Behaviour kept: ``image_grid`` (row count from ``opts.n_rows``: >0 as set, 0 → the batch size,
-1 → round(√n), or with ``grid_prevent_empty_spots`` the largest divisor of n not above √n; the
``image_grid_callback`` may change the layout); ``get_next_sequence_number``; ``save_image`` file names
(``00001-<seed>.png``, ``grid-0001.png``), ``before_image_saved_callback`` / ``image_saved_callback``,
PNG text chunks with the infotext under "parameters", ``image.already_saved_as``, ``opts.save_txt``,
returns ``(fullfn, txt_fullfn)``.
Simplified: no file name patterns beyond the seed, no date sub-folders (``save_to_dirs`` is ignored),
Pillow formats only, no EXIF, no size-limited JPEG export.
"""
import math
import os

from PIL import Image, PngImagePlugin

from modules import script_callbacks
from modules.shared import opts

MAX_NUMBER_TRIES = 500


def _grid_rows(count, batch_size):
    setting = opts.n_rows
    if setting > 0:
        return setting
    if setting == 0:
        return batch_size
    if not opts.grid_prevent_empty_spots:
        return round(math.sqrt(count))
    return next(rows for rows in range(math.isqrt(count), 0, -1) if count % rows == 0)


def image_grid(imgs, batch_size=1, rows=None):
    """All of ``imgs`` pasted into one RGB picture, row by row, each in a cell of the largest image's size."""
    rows = min(_grid_rows(len(imgs), batch_size) if rows is None else rows, len(imgs))
    layout = script_callbacks.ImageGridLoopParams(imgs, math.ceil(len(imgs) / rows), rows)
    script_callbacks.image_grid_callback(layout)
    cell_w = max(img.width for img in imgs)
    cell_h = max(img.height for img in imgs)
    grid = Image.new("RGB", (layout.cols * cell_w, layout.rows * cell_h), "black")
    for index, img in enumerate(layout.imgs):
        row, col = divmod(index, layout.cols)
        grid.paste(img, (col * cell_w, row * cell_h))
    return grid


def get_next_sequence_number(path, basename):
    """One above the largest number that starts a file name ``<basename>-<number>...`` (or
    ``<number>...`` when ``basename`` is empty) in ``path``; 0 when there is none."""
    prefix = f"{basename}-" if basename else ""
    highest = -1
    for name in os.listdir(path):
        if name.startswith(prefix):
            head = os.path.splitext(name[len(prefix):])[0].split("-", 1)[0]
            if head.isdigit():
                highest = max(highest, int(head))
    return highest + 1


def _target_filename(path, basename, decoration, extension):
    """``<number>[-decoration].<ext>`` with the first unused number (5 digits, or ``<basename>-`` + 4);
    just ``<decoration>.<ext>`` when numbering is off and there is a decoration."""
    if decoration and not opts.save_images_add_number:
        return os.path.join(path, f"{decoration}.{extension}")
    tail = f"-{decoration}" if decoration else ""
    first = get_next_sequence_number(path, basename)
    candidate = None
    for number in range(first, first + MAX_NUMBER_TRIES):
        stem = f"{basename}-{number:04}" if basename else f"{number:05}"
        candidate = os.path.join(path, f"{stem}{tail}.{extension}")
        if not os.path.exists(candidate):
            break
    return candidate


def _write_image(image, filename, text_chunks):
    extension = os.path.splitext(filename)[1].lower()
    image_format = Image.registered_extensions()[extension]
    if extension != ".png":
        image.convert("RGB").save(filename, format=image_format, quality=opts.jpeg_quality)
        return
    png_info = None
    if opts.enable_pnginfo:
        png_info = PngImagePlugin.PngInfo()
        for key, value in text_chunks.items():
            if value is not None:
                png_info.add_text(key, str(value))
    image.save(filename, format=image_format, pnginfo=png_info)


def save_image(image, path, basename, seed=None, prompt=None, extension="png", info=None, short_filename=False, no_prompt=False,
               grid=False, pnginfo_section_name="parameters", p=None, existing_info=None, forced_filename=None, suffix="",
               save_to_dirs=None):
    """Save ``image`` under ``path`` (see the module docstring); returns ``(file name, .txt file name or None)``."""
    os.makedirs(path, exist_ok=True)
    if forced_filename is not None:
        filename = os.path.join(path, f"{forced_filename}.{extension}")
    else:
        seed_part = "" if short_filename or seed is None else str(seed)
        filename = _target_filename(path, basename, seed_part + suffix, extension)

    text_chunks = dict(existing_info or {})
    if info is not None:
        text_chunks[pnginfo_section_name] = info
    params = script_callbacks.ImageSaveParams(image, p, filename, text_chunks)
    script_callbacks.before_image_saved_callback(params)  # a callback may swap image, name or text

    _write_image(params.image, params.filename, params.pnginfo)
    params.image.already_saved_as = params.filename
    infotext = params.pnginfo.get(pnginfo_section_name)
    txt_filename = None
    if opts.save_txt and infotext is not None:
        txt_filename = os.path.splitext(params.filename)[0] + ".txt"
        with open(txt_filename, "w", encoding="utf8") as file:
            print(infotext, file=file)
    script_callbacks.image_saved_callback(params)
    return params.filename, txt_filename
