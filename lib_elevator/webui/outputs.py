"""Where the WebUI's VideoElevator files live: motion-model and LoRA folders, the video folder,
and writing one batch as a video with the WebUI infotext. WebUI modules are imported inside functions.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import weakref

import torch

from ..compare import COMPARE_SUFFIX, side_by_side
from ..video import save_video
from .request import ElevatorRequest

STAGE_LABELS = {"t2i": "T2I", "correction": "correction", "t2v": "T2V", "inversion": "inversion"}
API_INFO_KEY = "videoelevator"
INFOTEXT_KEY = "VideoElevator"


def motion_folders() -> list:
    """Where motion models are looked for: ours first, then AnimateDiff's usual folders."""
    from modules import paths, shared

    ours = getattr(shared.cmd_opts, "videoelevator_dir", None) or os.path.join(paths.models_path, "VideoElevator")
    folders = [ours, os.path.join(paths.models_path, "AnimateDiff"),
               os.path.join(paths.script_path, "extensions", "sd-webui-animatediff", "model")]
    animatediff_setting = shared.opts.data.get("animatediff_model_path")
    if animatediff_setting:
        folders.append(animatediff_setting)
    return folders


def lora_folders() -> list:
    """T2V LoRAs: the motion folders and the WebUI's LoRA folder (where AnimateLCM users keep it)."""
    from modules import paths, shared

    lora_dir = getattr(shared.cmd_opts, "lora_dir", None) or os.path.join(paths.models_path, "Lora")
    return motion_folders() + [lora_dir]


def video_outdir() -> str:
    import datetime
    from modules import shared

    base = shared.opts.data.get("videoelevator_outdir") or os.path.join(
        os.path.dirname(shared.opts.outdir_txt2img_samples or "outputs/txt2img-images") or "outputs", "txt2vid-videos")
    return os.path.join(base, datetime.date.today().isoformat())


def decode_to_unit_range(p, latents) -> list:
    """Latents the WebUI did not decode (a comparison's other modes) → [3, H, W] images in [0, 1], as it decodes."""
    from modules import devices, processing

    decoded = processing.decode_latent_batch(p.sd_model, latents, target_device=devices.cpu, check_for_nans=True)
    return [((image.float() + 1.0) * 0.5).clamp(0.0, 1.0) for image in decoded]


def _uint8_frames(images):
    frames = torch.stack([image.detach().float().cpu() for image in images])  # [F, 3, H, W] in [0, 1]
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_batch_video(p, request: ElevatorRequest, images, batch_number: int, compared: dict | None = None) -> list:
    """Write one batch's video in every requested format, with the WebUI infotext embedded; returns the
    paths written. With ``compared`` (mode → images of the other modes) the single-mode videos (``-t2v``,
    ``-t2i``) and the side-by-side (``-compare``, last) are written beside it."""
    from modules import images as webui_images
    from modules import shared

    outdir = video_outdir()
    os.makedirs(outdir, exist_ok=True)
    number = webui_images.get_next_sequence_number(outdir, "")
    seed = p.all_seeds[batch_number * p.batch_size] if getattr(p, "all_seeds", None) else p.seed
    stem = os.path.join(outdir, f"{number:05}-{seed}")
    formats = list(request.formats)
    if shared.opts.data.get("videoelevator_save_frames", False) and "png" not in formats:
        formats.append("png")
    crf = int(shared.opts.data.get("videoelevator_crf", 18))
    videos = {request.params.mode: _uint8_frames(images)}
    if compared:
        videos.update({mode: _uint8_frames(mode_images) for mode, mode_images in compared.items()})
    written = []
    for mode, frames in videos.items():
        suffix = f"-{mode}" if compared and mode != request.params.mode else ""
        text = _infotext(p, batch_number, dataclasses.replace(request.params, mode=mode).to_infotext())
        written += save_video(frames, stem + suffix, formats, fps=request.params.fps, loop=request.loop,
                              parameters=text, crf=crf)
    if compared:
        text = _infotext(p, batch_number, request.params.to_infotext())
        written += save_video(side_by_side(videos), stem + COMPARE_SUFFIX, formats, fps=request.params.fps,
                              loop=request.loop, parameters=text, crf=crf)
    return written


def _infotext(p, batch_number: int, elevator_fields: str) -> str:
    """The WebUI infotext of this batch with our entry set to ``elevator_fields``."""
    from modules import processing

    saved = p.extra_generation_params.get(INFOTEXT_KEY)
    p.extra_generation_params[INFOTEXT_KEY] = elevator_fields
    try:
        return processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds,
                                          iteration=batch_number, position_in_batch=0)
    finally:
        p.extra_generation_params[INFOTEXT_KEY] = saved


def passes_line(passes: dict, videos: int) -> str:
    """The gallery comment: "UNet passes: T2I 60 · correction 17 · T2V 48 · inversion 67 = 192"."""
    counts = " · ".join(f"{STAGE_LABELS[stage]} {count:g}" for stage, count in passes.items())
    return f"UNet passes{f' for {videos} videos' if videos > 1 else ''}: {counts} = {sum(passes.values()):g}"


def comparison_lines(passes_by_mode: dict) -> list[str]:
    """The comparison's cost: one line per mode and the total."""
    lines = [f"{mode}: {passes_line(passes, 1)}" for mode, passes in passes_by_mode.items()]
    total = sum(sum(passes.values()) for passes in passes_by_mode.values())
    return lines + [f"VideoElevator comparison, all modes: {total:g} UNet passes"]


def add_to_api_info(processed, summary: dict) -> None:
    """Make ``processed.js()``, the API response's ``info``, carry ``summary`` under "videoelevator".

    ``js`` builds its JSON from a fixed list of fields, so the instance gets its own ``js`` that adds
    ours; it holds ``processed`` weakly, so the two form no reference cycle.
    """
    processed_ref = weakref.ref(processed)
    class_js = type(processed).js
    processed.js = lambda: json.dumps({**json.loads(class_js(processed_ref())), API_INFO_KEY: summary})
