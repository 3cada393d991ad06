"""Modes and the comparison in the WebUI, on the A1111 and Forge stand-ins: mode t2v runs the host's own
sampler with the motion modules on for every call, mode t2i is the elevator without refinement, and a
compare request writes the three videos and the side-by-side, which the API returns first."""
import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_a1111 import MOTION, assert_untouched, elevator_p, extension_session, fingerprint, motion_file  # noqa: F401

STEPS = 6


@pytest.fixture(params=["a1111", "forge"])
def webui(request, tmp_path, motion_file):
    with extension_session(tmp_path, motion_file, request.param) as session:
        session.host = request.param
        yield session


def png_frames(folder) -> np.ndarray:
    return np.stack([np.asarray(Image.open(path).convert("RGB")) for path in sorted(Path(folder).glob("*.png"))])


def run_pngs(webui, **fields):
    """Run one request writing PNG frames; returns ({stem suffix: frames}, p, processed)."""
    outdir = Path(webui.data_dir) / "outputs" / "txt2vid-videos"
    before = set(outdir.rglob("*-frames")) if outdir.exists() else set()
    sampler = fields.pop("sampler_name", "Euler")
    p = elevator_p(webui, steps=STEPS, formats=["png"], **fields)
    p.sampler_name = sampler
    processed = webui.run(p)
    assert webui.errors == []
    written = sorted(set(outdir.rglob("*-frames")) - before)
    return {folder.name.split("-", 2)[-1].removesuffix("frames"): png_frames(folder) for folder in written}, p, processed


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M"])
def test_t2v_mode_samples_with_the_hosts_sampler_and_the_motion_models_schedule(webui, sampler, monkeypatch):
    from modules import sd_samplers

    from lib_elevator.schedules import ANIMATEDIFF_SCHEDULE

    before = fingerprint(webui.unet)
    alphas = getattr(webui.sd_model, "alphas_cumprod", None)
    created, ladders, create = [], [], sd_samplers.create_sampler

    def recording_create_sampler(*args):
        sampler_object = create(*args)
        get_sigmas = sampler_object.get_sigmas
        sampler_object.get_sigmas = lambda *a: ladders.append(get_sigmas(*a)) or ladders[-1]
        created.append(sampler_object)
        return sampler_object

    monkeypatch.setattr(sd_samplers, "create_sampler", recording_create_sampler)
    videos, p, _ = run_pngs(webui, mode="t2v", sampler_name=sampler)
    assert [s.config.name for s in created] == [sampler] and created[0].func.__name__ != "sample_videoelevator"
    assert float(ladders[0][0]) == pytest.approx(ANIMATEDIFF_SCHEDULE.sigma_max, rel=1e-4)  # not SD's 14.6
    assert p.videoelevator["passes"] == {"t2i": 0, "correction": 0, "t2v": 2 * STEPS, "inversion": 0}
    assert_untouched(before, fingerprint(webui.unet))
    if alphas is not None:
        assert webui.sd_model.alphas_cumprod is alphas and webui.sd_model.alphas_cumprod_original is alphas
    elevated, _, _ = run_pngs(webui, sampler_name=sampler)
    assert not np.array_equal(videos[""], elevated[""])


def test_t2i_mode_is_the_elevator_without_refinement(webui):
    t2i, p, _ = run_pngs(webui, mode="t2i")
    assert p.videoelevator["passes"]["t2v"] == 0
    unrefined, _, _ = run_pngs(webui, refine_at="")
    assert np.array_equal(t2i[""], unrefined[""])


def test_compare_writes_each_mode_and_the_side_by_side_and_the_api_returns_it_first(webui):
    videos, p, processed = run_pngs(webui, compare=True)
    assert sorted(videos) == ["", "compare-", "t2i-", "t2v-"]
    height, width = videos[""].shape[1:3]
    side = videos["compare-"]
    assert side.shape[2] == 3 * width and side.shape[1] > height
    for index, key in enumerate(["t2v-", "t2i-", ""]):
        assert np.array_equal(side[:, :height, index * width:(index + 1) * width], videos[key]), key
    for mode in ("t2v", "t2i"):
        single, _, _ = run_pngs(webui, mode=mode)
        assert np.array_equal(single[""], videos[f"{mode}-"]), mode  # the same seed and initial noise
    elevated, _, _ = run_pngs(webui)
    assert np.array_equal(elevated[""], videos[""])
    by_mode = p.videoelevator["passes_by_mode"]
    totals = {mode: sum(passes.values()) for mode, passes in by_mode.items()}
    assert totals["t2v"] == totals["t2i"] == 2 * STEPS and by_mode["elevate"]["inversion"] > 0
    assert f"VideoElevator comparison, all modes: {sum(totals.values()):g} UNet passes" in processed.comments
    assert f"t2v: UNet passes: T2I 0 · correction 0 · T2V {2 * STEPS} · inversion 0 = {2 * STEPS}" in processed.comments

    api = elevator_p(webui, steps=STEPS, api={"motion_model": MOTION, "frames": 3, "refine_at": "4,2",
                                             "t2v_steps": 2, "compare": True, "formats": ["gif"]})
    api.is_api = True
    returned = webui.run(api).images
    assert len(returned) == 4 and all(isinstance(item, str) for item in returned)  # base64 files, no frames
    sizes = [Image.open(io.BytesIO(base64.b64decode(item))).size for item in returned]
    assert sizes[0][0] == 3 * width and all(size == (width, height) for size in sizes[1:])


def test_every_panel_control_has_a_human_label_and_keeps_its_hint(webui):
    from lib_elevator.webui.labels import LABELS
    from lib_elevator.webui.request import SCRIPT_FIELDS, param_field_names

    names = SCRIPT_FIELDS + param_field_names()
    controls = dict(zip(names, webui.script.controls))
    for name, control in controls.items():
        if name == "enabled":
            continue
        assert control.label == LABELS[name] and control.label != name.replace("_", " "), name
        assert control.kwargs.get("info"), name
    assert controls["d_t"].label == "Motion smoothing (temporal cut-off d_t)"
    assert controls["t2v_cfg_scale"].label == "Motion model CFG" and controls["noise_alpha"].label == "Shared noise (α)"
