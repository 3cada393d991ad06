"""VideoElevator for the AUTOMATIC1111 and Forge WebUIs: the txt2img panel, its callbacks and outputs.

Only wiring lives here; the algorithm and the host adapters are in ``lib_elevator`` (the adapter is
picked per generation from the loaded model, see ``lib_elevator.webui.dispatch.host_for``).
"""
import base64

import gradio as gr
from PIL import Image

from lib_elevator.compare import COMPARE_SUFFIX
from lib_elevator.webui import dispatch, motion_loras, outputs, travel, xyz
from lib_elevator.webui.outputs import INFOTEXT_KEY
from lib_elevator.webui.hosts import a1111
from lib_elevator.webui.request import DEFAULT_FORMATS, SCRIPT_FIELDS, ElevatorRequest, MotionModel, RequestError, param_field_names
from lib_elevator.webui.ui import build_elevator_controls
from lib_elevator.motion import MotionModelError
from lib_elevator.lora import load_t2v_lora, resolve_t2v_lora
from lib_elevator.motion.library import FileCache, MotionModelCache, resolve_motion_model
from lib_elevator.params import ElevatorParams
from lib_elevator.video import FORMATS
from modules import script_callbacks, scripts, shared
from modules.ui_components import InputAccordion

MOTION_CACHE = MotionModelCache()
T2V_LORA_CACHE = FileCache(load_t2v_lora)

a1111.register_callbacks()
xyz.register_axes()  # the WebUI loads its own scripts (the X/Y/Z plot) before extensions' scripts


