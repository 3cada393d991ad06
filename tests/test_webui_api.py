"""Requests through the WebUI's API and UI paths on the A1111 stand-in: every bad T2V LoRA is an HTTP 422 with
its message, the T2V LoRA list shows only LoRA files, the response's ``info`` carries the passes and the saved
files, frames and grids are not saved beside the video unless asked for, and UI refusals read as written."""
import base64
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_a1111 import (MOTION, T2V_LORA, assert_untouched, elevator_p, extension_session, fingerprint,  # noqa: F401
                        motion_file, videos_in)

SHORT_API = {"motion_model": MOTION, "frames": 2, "refine_at": [4, 2], "t2v_steps": 2, "formats": ["mp4", "gif"]}
USER_LORA = "style_with_text_encoder.safetensors"


@pytest.fixture
def webui(tmp_path, motion_file):
    with extension_session(tmp_path, motion_file) as session:
        lora_dir = Path(session.shared.cmd_opts.lora_dir)
        lora_dir.mkdir(parents=True, exist_ok=True)
        unet_lora = load_file(str(Path(session.paths.models_path) / "VideoElevator" / T2V_LORA))
        text_encoder = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 32),
                        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(32, 4)}
        save_file({**unet_lora, **text_encoder}, str(lora_dir / USER_LORA))
        yield session


def payload(**fields):
    return {"prompt": "a boat on a lake", "steps": 6, "width": 64, "height": 64, "seed": 42,
            "alwayson_scripts": {"VideoElevator": {"args": [{**SHORT_API, **fields}]}}}


def saved_images(webui):
    outputs = Path(webui.data_dir) / "outputs"
    return sorted(path for folder in ("txt2img-images", "txt2img-grids") for path in (outputs / folder).rglob("*.*"))


@pytest.mark.parametrize("t2v_lora,detail", [
    (USER_LORA, f"T2V LoRA '{USER_LORA}' is not a UNet-only LoRA: it also has text-encoder weights "
                "(e.g. lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"),
    (MOTION, f"T2V LoRA '{MOTION}' is a motion module, not a LoRA; pick it as the motion model"),
    ("missing.safetensors", "T2V LoRA 'missing.safetensors' not found in the LoRA folders"),
    ("AnimateLCM_t2v_lora.safetensors", "T2V LoRA 'AnimateLCM_t2v_lora.safetensors' does not fit this "
                                        "checkpoint's UNet"),
])
def test_a_bad_t2v_lora_is_a_422_with_its_message(webui, t2v_lora, detail):
    before = fingerprint(webui.unet)
    status, body = webui.post_txt2img(payload(t2v_lora=t2v_lora))
    assert status == 422, body
    assert body["detail"].startswith("VideoElevator: ") and detail in body["detail"]
    assert videos_in(webui) == [] and saved_images(webui) == []
    assert_untouched(before, fingerprint(webui.unet))


def test_the_t2v_lora_list_shows_only_unet_loras(webui):
    from lib_elevator.webui.request import SCRIPT_FIELDS

    dropdown = webui.script.ui(False)[SCRIPT_FIELDS.index("t2v_lora")]  # built now, with every file in place
    assert dropdown.choices == ["", "AnimateLCM_t2v_lora.safetensors", T2V_LORA]  # no motion module, no user LoRA


def test_the_api_info_carries_the_passes_and_the_saved_videos(webui):
    status, body = webui.post_txt2img({**payload(t2v_lora=T2V_LORA), "save_images": True})
    assert status == 200, body
    summary = json.loads(body["info"])["videoelevator"]
    assert summary["passes"] == {"t2i": 12, "correction": 0, "t2v": 8, "inversion": 4}
    assert [Path(path).suffix for path in summary["videos"]] == [".mp4", ".gif"]
    assert all(Path(path).is_file() for path in summary["videos"])
    assert base64.b64decode(body["images"][0]) == Path(summary["videos"][0]).read_bytes()
    assert saved_images(webui) == []  # no frame PNGs, no grid: the video is the output


def test_a_ui_run_saves_the_video_only_and_says_how_many_passes(webui):
    processed = webui.run(elevator_p(webui))
    assert saved_images(webui) == []
    assert [path.suffix for path in videos_in(webui)] == [".gif", ".mp4"]
    assert processed.comments.splitlines()[-1] == "UNet passes: T2I 12 · correction 0 · T2V 8 · inversion 4 = 24"


def test_every_frame_as_png_goes_into_the_videos_folder(webui):
    webui.shared.opts.videoelevator_save_frames = True
    webui.run(elevator_p(webui))
    assert saved_images(webui) == []
    video = next(path for path in videos_in(webui) if path.suffix == ".mp4")
    frames = sorted((video.parent / f"{video.stem}-frames").glob("*.png"))
    assert len(frames) == 3


def test_a_ui_refusal_shows_the_message_only(webui):
    from modules import call_queue

    p = elevator_p(webui, frames=1)
    generate = call_queue.wrap_gradio_gpu_call(lambda id_task: (webui.run(p).images, "", ""))
    *_, html = generate("task(1)")
    assert html.startswith("<div class='error'>VideoElevator: frames=1 is not allowed")
