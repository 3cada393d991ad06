"""Motion LoRAs in the WebUI (A1111 and Forge stand-ins): a ``<lora:NAME:weight>`` tag naming a motion-LoRA
file goes to the motion modules instead of the WebUI's LoRA loader (not reported as not found), the panel
field does the same, strength 0 is none, T2I output is unchanged, nothing stays behind, unfitting modules
are refused in one sentence naming both, and without VideoElevator the WebUI sees the tag as before."""
from pathlib import Path

import numpy as np
import pytest
import torch

import motion_files
from test_a1111 import assert_untouched, elevator_p, extension_session, fingerprint, motion_file  # noqa: F401
from test_webui_modes import png_frames

V2 = "mm_sd_v15_v2_tiny.ckpt"
LORA = "v2_lora_ZoomIn"


@pytest.fixture(params=["a1111", "forge"])
def webui(request, tmp_path, motion_file):
    with extension_session(tmp_path, motion_file, request.param) as session:
        models = Path(session.paths.models_path)
        motion_files.write_kind("animatediff_v2", models / "VideoElevator" / V2)
        (models / "Lora").mkdir(parents=True, exist_ok=True)
        motion_files.write_kind("animatediff_v2_motion_lora_diffusers", models / "Lora" / f"{LORA}.safetensors")
        yield session


@pytest.fixture
def jobs(monkeypatch):
    """Every VideoElevator job the script starts (its ``p.videoelevator`` is only a summary afterwards)."""
    from lib_elevator.webui import dispatch

    started, wrap_sample = [], dispatch.wrap_sample
    monkeypatch.setattr(dispatch, "wrap_sample", lambda p, job: started.append(job) or wrap_sample(p, job))
    return started


def adapter_state(job):
    """The motion modules a job used: their weights and hook count."""
    adapter = job.motion.adapter
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in adapter.modules())
    return {k: v.clone() for k, v in adapter.state_dict().items()}, hooks


def assert_same_adapter(before, after):
    assert after[1] == before[1] and all(torch.equal(before[0][k], after[0][k]) for k in after[0])


def run(webui, prompt="a boat", **fields):
    outdir = Path(webui.data_dir) / "outputs" / "txt2vid-videos"
    before = set(outdir.rglob("*-frames")) if outdir.exists() else set()
    p = elevator_p(webui, prompt, formats=["png"], **{"motion_model": V2, **fields})
    processed = webui.run(p)
    (written,) = set(outdir.rglob("*-frames")) - before
    return png_frames(written), p, processed


def test_prompt_tag_reaches_the_motion_modules_and_not_the_webuis_lora_loader(webui, jobs):
    plain, _, _ = run(webui)
    unet_before = fingerprint(webui.unet)
    adapter_before = adapter_state(jobs[-1])
    tagged, p, processed = run(webui, f"a boat <lora:{LORA}:0.8>")
    assert webui.errors == [] and "not found" not in (processed.comments or "")
    (lora, weight), = jobs[-1].prompt_loras
    assert lora.name == f"{LORA}.safetensors" and weight == 0.8
    assert not np.array_equal(tagged, plain)
    panel, _, _ = run(webui, motion_loras=f"{LORA}:0.8")
    assert np.array_equal(panel, tagged)
    zero, _, _ = run(webui, f"a boat <lora:{LORA}:0>")
    assert np.array_equal(zero, plain)
    assert_untouched(unet_before, fingerprint(webui.unet))
    assert_same_adapter(adapter_before, adapter_state(jobs[-1]))


def test_t2i_output_is_unchanged_by_a_motion_lora(webui):
    plain, _, _ = run(webui, mode="t2i")
    tagged, _, _ = run(webui, f"a boat <lora:{LORA}:1>", mode="t2i")
    assert np.array_equal(plain, tagged)


def test_motion_lora_is_gone_after_an_interrupt(webui, jobs):
    from modules import script_callbacks, shared

    run(webui)
    adapter_before = adapter_state(jobs[-1])
    unet_before = fingerprint(webui.unet)
    seen = []

    def stop_at_fourth_call(params):
        seen.append(1)
        if len(seen) == 4:
            shared.state.interrupt()

    script_callbacks.on_cfg_denoiser(stop_at_fourth_call)
    p = elevator_p(webui, f"a boat <lora:{LORA}:1>", motion_model=V2, formats=["png"])
    webui.run(p)
    assert len(seen) == 4 and jobs[-1].prompt_loras
    assert_same_adapter(adapter_before, adapter_state(jobs[-1]))
    assert_untouched(unet_before, fingerprint(webui.unet))


def test_motion_lora_on_a_module_it_does_not_fit_is_refused_naming_both(webui):
    from test_a1111 import MOTION

    before = fingerprint(webui.unet)
    p = elevator_p(webui, f"a boat <lora:{LORA}:1>", motion_model=MOTION)
    with pytest.raises(ValueError) as refusal:
        webui.run(p)
    message = str(refusal.value)
    assert f"'{LORA}.safetensors'" in message and f"'{MOTION}'" in message and "AnimateLCM" in message
    assert_untouched(before, fingerprint(webui.unet))


def test_without_videoelevator_the_webui_handles_the_tag_as_before(webui):
    p = webui.txt2img(f"a boat <lora:{LORA}:1>", scripts=webui.extension)
    processed = webui.run(p)
    assert f"Lora not found: {LORA}" in (processed.comments or "")