class VideoElevatorScript(scripts.Script):
    def title(self):
        return "VideoElevator"

    def show(self, is_img2img):
        return scripts.AlwaysVisible if not is_img2img else False

    def ui(self, is_img2img):
        with InputAccordion(False, label="VideoElevator", elem_id=self.elem_id("enabled")) as enabled:
            by_name = {"enabled": enabled, **build_elevator_controls(self.elem_id)}
        self.infotext_fields = [(enabled, lambda params: INFOTEXT_KEY in params)] + [
            (component, f"{INFOTEXT_KEY} {name}") for name, component in by_name.items()
            if name in ElevatorParams.__dataclass_fields__
            or name in ("motion_model", "t2v_lora", "solver", "compare", "motion_loras")]
        self.paste_field_names = [f"{INFOTEXT_KEY} {name}" for name in by_name]
        return [by_name[name] for name in SCRIPT_FIELDS + param_field_names()]

    def before_process(self, p, *args):
        p.videoelevator = None
        try:
            request = ElevatorRequest.from_script_args(args).with_overrides(getattr(p, xyz.OVERRIDES, {}))
            if not request.enabled:
                return
            motion_loras.route_prompt_motion_loras()
            motion = self._motion_model(request)
            reasons = dispatch.refusal_reasons(p, request.params, motion)
            if reasons:
                raise RequestError("VideoElevator: " + "; ".join(reasons))
            request.params.refine_steps_remaining(p.steps)
        except Exception as error:  # anything raised here would be logged and ignored by the WebUI
            dispatch.refuse(p, error)
            return
        p.batch_size = request.params.frames
        p.do_not_save_samples = p.do_not_save_grid = True  # the video is the output; frames only on request (PNG)
        p.get_token_merging_ratio = lambda for_hr=False: 0.0  # ToMe merges tokens across the frame layout
        p.extra_generation_params[INFOTEXT_KEY] = request.params.to_infotext()
        p.extra_generation_params[f"{INFOTEXT_KEY} motion_model"] = request.motion_model
        if request.t2v_lora:
            p.extra_generation_params[f"{INFOTEXT_KEY} t2v_lora"] = request.t2v_lora
        if request.solver != "auto":
            p.extra_generation_params[f"{INFOTEXT_KEY} solver"] = request.solver
        if request.compare:
            p.extra_generation_params[f"{INFOTEXT_KEY} compare"] = True
        if request.motion_loras:
            p.extra_generation_params[f"{INFOTEXT_KEY} motion_loras"] = ", ".join(request.motion_loras)
        p.videoelevator = dispatch.ElevatorJob(request, motion)
        dispatch.wrap_sample(p, p.videoelevator)

    def _motion_model(self, request):
        try:
            path = resolve_motion_model(request.motion_model, outputs.motion_folders())
            adapter, info = MOTION_CACHE.get(path)
            lora = None
            if request.t2v_lora:
                lora = T2V_LORA_CACHE.get(resolve_t2v_lora(request.t2v_lora, outputs.lora_folders()))
        except MotionModelError as error:
            raise RequestError(f"VideoElevator: {error}") from None
        return MotionModel(request.motion_model, adapter, info, request.solver, lora, request.t2v_lora,
                           motion_loras.panel_motion_loras(request.motion_loras))

    def process_batch(self, p, *args, **kwargs):
        """Prompt travel: each frame gets its key's prompt before the WebUI encodes the batch (tags already out)."""
        job = getattr(p, "videoelevator", None)
        if isinstance(job, dispatch.ElevatorJob):
            job.travel = travel.key_prompts(p, job.request.params)

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Forge re-copies its UNet patcher right before this; the run patches that copy (A1111: no-op)."""
        job = getattr(p, "videoelevator", None)
        if isinstance(job, dispatch.ElevatorJob) and job.active is not None:
            job.active.before_sampling(p)
            job.active.take_noise(p, kwargs.get("noise", kwargs.get("x")))

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        job = getattr(p, "videoelevator", None)
        if not isinstance(job, dispatch.ElevatorJob):
            return
        batch_number = kwargs.get("batch_number", 0)
        compared = None
        if job.request.compare:
            compared = {mode: outputs.decode_to_unit_range(p, latents)
                        for mode, latents in job.compared[batch_number].items()}
        job.videos += outputs.save_batch_video(p, job.request, pp.images, batch_number, compared)

    def postprocess(self, p, processed, *args):
        """Videos into the gallery (UI) or the response (API), the pass counts into the comment and the
        API's ``info``; then the job ends and ``p.videoelevator`` keeps only its plain summary."""
        job = getattr(p, "videoelevator", None)
        if not isinstance(job, dispatch.ElevatorJob):
            return
        summary = p.videoelevator = job.summary()
        outputs.add_to_api_info(processed, summary)
        if job.counters:
            lines = (outputs.comparison_lines(summary["passes_by_mode"]) if job.request.compare
                     else [outputs.passes_line(summary["passes"], len(job.counters))])
            processed.comments = "\n".join(([processed.comments] if processed.comments else []) + lines)
        if not job.videos:
            return
        videos = sorted(job.videos, key=lambda path: not path.stem.endswith(COMPARE_SUFFIX))  # the comparison first
        if getattr(p, "is_api", False):
            processed.images = [base64.b64encode(path.read_bytes()).decode("ascii")
                                for path in videos if path.is_file()]
        else:
            previews = [str(path) for path in videos if path.suffix in (".gif", ".webp")]
            if getattr(p, xyz.GRID_CELL, False) and previews:  # the plot pastes the first image into its grid
                previews[0] = Image.open(previews[0]).convert("RGB")
            processed.images = previews + processed.images
        processed.infotexts = [processed.infotexts[0]] * len(processed.images) if processed.infotexts else []


def on_infotext_pasted(infotext, params):
    """Split ``VideoElevator: frames=16 refine_at=...`` into the panel's per-field keys."""
    text = params.get(INFOTEXT_KEY)
    if not isinstance(text, str):
        return
    try:
        restored = ElevatorParams.from_infotext(text).to_dict()
    except ValueError:
        return
    for name, value in restored.items():
        params[f"{INFOTEXT_KEY} {name}"] = ", ".join(f"{v:g}" for v in value) if name == "refine_at" else value


def on_ui_settings():
    section = ("videoelevator", "VideoElevator")
    shared.opts.add_option("videoelevator_formats", shared.OptionInfo(
        list(DEFAULT_FORMATS), "Default output formats", gr.CheckboxGroup, {"choices": list(FORMATS)},
        section=section))
    shared.opts.add_option("videoelevator_crf", shared.OptionInfo(
        18, "MP4/WEBM quality (CRF, lower is better)", gr.Slider, {"minimum": 0, "maximum": 51, "step": 1},
        section=section))
    shared.opts.add_option("videoelevator_save_frames", shared.OptionInfo(
        False, "Also save every frame as PNG", section=section))
    shared.opts.add_option("videoelevator_outdir", shared.OptionInfo(
        "", "Output folder for videos (empty = outputs/txt2vid-videos)", section=section))


script_callbacks.on_infotext_pasted(on_infotext_pasted)
script_callbacks.on_ui_settings(on_ui_settings)
