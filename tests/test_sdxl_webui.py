"""SDXL checkpoints in the WebUIs: the elevator on the A1111 1.10 stand-in (sgm's ``DiffusionEngine`` around the
sgm-shaped UNet; no PyPI package ships ``sgm``) and the Forge 2 stand-in (its ``StableDiffusionXL`` engine), with
both SDXL motion layouts (AnimateDiff-SDXL beta, Hotshot-XL) in their released key layouts at a tenth of the width.

Checked: a video comes out, the UNet is bit-identical afterwards (finished, failed, interrupted), a seed gives
the same video twice, the T2V calls run on the motion model's own training schedule (the T2I calls on the
checkpoint's), Hotshot-XL's GroupNorms pool over frames in T2V calls only, v-prediction checkpoints run, the A1111
path equals the standalone SDXL elevator on the same weights and Forge equals A1111, and what stays refused
(a motion model for another base model, SDXL inpainting) is refused in one sentence with nothing changed.
"""
from pathlib import Path

import pytest
import torch

import motion_files
from test_a1111 import elevator_p, extension_session, motion_file, newest_mp4, recorded_elevator_call  # noqa: F401

SDXL_MOTION = {"animatediff_sdxl_beta": "mm_sdxl_v10_beta_tiny.ckpt", "hotshotxl": "hsxl_tiny.safetensors"}
SHORT = dict(frames=3, refine_at="3", t2v_steps=1, formats=["mp4"])


@pytest.fixture(params=["a1111", "forge"])
def sdxl(request, tmp_path, motion_file):  # noqa: F811
    """A session of each host whose loaded checkpoint is the tiny SDXL one, both SDXL motion files in its folder."""
    with extension_session(tmp_path, motion_file, request.param, unet_config="sdxl_shaped") as webui:
        for kind, name in SDXL_MOTION.items():
            motion_files.write_kind(kind, Path(webui.paths.models_path) / "VideoElevator" / name)
        yield webui


def fingerprint(unet):
    """State, hooks and a probe forward (with SDXL's vector) of the shared sgm-shaped UNet."""
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(2, 4, 8, 8, generator=generator)
    context = torch.randn(2, 77, unet.input_blocks[4][1].transformer_blocks[0].attn2.to_k.in_features, generator=generator)
    vector = torch.randn(2, unet.label_emb[0][0].in_features, generator=generator)
    with torch.no_grad():
        output = unet(probe, timesteps=torch.tensor([500.0, 500.0]), context=context, y=vector)
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules())
    return {k: v.clone() for k, v in unet.state_dict().items()}, output, hooks, [n for n, _ in unet.named_modules()]


def assert_untouched(before, after):
    assert before[0].keys() == after[0].keys() and all(torch.equal(v, after[0][k]) for k, v in before[0].items())
    assert torch.equal(before[1], after[1]) and before[2:] == after[2:]


def sdxl_p(webui, kind, steps=4, **fields):
    return elevator_p(webui, "a red fox running", steps=steps, **{**SHORT, "motion_model": SDXL_MOTION[kind], **fields})


def mark_v_prediction(webui):
    if webui.host == "forge":
        webui.sd_model.forge_objects.unet.model.predictor.prediction_type = "v_prediction"
    else:
        webui.sd_model.parameterization = "v"


def mark_inpainting(webui):
    setattr(webui.sd_model, "is_inpaint" if webui.host == "forge" else "is_sdxl_inpaint", True)


class TableRecorder:
    """The σ table the UNet's σ→t map reads at every UNet call, and whether the motion modules were on then
    (A1111: k-diffusion's ``CompVisDenoiser.sigma_to_t``; Forge: the predictor's ``timestep``)."""

    def __init__(self, webui, monkeypatch, p):
        self.calls = []
        if webui.host == "forge":
            from backend.modules.k_prediction import Prediction as owner
            name = "timestep"
        else:
            from k_diffusion.external import CompVisDenoiser as owner
            name = "sigma_to_t"
        original = getattr(owner, name)

        def recording(denoiser, sigma, *args, **kwargs):
            run = p.videoelevator.active
            self.calls.append((run is not None and run.switch.active, float(denoiser.sigmas[-1])))
            return original(denoiser, sigma, *args, **kwargs)

        monkeypatch.setattr(owner, name, recording)

    def tables(self, t2v: bool) -> set:
        return {round(table, 3) for active, table in self.calls if active is t2v}


