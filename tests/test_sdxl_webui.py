"""SDXL checkpoints in the WebUIs (A1111 1.10 and Forge 2 stand-ins): a motion model made for another base
model is refused in one sentence naming both sides; an SDXL checkpoint with an SDXL motion model is refused
with where SDXL runs today (the standalone tool). Nothing is changed either way."""
from pathlib import Path

import pytest

import motion_files
from test_a1111 import elevator_p, extension_session, motion_file  # noqa: F401
from test_sdxl_motion import sgm_shaped_pair

SDXL_MOTION = "mm_sdxl_v10_beta_tiny.ckpt"


@pytest.fixture(params=["a1111", "forge"])
def sdxl_session(request, tmp_path, motion_file):  # noqa: F811
    """A session whose loaded checkpoint is SDXL-shaped (an sgm-shaped UNet at a tenth of SDXL's width)."""
    with extension_session(tmp_path, motion_file, request.param) as session:
        motion_files.write_kind("animatediff_sdxl_beta", Path(session.paths.models_path) / "VideoElevator" / SDXL_MOTION)
        _, sgm = sgm_shaped_pair()
        model = session.sd_model
        if request.param == "forge":
            model.forge_objects.unet.model.diffusion_model = sgm
            model.is_sd1 = False
        else:
            model.model.diffusion_model = sgm
        model.is_sdxl = True
        session.sgm = sgm
        yield session


def unet_state(unet):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules())
    return {k: v.clone() for k, v in unet.state_dict().items()}, hooks


@pytest.mark.parametrize("motion, refusal", [
    ("AnimateLCM_tiny.safetensors",
     r"The AnimateLCM motion module is made for SD1\.5 UNets \(block channels 32/64/128/128.*\), but the loaded "
     r"model's UNet is shaped differently \(block channels 32/64/128,"),
    (SDXL_MOTION, r"SDXL checkpoints are not supported inside the WebUI yet; .* standalone tool"),
])
def test_sdxl_checkpoint_refusals_name_both_sides_and_change_nothing(sdxl_session, motion, refusal):
    before = unet_state(sdxl_session.sgm)
    p = elevator_p(sdxl_session, motion_model=motion)
    with pytest.raises(ValueError, match=refusal):
        sdxl_session.run(p)
    state, hooks = unet_state(sdxl_session.sgm)
    assert hooks == before[1] and all((state[k] == v).all() for k, v in before[0].items())
    assert p.batch_size == 1


@pytest.mark.parametrize("host", ["a1111", "forge"])
def test_sdxl_motion_model_with_an_sd15_checkpoint_is_refused_naming_both(tmp_path, motion_file, host):  # noqa: F811
    with extension_session(tmp_path, motion_file, host) as session:
        motion_files.write_kind("hotshotxl", Path(session.paths.models_path) / "VideoElevator" / "hsxl_tiny.safetensors")
        p = elevator_p(session, motion_model="hsxl_tiny.safetensors")
        with pytest.raises(ValueError, match=r"The Hotshot-XL motion module is made for SDXL UNets \(block channels "
                                             r"32/64/128,.*\), but the loaded model's UNet is shaped differently "
                                             r"\(block channels 32/64/128/128,"):
            session.run(p)
        assert p.batch_size == 1
