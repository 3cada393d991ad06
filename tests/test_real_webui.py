"""Optional checks against a real AUTOMATIC1111 WebUI (skipped unless one is configured).

- ``VIDEOELEVATOR_WEBUI_URL``: a running WebUI (``--api``) with this extension loaded, or
- ``VIDEOELEVATOR_WEBUI_DIR``: a WebUI checkout to start here (``VIDEOELEVATOR_WEBUI_PYTHON`` runs its
  ``launch.py``; ``VIDEOELEVATOR_WEBUI_ARGS`` adds flags, e.g. ``--use-cpu all --skip-torch-cuda-test``);
  this repository is linked into its ``extensions/`` for the run.

``VIDEOELEVATOR_WEBUI_MOTION`` names the motion model to use (a file in its motion folders).
"""
import base64
import json
import os
import shlex
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import pytest

REPO = Path(__file__).resolve().parent.parent
PORT = 7871

pytestmark = pytest.mark.skipif(
    not (os.environ.get("VIDEOELEVATOR_WEBUI_URL") or os.environ.get("VIDEOELEVATOR_WEBUI_DIR")),
    reason="set VIDEOELEVATOR_WEBUI_URL or VIDEOELEVATOR_WEBUI_DIR to test against a real WebUI")


def call(base, path, payload=None, timeout=3600):
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def webui():
    url = os.environ.get("VIDEOELEVATOR_WEBUI_URL")
    if url:
        yield url.rstrip("/")
        return
    webui_dir = Path(os.environ["VIDEOELEVATOR_WEBUI_DIR"])
    link = webui_dir / "extensions" / "sd-webui-videoelevator"
    made_link = not link.exists()
    if made_link:
        link.symlink_to(REPO, target_is_directory=True)
    python = os.environ.get("VIDEOELEVATOR_WEBUI_PYTHON", "python")
    args = [python, "launch.py", "--api", "--nowebui", "--port", str(PORT), "--skip-install",
            *shlex.split(os.environ.get("VIDEOELEVATOR_WEBUI_ARGS", ""))]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(args, cwd=webui_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{PORT}"
        try:
            for _ in range(600):
                try:
                    if call(base, "/sdapi/v1/sd-models", timeout=5)[0] == 200:
                        break
                except OSError:
                    time.sleep(1)
            else:
                log.seek(0)
                pytest.fail("the WebUI did not start:\n" + log.read().decode(errors="replace")[-3000:])
            yield base
        finally:
            os.killpg(server.pid, 15)
            server.wait(60)
            if made_link:
                link.unlink()


def elevator_payload(**fields):
    args = {"motion_model": os.environ.get("VIDEOELEVATOR_WEBUI_MOTION", ""), "frames": 2, "refine_at": [4, 2],
            "t2v_steps": 2, "formats": ["mp4", "gif"], **fields}
    return {"prompt": "a boat on a lake", "steps": 6, "width": 64, "height": 64, "seed": 42,
            "alwayson_scripts": {"videoelevator": {"args": [args]}}}


def test_the_script_is_listed(webui):
    status, scripts = call(webui, "/sdapi/v1/scripts")
    assert status == 200 and "videoelevator" in scripts["txt2img"]


def test_a_bad_payload_is_a_422_naming_the_field(webui):
    status, body = call(webui, "/sdapi/v1/txt2img", elevator_payload(frames=1))
    assert status == 422 and "frames=1" in body["detail"]


def test_a_short_generation_returns_the_videos(webui, tmp_path):
    status, body = call(webui, "/sdapi/v1/txt2img", elevator_payload())
    assert status == 200, body
    mp4 = tmp_path / "video.mp4"
    mp4.write_bytes(base64.b64decode(body["images"][0]))
    with av.open(str(mp4)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 2 and (frames[0].width, frames[0].height) == (64, 64)
    assert "VideoElevator: frames=2 refine_at=4/2" in json.loads(body["info"])["infotexts"][0]