@pytest.mark.parametrize("kind", list(SDXL_MOTION))
def test_sdxl_elevator_makes_a_video_on_the_motion_models_schedule_and_restores_the_unet(sdxl, kind, monkeypatch):
    from lib_elevator.motion import load_motion_adapter
    from lib_elevator.schedules import SD_SCHEDULE

    before = fingerprint(sdxl.unet)
    p = sdxl_p(sdxl, kind)
    recorder = TableRecorder(sdxl, monkeypatch, p)
    output_norm_hooks = set()  # hooks on the UNet's output GroupNorm while the motion modules are on

    def count_hooks(norm, args):
        if p.videoelevator.active.switch.active:
            output_norm_hooks.add(len(norm._forward_pre_hooks))

    handle = sdxl.unet.out[0].register_forward_pre_hook(count_hooks)
    try:
        sdxl.run(p)
    finally:
        handle.remove()
    assert sdxl.errors == []
    frames, _, comment = newest_mp4(sdxl)
    assert len(frames) == 3 and (frames[0].width, frames[0].height) == (64, 64)
    assert f"VideoElevator motion_model: {SDXL_MOTION[kind]}" in comment
    assert p.videoelevator["passes"]["t2v"] > 0
    schedule = load_motion_adapter(Path(sdxl.paths.models_path) / "VideoElevator" / SDXL_MOTION[kind])[1].schedule
    assert recorder.tables(t2v=True) == {round(schedule.sigma_max, 3)}  # AnimateDiff-SDXL: scaled_linear to 0.020
    assert recorder.tables(t2v=False) == {round(SD_SCHEDULE.sigma_max, 3)}
    assert output_norm_hooks == {2 if kind == "hotshotxl" else 1}  # Hotshot-XL: pooled over the clip's frames
    assert_untouched(before, fingerprint(sdxl.unet))


def test_sdxl_mode_t2v_samples_on_the_motion_models_schedule(sdxl, monkeypatch):
    from lib_elevator.schedules import ANIMATEDIFF_SDXL_SCHEDULE

    before = fingerprint(sdxl.unet)
    p = sdxl_p(sdxl, "animatediff_sdxl_beta", mode="t2v")
    recorder = TableRecorder(sdxl, monkeypatch, p)
    sdxl.run(p)
    assert len(newest_mp4(sdxl)[0]) == 3
    assert recorder.tables(t2v=True) == {round(ANIMATEDIFF_SDXL_SCHEDULE.sigma_max, 3)} and not recorder.tables(t2v=False)
    assert_untouched(before, fingerprint(sdxl.unet))


def test_sdxl_v_prediction_checkpoint_makes_a_video_and_restores_the_unet(sdxl):
    """Some Illustrious/NoobAI checkpoints predict v: the host's denoiser turns it into x̂0, all the elevator uses
    (``test_a1111_sdxl_elevator_equals_the_standalone_sdxl_elevator`` checks the numbers)."""
    before = fingerprint(sdxl.unet)
    mark_v_prediction(sdxl)
    p = sdxl_p(sdxl, "animatediff_sdxl_beta")
    sdxl.run(p)
    assert sdxl.errors == [] and len(newest_mp4(sdxl)[0]) == 3 and p.videoelevator["passes"]["t2v"] > 0
    assert_untouched(before, fingerprint(sdxl.unet))


def test_sdxl_video_is_reproducible_per_seed(sdxl):
    videos = []
    for _ in range(2):
        sdxl.run(sdxl_p(sdxl, "hotshotxl"))
        videos.append([frame.to_ndarray() for frame in newest_mp4(sdxl)[0]])
        for path in (Path(sdxl.data_dir) / "outputs" / "txt2vid-videos").rglob("*.mp4"):
            path.unlink()
    assert all((a == b).all() for a, b in zip(*videos))


