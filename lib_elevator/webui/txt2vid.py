"""The txt2vid tab's host side: one WebUI txt2img job with VideoElevator switched on.

The tab builds the same ``StableDiffusionProcessingTxt2Img`` the txt2img tab builds and runs it
through ``process_images``, with ``scripts_txt2img`` as its scripts, so extra networks,
embeddings, emphasis, prompt editing and other extensions (ControlNet…) behave as in txt2img.
Every txt2img script gets the values its txt2img controls start with; only the Sampler, Seed and
VideoElevator scripts get the tab's values.

WebUI modules are imported inside functions only.
"""
from __future__ import annotations

import html
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ..motion import MotionModelError
from ..params import ParamError
from .request import SCRIPT_FIELDS, RequestError, param_field_names
from .run import ELEVATOR_SAMPLER

ELEVATOR_TITLE = "VideoElevator"
TAB_FIELDS = ("prompt", "negative_prompt", "width", "height", "steps", "scheduler", "cfg_scale", "seed", "n_iter")
PLAYER_FORMATS = (".mp4", ".webm")
PREVIEW_FORMATS = (".gif", ".webp")
SHOWN_ERRORS = (RequestError, ParamError, MotionModelError)


def control_field_names() -> tuple:
    """The VideoElevator controls on the tab: the script's arguments without the on/off switch."""
    return tuple(name for name in SCRIPT_FIELDS + param_field_names() if name != "enabled")


def input_names() -> tuple:
    """The order of the tab's inputs after the task id, as ``generate`` takes them."""
    return TAB_FIELDS + control_field_names()


@dataclass(frozen=True)
class ScriptSlot:
    """One txt2img script's place in ``p.script_args`` and the values its controls start with."""

    title: str
    args_from: int
    args_to: int
    defaults: tuple


def elevator_script_args(controls: dict) -> list:
    """Our script's arguments in its ``ui()`` order, switched on."""
    values = {**controls, "enabled": True}
    return [values[name] for name in SCRIPT_FIELDS + param_field_names()]


def assemble_script_args(slots, overrides: dict) -> list:
    """``p.script_args`` for txt2img: every script's defaults, with the leading arguments of the
    scripts named in ``overrides`` (by title, any case) replaced.

    Slot 0 is the Script dropdown; 0 selects no script, so only the always-on scripts run.
    """
    by_title = {slot.title.lower(): slot for slot in slots}
    replaced = {}
    for title, values in overrides.items():
        slot = by_title.get(title.lower())
        if slot is None:
            raise RequestError(f"txt2vid needs the txt2img script {title!r}, which is not loaded; "
                                     "see the WebUI console for errors while loading scripts")
        if len(values) > slot.args_to - slot.args_from:
            raise ValueError(f"{len(values)} arguments for {title!r}, which takes {slot.args_to - slot.args_from}")
        replaced[title.lower()] = list(values)
    args = [None] * max([1] + [slot.args_to for slot in slots])
    args[0] = 0
    for slot in slots:
        values = replaced.get(slot.title.lower(), [])
        filled = values + list(slot.defaults[len(values):])
        for index, value in zip(range(slot.args_from, slot.args_to), filled):
            args[index] = value
    return args


def live_script_slots(runner) -> list[ScriptSlot]:
    """The slots of the txt2img ``ScriptRunner`` the UI built, with its controls' starting values
    (ui-config.json included). Reading the built controls, rather than calling every ``ui()``
    again, leaves the scripts' own state alone and stays right after a UI reload."""
    return [ScriptSlot(script.name or "", script.args_from, script.args_to,
                       tuple(control.value for control in script.controls or ()))
            for script in runner.scripts if script.args_from is not None]


def pick_outputs(saved) -> tuple:
    """(newest playable video or None, one GIF/WEBP preview per video) from the saved files, oldest
    video first (a video's files share their name before the suffix); MP4 is preferred to WEBM,
    GIF to WEBP."""
    def first(paths, suffixes):
        return next((str(path) for suffix in suffixes for path in paths if path.suffix == suffix), None)

    videos: dict[str, list[Path]] = {}
    for path in map(Path, saved):
        videos.setdefault(path.name.split(".")[0], []).append(path)
    videos = list(videos.values())
    playable = [first(paths, PLAYER_FORMATS) for paths in videos]
    previews = [first(paths, PREVIEW_FORMATS) for paths in videos]
    return next((path for path in reversed(playable) if path), None), [path for path in previews if path]


def info_html(infotext: str, comments: str, saved) -> str:
    """The info area after a run: the generation parameters, the comments and the saved files."""
    texts = (infotext, comments, "\n".join(map(str, saved)))
    paragraphs = (html.escape(text).replace("\n", "<br>") for text in texts if text)
    return "".join(f"<p>{paragraph}</p>" for paragraph in paragraphs)


def error_html(message: str) -> str:
    return f"<div class='error'>{html.escape(message)}</div>"


def run_txt2vid(values: dict):
    """One txt2img job through the WebUI's own processing; returns (Processed, every file saved)."""
    from modules import processing, scripts, shared

    opts = shared.opts
    p = processing.StableDiffusionProcessingTxt2Img(
        outpath_samples=opts.outdir_samples or opts.outdir_txt2img_samples,
        outpath_grids=opts.outdir_grids or opts.outdir_txt2img_grids,
        prompt=values["prompt"],
        styles=[],
        negative_prompt=values["negative_prompt"],
        batch_size=1,
        n_iter=values["n_iter"],
        cfg_scale=values["cfg_scale"],
        width=values["width"],
        height=values["height"],
    )
    p.scripts = scripts.scripts_txt2img
    p.script_args = assemble_script_args(live_script_slots(scripts.scripts_txt2img), {
        "Sampler": [values["steps"], ELEVATOR_SAMPLER, values["scheduler"]],
        "Seed": [values["seed"]],
        ELEVATOR_TITLE: elevator_script_args({name: values[name] for name in control_field_names()}),
    })
    with closing(p):
        processed = processing.process_images(p)
    shared.total_tqdm.clear()
    summary = getattr(p, "videoelevator", None)  # the job's summary; None when it was refused
    return processed, summary["videos"] if isinstance(summary, dict) else []


def generate(id_task: str, *values):
    """The tab's Generate button → (video for the player, previews for the gallery, info HTML).

    ``id_task`` is there for ``call_queue.wrap_gradio_gpu_call``, which tracks progress by it.
    VideoElevator's refusals (raised from ``p.sample``, see ``dispatch.refuse``) come back as a message
    in the info area; the WebUI's own errors reach ``call_queue``'s wrapper, which shows them there too.
    """
    try:
        processed, saved = run_txt2vid(dict(zip(input_names(), values)))
    except SHOWN_ERRORS as error:
        return None, [], error_html(getattr(error, "detail", str(error)))
    player, previews = pick_outputs(saved)
    return player, previews, info_html(processed.info, processed.comments, saved)
