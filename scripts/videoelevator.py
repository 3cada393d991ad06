"""VideoElevator for the AUTOMATIC1111 and Forge WebUIs: the txt2img panel, its callbacks and outputs.

Only wiring lives here; the algorithm and the host adapters are in ``lib_elevator`` (the adapter is
picked per generation from the loaded model, see ``lib_elevator.webui.dispatch.host_for``).
"""
import base64

import gradio as gr

from lib_elevator.webui import dispatch, outputs
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

INFOTEXT_KEY = "VideoElevator"
MOTION_CACHE = MotionModelCache()
T2V_LORA_CACHE = FileCache(load_t2v_lora)

a1111.register_callbacks()


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
            if name in ElevatorParams.__dataclass_fields__ or name in ("motion_model", "t2v_lora", "solver")]
        self.paste_field_names = [f"{INFOTEXT_KEY} {name}" for name in by_name]
        return [by_name[name] for name in SCRIPT_FIELDS + param_field_names()]

    def before_process(self, p, *args):
        p.videoelevator = None
        try:
            request = ElevatorRequest.from_script_args(args)
            if not request.enabled:
                return
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
        return MotionModel(request.motion_model, adapter, info, request.solver, lora, request.t2v_lora)

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Forge re-copies its UNet patcher right before this; the run patches that copy (A1111: no-op)."""
        job = getattr(p, "videoelevator", None)
        if isinstance(job, dispatch.ElevatorJob) and job.active is not None:
            job.active.before_sampling(p)

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        job = getattr(p, "videoelevator", None)
        if isinstance(job, dispatch.ElevatorJob):
            job.videos += outputs.save_batch_video(p, job.request, pp.images, kwargs.get("batch_number", 0))

    def postprocess(self, p, processed, *args):
        """Videos into the gallery (UI) or the response (API), the pass counts into the comment and the
        API's ``info``; then the job ends and ``p.videoelevator`` keeps only its plain summary."""
        job = getattr(p, "videoelevator", None)
        if not isinstance(job, dispatch.ElevatorJob):
            return
        summary = p.videoelevator = job.summary()
        outputs.add_to_api_info(processed, summary)
        if job.counters:
            line = outputs.passes_line(summary["passes"], len(job.counters))
            processed.comments = f"{processed.comments}\n{line}" if processed.comments else line
        if not job.videos:
            return
        if getattr(p, "is_api", False):
            processed.images = [base64.b64encode(path.read_bytes()).decode("ascii")
                                for path in job.videos if path.is_file()]
        else:
            processed.images = [str(path) for path in job.videos if path.suffix in (".gif", ".webp")] + processed.images
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
