"""The txt2vid tab, for people who only make videos: the WebUI's own txt2img with VideoElevator on.

UI and callback registration only; the run is ``lib_elevator.webui.txt2vid.generate``.
"""
import gradio as gr

from lib_elevator.webui import txt2vid as webui_txt2vid
from lib_elevator.webui.ui import build_elevator_controls
from modules import call_queue, script_callbacks, sd_schedulers, shared

TAB_ID = "txt2vid"


def elem_id(name):
    return f"{TAB_ID}_{name}"


def create_tab():
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row():
            with gr.Column(scale=6):
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id=elem_id("prompt"),
                                    placeholder="Prompt (LoRAs, embeddings and prompt editing work as in txt2img). "
                                                "Prompt travel: one 'frame: text' line per key, e.g. "
                                                "'0: at dawn' and '32: at night'")
                negative_prompt = gr.Textbox(label="Negative prompt", lines=2, elem_id=elem_id("neg_prompt"))
            with gr.Column(scale=1, min_width=160):
                generate = gr.Button("Generate", variant="primary", elem_id=elem_id("generate"),
                                     tooltip="Make Batch count videos with the txt2img pipeline and VideoElevator")
                interrupt = gr.Button("Interrupt", elem_id=elem_id("interrupt"),
                                      tooltip="Stop; what is finished so far is still saved")
        with gr.Row():
            with gr.Column(variant="compact"):
                with gr.Row():
                    width = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id=elem_id("width"))
                    height = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id=elem_id("height"))
                with gr.Row():
                    steps = gr.Slider(1, 150, value=30, step=1, label="Sampling steps", elem_id=elem_id("steps"))
                    schedulers = [scheduler.label for scheduler in sd_schedulers.schedulers]
                    scheduler = gr.Dropdown(schedulers, value=schedulers[0], label="Schedule type",
                                            elem_id=elem_id("scheduler"),
                                            info="the σ ladder; the steps themselves are VideoElevator's own")
                with gr.Row():
                    cfg_scale = gr.Slider(1, 30, value=7.5, step=0.5, label="CFG Scale", elem_id=elem_id("cfg_scale"))
                    seed = gr.Number(-1, label="Seed", precision=0, elem_id=elem_id("seed"))
                    n_iter = gr.Slider(1, 100, value=1, step=1, label="Batch count (videos)", elem_id=elem_id("n_iter"))
                controls = build_elevator_controls(elem_id)
            with gr.Column(elem_id=elem_id("results")):
                video = gr.Video(label="Latest video", interactive=False, elem_id=elem_id("video"))
                gallery = gr.Gallery(label="Previews (GIF/WEBP)", columns=4, elem_id=elem_id("gallery"))
                info = gr.HTML(elem_id=elem_id("info"), elem_classes=["infotext"])
        id_task = gr.Textbox(visible=False)

        by_name = {"prompt": prompt, "negative_prompt": negative_prompt, "width": width, "height": height,
                   "steps": steps, "scheduler": scheduler, "cfg_scale": cfg_scale, "seed": seed, "n_iter": n_iter,
                   **controls}
        generate.click(
            fn=call_queue.wrap_gradio_gpu_call(webui_txt2vid.generate, extra_outputs=[None, None]),
            _js="submit_txt2vid",
            inputs=[id_task] + [by_name[name] for name in webui_txt2vid.input_names()],
            outputs=[video, gallery, info],
            show_progress=False,
        )
        interrupt.click(fn=lambda: shared.state.interrupt(), inputs=[], outputs=[])
    return [(tab, "txt2vid", TAB_ID)]


script_callbacks.on_ui_tabs(create_tab)
