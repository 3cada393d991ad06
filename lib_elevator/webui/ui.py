"""The VideoElevator controls, one builder for both places they appear: the txt2img accordion
and the txt2vid tab, so the two never drift apart.

Gradio only; the WebUI's settings are read inside the builder.
"""
from __future__ import annotations

import gradio as gr

from .labels import LABELS
from .outputs import lora_folders, motion_folders
from .request import DEFAULT_FORMATS, SOLVERS
from ..lora import list_t2v_loras
from ..motion.library import list_motion_models
from ..params import ElevatorParams, field_specs
from ..video import FORMATS

DEFAULTS = ElevatorParams()


def _choices(files) -> list:
    """The dropdown's choices: empty (nothing picked) and every file found."""
    return [""] + sorted(files)


def _slider(spec, step):
    meta = spec.metadata
    low = meta["low"] + (step if meta["open_low"] else 0)
    return gr.Slider(low, meta["high"], value=spec.default, step=step, label=LABELS[spec.name], info=meta["help"])


def build_elevator_controls(elem_id) -> dict:
    """Every VideoElevator control except the on/off switch, keyed by its script argument name.

    ``elem_id(name)`` gives the page-unique element id in the place being built.
    """
    from modules import shared

    specs = {spec.name: spec for spec in field_specs()}
    with gr.Row():
        motion_model = gr.Dropdown(_choices(list_motion_models(motion_folders())), value="", label=LABELS["motion_model"],
                                   info="AnimateDiff v1/v2/v3 or AnimateLCM motion module (the T2V)",
                                   elem_id=elem_id("motion_model"))
        refresh = gr.Button("\U0001f504", elem_id=elem_id("refresh"), scale=0, min_width=40)
    with gr.Row():
        mode = gr.Radio(list(specs["mode"].metadata["choices"]), value=DEFAULTS.mode, label=LABELS["mode"],
                        info=specs["mode"].metadata["help"], elem_id=elem_id("mode"))
        compare = gr.Checkbox(False, label=LABELS["compare"], elem_id=elem_id("compare"),
                              info="same seed and noise; the player shows the three side by side")
    with gr.Row():
        frames = _slider(specs["frames"], 1)
        fps = _slider(specs["fps"], 1)
    with gr.Row():
        refine_at = gr.Textbox(", ".join(f"{v:g}" for v in DEFAULTS.refine_at), label=LABELS["refine_at"],
                               info=specs["refine_at"].metadata["help"], elem_id=elem_id("refine_at"))
        t2v_steps = _slider(specs["t2v_steps"], 1)
        t2v_cfg_scale = _slider(specs["t2v_cfg_scale"], 0.5)
        d_t = _slider(specs["d_t"], 0.05)
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            filter_shape = gr.Dropdown(list(specs["filter"].metadata["choices"]), value=DEFAULTS.filter,
                                       label=LABELS["filter"], info=specs["filter"].metadata["help"])
            d_s = _slider(specs["d_s"], 0.05)
            butterworth_order = _slider(specs["butterworth_order"], 1)
            noise_alpha = _slider(specs["noise_alpha"], 0.1)
        with gr.Row():
            correction = gr.Checkbox(DEFAULTS.correction, label=LABELS["correction"],
                                     info=specs["correction"].metadata["help"])
            solver = gr.Radio(list(SOLVERS), value="auto", label=LABELS["solver"],
                              info="auto = LCM for AnimateLCM, DDIM for AnimateDiff")
            motion_norm = gr.Radio(list(specs["motion_norm"].metadata["choices"]), value=DEFAULTS.motion_norm,
                                   label=LABELS["motion_norm"], info=specs["motion_norm"].metadata["help"])
        with gr.Row():
            motion_loras = gr.Textbox("", label=LABELS["motion_loras"], elem_id=elem_id("motion_loras"),
                                      info="AnimateDiff v2 camera LoRAs as NAME or NAME:weight, comma-separated "
                                           "(or write <lora:NAME:weight> in the prompt)")
        with gr.Row():
            t2v_lora = gr.Dropdown(_choices(list_t2v_loras(lora_folders())), value="", label=LABELS["t2v_lora"],
                                   info="applied only in T2V passes, e.g. AnimateLCM_sd15_t2v_lora")
            t2v_lora_scale = _slider(specs["t2v_lora_scale"], 0.05)
    with gr.Accordion("Long video", open=False):
        gr.Markdown("Clips longer than the motion model's frame limit run the T2V over overlapping **context "
                    "windows** of *context length* frames (0 = 16, capped by the motion model); *closed loop* "
                    "wraps the last windows onto the first frames for a seamless loop. *Frames per UNet batch* "
                    "sends the T2I passes through the UNet that many frames at a time: less memory, same video. "
                    "**Prompt travel**: write frame keys in the prompt, one `frame: text` line each (`0: at dawn`, "
                    "`32: at night`, frames counted from 0); lines before the first key and after the last are added "
                    "to every key, and each frame's conditioning moves from key to key (*prompt travel "
                    "interpolation*). LoRA tags in any line apply once to the whole clip.")
        with gr.Row():
            context = gr.Checkbox(DEFAULTS.context, label=LABELS["context"], info=specs["context"].metadata["help"])
            closed_loop = gr.Checkbox(DEFAULTS.closed_loop, label=LABELS["closed_loop"],
                                      info=specs["closed_loop"].metadata["help"])
            context_fuse = gr.Dropdown(list(specs["context_fuse"].metadata["choices"]), value=DEFAULTS.context_fuse,
                                       label=LABELS["context_fuse"], info=specs["context_fuse"].metadata["help"])
        with gr.Row():
            context_length = _slider(specs["context_length"], 1)
            context_overlap = _slider(specs["context_overlap"], 1)
            context_stride = _slider(specs["context_stride"], 1)
            frames_per_batch = _slider(specs["frames_per_batch"], 1)
            prompt_interpolation = gr.Dropdown(list(specs["prompt_interpolation"].metadata["choices"]),
                                               value=DEFAULTS.prompt_interpolation, label=LABELS["prompt_interpolation"],
                                               info=specs["prompt_interpolation"].metadata["help"])
    with gr.Row():
        default_formats = shared.opts.data.get("videoelevator_formats", list(DEFAULT_FORMATS))
        formats = gr.CheckboxGroup(list(FORMATS), value=default_formats, label=LABELS["formats"],
                                   info="GIF/WEBP show in the gallery; PNG = every frame")
        loop = gr.Number(0, label=LABELS["loop"], precision=0, info="GIF/WEBP loop count")

    def refresh_lists():
        return (gr.update(choices=_choices(list_motion_models(motion_folders()))),
                gr.update(choices=_choices(list_t2v_loras(lora_folders()))))

    refresh.click(refresh_lists, inputs=[], outputs=[motion_model, t2v_lora])
    return {
        "mode": mode, "compare": compare, "motion_loras": motion_loras,
        "motion_model": motion_model, "t2v_lora": t2v_lora, "solver": solver, "formats": formats, "loop": loop,
        "frames": frames, "refine_at": refine_at, "t2v_steps": t2v_steps, "t2v_cfg_scale": t2v_cfg_scale,
        "filter": filter_shape, "d_s": d_s, "d_t": d_t, "butterworth_order": butterworth_order,
        "noise_alpha": noise_alpha, "correction": correction, "t2v_lora_scale": t2v_lora_scale, "fps": fps,
        "motion_norm": motion_norm,
        "context": context, "context_length": context_length, "context_overlap": context_overlap,
        "context_stride": context_stride, "context_fuse": context_fuse, "closed_loop": closed_loop,
        "frames_per_batch": frames_per_batch, "prompt_interpolation": prompt_interpolation,
    }
