"""Optional checks against a real AUTOMATIC1111 WebUI and/or a real Forge 2 (each skipped unless configured).

For A1111 the variables start with ``VIDEOELEVATOR_WEBUI_``, for Forge with ``VIDEOELEVATOR_FORGE_``:

- ``…_URL``: a running WebUI (``--api``) with this extension loaded, or
- ``…_DIR``: a checkout to start here (``…_PYTHON`` runs its ``launch.py``; ``…_ARGS`` adds flags, e.g.
  ``--use-cpu all --skip-torch-cuda-test`` for A1111, ``--always-cpu --skip-torch-cuda-test`` for Forge);
  this repository is linked into its ``extensions/`` for the run.

``…_MOTION`` names the motion model to use (a file in its motion folders); ``…_T2V_LORA`` a T2V LoRA there
(the memory soak is skipped without it).
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
HOSTS = {"a1111": ("VIDEOELEVATOR_WEBUI_", 7871), "forge": ("VIDEOELEVATOR_FORGE_", 7872)}


def setting(host, name, default=None):
    return os.environ.get(HOSTS[host][0] + name, default)


def call(base, path, payload=None, timeout=3600):
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module", params=sorted(HOSTS))
def webui(request):
    host = request.param
    if not (setting(host, "URL") or setting(host, "DIR")):
        pytest.skip(f"set {HOSTS[host][0]}URL or {HOSTS[host][0]}DIR to test against a real {host} WebUI")
    url = setting(host, "URL")
    if url:
        yield host, url.rstrip("/")
        return
    webui_dir = Path(setting(host, "DIR"))
    port = HOSTS[host][1]
    link = webui_dir / "extensions" / "sd-webui-videoelevator"
    made_link = not link.exists()
    if made_link:
        link.symlink_to(REPO, target_is_directory=True)
    python = setting(host, "PYTHON", "python")
    args = [python, "launch.py", "--api", "--nowebui", "--port", str(port), "--skip-install",
            *shlex.split(setting(host, "ARGS", ""))]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(args, cwd=webui_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
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
            yield host, base
        finally:
            os.killpg(server.pid, 15)
            server.wait(60)
            if made_link:
                link.unlink()


def elevator_payload(host, **fields):
    args = {"motion_model": setting(host, "MOTION", ""), "frames": 2, "refine_at": [4, 2],
            "t2v_steps": 2, "formats": ["mp4", "gif"], **fields}
    return {"prompt": "a boat on a lake", "steps": 6, "width": 64, "height": 64, "seed": 42,
            "alwayson_scripts": {"videoelevator": {"args": [args]}}}


def test_the_script_is_listed(webui):
    status, scripts = call(webui[1], "/sdapi/v1/scripts")
    assert status == 200 and "videoelevator" in scripts["txt2img"]


def test_a_bad_payload_is_a_422_naming_the_field(webui):
    host, base = webui
    status, body = call(base, "/sdapi/v1/txt2img", elevator_payload(host, frames=1))
    assert status == 422 and "frames=1" in body["detail"]


def test_a_short_generation_returns_the_videos(webui, tmp_path):
    host, base = webui
    status, body = call(base, "/sdapi/v1/txt2img", elevator_payload(host))
    assert status == 200, body
    mp4 = tmp_path / "video.mp4"
    mp4.write_bytes(base64.b64decode(body["images"][0]))
    with av.open(str(mp4)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 2 and (frames[0].width, frames[0].height) == (64, 64)
    assert "VideoElevator: frames=2 refine_at=4/2" in json.loads(body["info"])["infotexts"][0]


SOAK_RUNS, SOAK_WARM_UP = 30, 5
SOAK_ALLOWED_GROWTH = 64 * 2**20  # one leaked AnimateLCM t2v LoRA per run would be ~130 MB each


def test_memory_stays_flat_over_thirty_videos_with_a_t2v_lora(webui):
    """The server's RSS (``/sdapi/v1/memory``: ``ram.used`` is its own process) after 30 videos is within
    ``SOAK_ALLOWED_GROWTH`` of what it was after the first 5."""
    host, base = webui
    lora = setting(host, "T2V_LORA")
    if not lora:
        pytest.skip(f"set {HOSTS[host][0]}T2V_LORA to a T2V LoRA file in the server's LoRA or motion folders")
    rss = []
    for run in range(SOAK_RUNS):
        status, body = call(base, "/sdapi/v1/txt2img", {**elevator_payload(host, t2v_lora=lora), "seed": run})
        assert status == 200, body
        rss.append(call(base, "/sdapi/v1/memory")[1]["ram"]["used"])
    print(f"\nRSS after {SOAK_WARM_UP} videos {rss[SOAK_WARM_UP - 1] / 2**20:.0f} MB, "
          f"after {SOAK_RUNS} {rss[-1] / 2**20:.0f} MB")
    assert rss[-1] - rss[SOAK_WARM_UP - 1] < SOAK_ALLOWED_GROWTH


def test_every_sampler_gives_euler_s_video_and_every_schedule_type_runs(webui):
    """Whatever the sampler dropdown says the elevator runs on Euler's sampler object (same video), and
    every Schedule type the host lists makes a video."""
    host, base = webui

    def video(sampler_name, scheduler="Automatic"):
        payload = {**elevator_payload(host, formats=["gif"], refine_at=[3, 1], t2v_steps=1),
                   "sampler_name": sampler_name, "scheduler": scheduler}
        status, body = call(base, "/sdapi/v1/txt2img", payload)
        assert status == 200, (sampler_name, scheduler, body)
        assert "Sampler: Euler, Schedule type: " + scheduler in json.loads(body["info"])["infotexts"][0]
        return body["images"][0]

    euler = video("Euler")
    samplers = [sampler["name"] for sampler in call(base, "/sdapi/v1/samplers")[1]]
    assert [name for name in samplers if video(name) != euler] == []
    for scheduler in call(base, "/sdapi/v1/schedulers")[1]:
        video("DPM++ 2M SDE", scheduler["label"])


def test_a_compare_request_returns_the_side_by_side_video_first(webui, tmp_path):
    host, base = webui
    status, body = call(base, "/sdapi/v1/txt2img", elevator_payload(host, compare=True, formats=["mp4"]))
    assert status == 200, body
    assert len(body["images"]) == 4  # compare, then the elevated, T2V-only and T2I-only videos
    sizes = []
    for index, encoded in enumerate(body["images"]):
        path = tmp_path / f"{index}.mp4"
        path.write_bytes(base64.b64decode(encoded))
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
        sizes.append((frame.width, frame.height))
    assert sizes[0][0] >= 3 * 64 and sizes[1:] == [(64, 64)] * 3