def test_sdxl_frames_per_unet_batch_gives_the_one_batch_result(sdxl):
    """Hotshot-XL on SDXL with the T2I, correction and inversion passes in chunks of 2 frames (3 = 2 + 1): frame
    0's keys and values anchor the later chunk in every SDXL transformer block, so the video is the one-batch one."""
    batches = []
    handle = sdxl.unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        whole = recorded_elevator_call(sdxl, sdxl_p(sdxl, "hotshotxl", correction=True))["out"]
        whole_batches, batches[:] = sorted(set(batches)), []
        chunked = recorded_elevator_call(sdxl, sdxl_p(sdxl, "hotshotxl", correction=True, frames_per_batch=2))["out"]
    finally:
        handle.remove()
    assert 1 not in whole_batches and 1 in batches  # the last chunk of a clip is one frame
    assert (chunked - whole).abs().max() <= 1e-5 * whole.abs().max()


def test_sdxl_t2v_runs_over_context_windows(sdxl):
    """4 frames in T2V windows of 2 (overlap 1): every T2V call sees 2-frame clips with those frames' SDXL
    conditioning rows (crossattn and vector), and the video has all 4 frames."""
    p = sdxl_p(sdxl, "animatediff_sdxl_beta", frames=4, context_length=2, context_overlap=1)
    clips = set()

    def t2v_clip(module, args):
        switch = p.videoelevator.active.switch
        if switch.active:
            clips.add(switch.frames)

    handle = sdxl.unet.register_forward_pre_hook(t2v_clip)
    try:
        sdxl.run(p)
    finally:
        handle.remove()
    assert sdxl.errors == [] and clips == {2} and len(newest_mp4(sdxl)[0]) == 4


def test_sdxl_unet_is_restored_after_a_failure_and_an_interrupt(sdxl):
    from modules import script_callbacks, shared

    before = fingerprint(sdxl.unet)
    p = sdxl_p(sdxl, "hotshotxl")

    def fail_in_a_t2v_call(module, args):
        if p.videoelevator.active.switch.active:  # every patch is installed and on
            raise RuntimeError("GPU fell over")

    handle = sdxl.unet.register_forward_pre_hook(fail_in_a_t2v_call)
    try:
        with pytest.raises(RuntimeError, match="GPU fell over"):
            sdxl.run(p)
    finally:
        handle.remove()
    assert_untouched(before, fingerprint(sdxl.unet))

    seen = []

    def stop_at_second_call(params):
        seen.append(params.sampling_step)
        if len(seen) == 2:
            shared.state.interrupt()

    script_callbacks.on_cfg_denoiser(stop_at_second_call)
    sdxl.run(sdxl_p(sdxl, "hotshotxl"))
    assert len(seen) == 2
    assert_untouched(before, fingerprint(sdxl.unet))


@pytest.mark.parametrize("motion, setup, refusal", [
    ("AnimateLCM_tiny.safetensors", None,
     r"The AnimateLCM motion module is made for SD1\.5 UNets \(block channels 32/64/128/128.*\), but the loaded "
     r"model's UNet is shaped differently \(block channels 32/64/128,"),
    (SDXL_MOTION["hotshotxl"], mark_inpainting, r"SDXL inpainting checkpoints are not supported"),
])
def test_sdxl_refusals_name_the_reason_and_change_nothing(sdxl, motion, setup, refusal):
    before = fingerprint(sdxl.unet)
    if setup is not None:
        setup(sdxl)
    p = elevator_p(sdxl, motion_model=motion)
    with pytest.raises(ValueError, match=refusal):
        sdxl.run(p)
    assert_untouched(before, fingerprint(sdxl.unet))
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


