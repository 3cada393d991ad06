"""Stand-in for A1111 ``modules/api/api.py`` (v1.10.1), written for these tests: the txt2img endpoint and the
error middleware, without HTTP (``HTTPException`` is FastAPI's, from the ``fastapi`` stand-in).

``Api().post("/sdapi/v1/txt2img", payload)`` answers ``(status code, JSON body)`` as a client of the real
API sees them. Kept from A1111:

* the request's fields and defaults (``send_images`` true, ``save_images`` false → ``do_not_save_samples``
  and ``do_not_save_grid``); fields the request model does not know are ignored;
* script arguments: every script's UI defaults, then ``alwayson_scripts = {title: {"args": [...]}}``
  overwriting the script's slice positionally (the shorter length wins); an unknown title or a selectable
  script there is an ``HTTPException`` 422;
* the job: ``StableDiffusionProcessingTxt2Img`` with ``is_api`` set, ``p.scripts`` = ``scripts_txt2img``,
  outputs in the txt2img folders, ``process_images`` between ``state.begin``/``state.end``, ``p.close()``;
* the response: ``images`` through ``encode_pil_to_base64`` (``str`` items pass unchanged, PIL images
  become base64 PNG), ``parameters`` (the request), ``info`` = ``processed.js()``;
* errors: any exception becomes ``{"error": class name, "detail": e.detail or "", "body": e.body or "",
  "errors": str(e)}`` with status ``e.status_code`` or 500; exceptions that are not ``HTTPException`` are
  reported to the console with their traceback (``errors.report``).

Left out: selectable scripts (``script_name``), ``infotext``, ``override_settings``, the task queue, every
other endpoint.
"""
import base64
import io
from contextlib import closing

from fastapi.exceptions import HTTPException

from modules import errors, processing, scripts, shared, sd_samplers

TXT2IMG_PATH = "/sdapi/v1/txt2img"
REQUEST_DEFAULTS = {
    "prompt": "", "negative_prompt": "", "styles": None, "seed": -1, "subseed": -1, "subseed_strength": 0,
    "sampler_name": None, "scheduler": None, "batch_size": 1, "n_iter": 1, "steps": 50, "cfg_scale": 7.0,
    "width": 512, "height": 512, "restore_faces": None, "tiling": None, "send_images": True,
    "save_images": False, "alwayson_scripts": {},
}


def encode_pil_to_base64(image) -> str:
    if isinstance(image, str):
        return image
    with io.BytesIO() as buffer:
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")


def script_name_to_index(name: str, script_list) -> int:
    titles = [script.title().lower() for script in script_list]
    if name.lower() not in titles:
        raise HTTPException(status_code=422, detail=f"Script '{name}' not found")
    return titles.index(name.lower())


class Api:
    def __init__(self):
        self.default_script_arg_txt2img = scripts.scripts_txt2img.default_script_args()

    def init_script_args(self, request: dict, runner) -> list:
        script_args = list(self.default_script_arg_txt2img)
        for title, entry in (request["alwayson_scripts"] or {}).items():
            script = runner.scripts[script_name_to_index(title, runner.scripts)]
            if not script.alwayson:
                raise HTTPException(status_code=422, detail="Cannot have a selectable script in the always on scripts params")
            given = entry.get("args", [])
            for index in range(min(script.args_to - script.args_from, len(given))):
                script_args[script.args_from + index] = given[index]
        return script_args

    def text2imgapi(self, payload: dict) -> dict:
        request = {**REQUEST_DEFAULTS, **{k: v for k, v in payload.items() if k in REQUEST_DEFAULTS}}
        runner = scripts.scripts_txt2img
        sampler, scheduler = sd_samplers.get_sampler_and_scheduler(request["sampler_name"], request["scheduler"])
        fields = {k: v for k, v in request.items()
                  if k not in ("alwayson_scripts", "send_images", "save_images", "sampler_name", "scheduler")}
        script_args = self.init_script_args(request, runner)
        opts = shared.opts
        with closing(processing.StableDiffusionProcessingTxt2Img(
                sd_model=shared.sd_model, sampler_name=sampler, scheduler=request["scheduler"] or scheduler,
                do_not_save_samples=not request["save_images"], do_not_save_grid=not request["save_images"],
                **fields)) as p:
            p.is_api = True
            p.scripts = runner
            p.outpath_grids = opts.outdir_txt2img_grids
            p.outpath_samples = opts.outdir_txt2img_samples
            try:
                shared.state.begin(job="scripts_txt2img")
                p.script_args = tuple(script_args)
                processed = processing.process_images(p)
            finally:
                shared.state.end()
                shared.total_tqdm.clear()
        images = [encode_pil_to_base64(image) for image in processed.images + processed.extra_images]
        return {"images": images if request["send_images"] else [], "parameters": payload, "info": processed.js()}

    def post(self, path: str, payload: dict) -> tuple:
        """(status code, JSON body) of ``POST path`` with ``payload``, as the HTTP client receives them."""
        try:
            if path != TXT2IMG_PATH:
                raise HTTPException(status_code=404, detail="Not Found")
            return 200, self.text2imgapi(payload)
        except Exception as error:
            return self.handle_exception(path, error)

    @staticmethod
    def handle_exception(path: str, error: Exception) -> tuple:
        details = vars(error)
        body = {"error": type(error).__name__, "detail": details.get("detail", ""), "body": details.get("body", ""),
                "errors": str(error)}
        if not isinstance(error, HTTPException):
            errors.report(f"API error: POST: {path} {body}", exc_info=True)
        return details.get("status_code", 500), body