@pytest.mark.parametrize("kind, prediction", [("animatediff_sdxl_beta", "epsilon"), ("hotshotxl", "v_prediction")])
def test_a1111_sdxl_elevator_equals_the_standalone_sdxl_elevator(tmp_path, motion_file, kind, prediction):  # noqa: F811
    """The WebUI path (sgm-shaped UNet, dict conditioning through the WebUI's CFGDenoiser, hooks) and the
    standalone path (diffusers SDXL UNet with the same weights, pooled text and size ids) run the same algorithm:
    the same x, σ ladder, conditioning and noise give the same latents; for a v-prediction checkpoint too (the
    WebUI's v denoiser and the standalone's v → x̂0 agree)."""
    from contextlib import ExitStack

    from ldm_helpers import sgm_shaped_pair
    from lib_elevator import sampler
    from lib_elevator.attention import Inflation
    from lib_elevator.motion import load_motion_adapter
    from lib_elevator.schedules import VPSchedule
    from lib_elevator.standalone.conditioning import TextConditioning
    from lib_elevator.standalone.pipeline import EpsDenoiser, InjectedMotionT2V, unet2d_eps
    from lib_elevator.tiny import TEXT_DIM

    with extension_session(tmp_path, motion_file, "a1111", unet_config="sdxl_shaped") as webui:
        from modules import prompt_parser

        path = Path(webui.paths.models_path) / "VideoElevator" / SDXL_MOTION[kind]
        motion_files.write_kind(kind, path)
        if prediction == "v_prediction":
            mark_v_prediction(webui)
        recorded = recorded_elevator_call(webui, sdxl_p(webui, kind, steps=6, refine_at="4,2"))
        t2i_schedule = VPSchedule("sd", webui.sd_model.alphas_cumprod)
        conditioning = {}
        for name, batch in (("cond", prompt_parser.reconstruct_multicond_batch(recorded["cond"], 0)[1]),
                            ("uncond", prompt_parser.reconstruct_cond_batch(recorded["uncond"], 0))):
            conditioning[name] = TextConditioning(batch["crossattn"][:1], batch["vector"][:1, :TEXT_DIM]).sized(64, 64)

    params, frames = recorded["params"], recorded["params"].frames
    unet, _ = sgm_shaped_pair()  # the weights the stand-in's sgm-shaped UNet was made from
    adapter, info = load_motion_adapter(path)
    draws = iter(recorded["draws"])
    with torch.no_grad(), ExitStack() as patches:
        inflation = patches.enter_context(Inflation(unet, frames))
        t2v_model = InjectedMotionT2V.for_motion_model(adapter, info)
        t2v_eps = t2v_model.prepare(patches, unet, inflation, params)
        t2i = EpsDenoiser(unet2d_eps(unet), t2i_schedule, conditioning["cond"], conditioning["uncond"], recorded["cfg"],
                          frames, prediction_type=prediction)
        t2v = EpsDenoiser(t2v_eps, info.schedule, conditioning["cond"], conditioning["uncond"], params.t2v_cfg_scale,
                          frames, solver=t2v_model.solver, prediction_type=prediction)
        expected = sampler.sample_elevator(t2i, t2v, recorded["x"], recorded["sigmas"], params, disable=True,
                                           noise_sampler=lambda s, sn: next(draws))
    assert (recorded["out"] - expected).abs().max() <= 1e-4 * expected.std()


def test_forge_and_a1111_sdxl_elevators_make_the_same_video(tmp_path, motion_file):  # noqa: F811
    """Same tiny SDXL weights (read as a v-prediction checkpoint), prompt, seed and noise through both hosts'
    processing → the same latents."""
    outputs = {}
    for host in ("a1111", "forge"):
        with extension_session(tmp_path / host, motion_file, host, unet_config="sdxl_shaped") as session:
            mark_v_prediction(session)
            motion_files.write_kind("hotshotxl", Path(session.paths.models_path) / "VideoElevator" / SDXL_MOTION["hotshotxl"])
            session.shared.opts.enable_quantization = True  # Forge always rounds σ→t to a table index; A1111 only then
            outputs[host] = recorded_elevator_call(session, sdxl_p(session, "hotshotxl", steps=6, refine_at="4,2"))["out"]
    expected = outputs["a1111"]
    assert (outputs["forge"] - expected).abs().max() <= 1e-4 * expected.abs().max()
