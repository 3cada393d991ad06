"""The extension on the AUTOMATIC1111 1.10 stand-in (tests/webui_stub): generation through the WebUI's
own txt2img processing, outputs, API payloads, refusals, and the restore guarantee."""
import hashlib
from contextlib import contextmanager
from pathlib import Path

import av
import pytest
import torch

import motion_files
from webui_stub_fixture import webui_stub

REPO = Path(__file__).resolve().parent.parent
MOTION = "AnimateLCM_tiny.safetensors"
SHORT = dict(frames=3, refine_at="4,2", t2v_steps=2)
T2V_LORA = "t2v_lora_fitting.safetensors"


@pytest.fixture(scope="module")
def motion_file(tmp_path_factory):
    """An AnimateLCM motion module in the real key layout, scaled to the stand-in's SD1.5-shaped UNet."""
    path = tmp_path_factory.mktemp("motion") / MOTION
    motion_files.write_kind("animatelcm_t2v", path)
    return path


def write_fitting_t2v_lora(path):
    """AnimateLCM's t2v LoRA layout scaled down, without the text-side projections (the scaled layout's text
    width is not the stand-in's), so every layer fits the stand-in's SD1.5-shaped UNet."""
    from safetensors.torch import save_file

    tensors = motion_files.write_kind("animatelcm_t2v_lora", path)
    save_file({k: v for k, v in tensors.items() if "attn2_to_k" not in k and "attn2_to_v" not in k}, str(path))


@contextmanager
def extension_session(data_dir, motion_file, host="a1111", unet_config="sd15_shaped", **session_options):
    """A stand-in session of ``host`` with this extension loaded, the motion model in its folder, AnimateLCM's
    t2v LoRA file (the real layout, scaled) and ``T2V_LORA`` (one that fits the stand-in's UNet)."""
    with webui_stub(data_dir, unet_config=unet_config, host=host, **session_options) as session:
        folder = Path(session.paths.models_path) / "VideoElevator"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MOTION).write_bytes(motion_file.read_bytes())
        motion_files.write_kind("animatelcm_t2v_lora", folder / "AnimateLCM_t2v_lora.safetensors")
        write_fitting_t2v_lora(folder / T2V_LORA)
        session.extension = session.load_extension(REPO, session_options.get("commandline_args", ""))
        session.script = next(s for s in session.extension.alwayson_scripts if s.title() == "VideoElevator")
        yield session


@pytest.fixture
def webui(tmp_path, motion_file):
    with extension_session(tmp_path, motion_file) as session:
        yield session


def elevator_p(webui, prompt="a boat on a lake", *, api=None, steps=6, **fields):
    """A txt2img ``p`` with VideoElevator's slice set from the UI (positional) or the API (one dict)."""
    from lib_elevator.webui import request as webui_glue

    args = list(webui.extension.default_script_args())
    script = webui.script
    if api is not None:
        args[script.args_from] = api  # the API overwrites the slice positionally with its list
    else:
        names = webui_glue.SCRIPT_FIELDS + webui_glue.param_field_names()
        values = dict(zip(names, args[script.args_from:script.args_to]))
        values.update(enabled=True, motion_model=MOTION, formats=["mp4", "gif"], **SHORT)
        values.update(fields)
        args[script.args_from:script.args_to] = [values[name] for name in names]
    return webui.txt2img(prompt, steps=steps, scripts=webui.extension, script_args=args)


def elevator_params(processed):
    """The ``ElevatorParams`` a finished job wrote into its infotext."""
    from lib_elevator.params import ElevatorParams
    from modules import infotext_utils

    return ElevatorParams.from_infotext(infotext_utils.parse_generation_parameters(processed.infotexts[0])["VideoElevator"])


def requested_params(webui, p):
    """The ``ElevatorParams`` in ``p``'s VideoElevator arguments."""
    from lib_elevator.webui.request import ElevatorRequest

    return ElevatorRequest.from_script_args(p.script_args[webui.script.args_from:webui.script.args_to]).params


def fingerprint(unet):
    """State dict hash, a probe forward, and the hooks and class-level forwards in place."""
    digest = hashlib.sha256()
    for key, value in sorted(unet.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    probe = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        output = unet(probe, timesteps=torch.tensor([500.0, 500.0]), context=context)
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules())
    forwards = {type(m).__name__: type(m).forward for m in unet.modules()}
    return digest.hexdigest(), output, hooks, forwards, [name for name, _ in unet.named_modules()]


def assert_untouched(before, after):
    assert before[0] == after[0]
    assert torch.equal(before[1], after[1])
    assert before[2:] == after[2:]


def videos_in(webui):
    return sorted((Path(webui.data_dir) / "outputs" / "txt2vid-videos").rglob("*.*"))


def newest_mp4(webui):
    """(decoded frames, frame rate, embedded comment) of the MP4 the run wrote."""
    mp4 = next(path for path in videos_in(webui) if path.suffix == ".mp4")
    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        return list(container.decode(stream)), stream.average_rate, container.metadata["comment"]


@contextmanager
def sampled_latents():
    """The list of latents every ``sample_elevator`` call returns while inside."""
    from lib_elevator.webui import run as webui_glue

    outputs, real = [], webui_glue.sample_elevator

    def recording(*args, **kwargs):
        outputs.append(real(*args, **kwargs))
        return outputs[-1]

    webui_glue.sample_elevator = recording
    try:
        yield outputs
    finally:
        webui_glue.sample_elevator = real


def test_txt2img_makes_a_video_through_the_webui(webui):
    p = elevator_p(webui)
    processed = webui.run(p)
    assert webui.errors == []
    frames, rate, comment = newest_mp4(webui)
    assert len(frames) == 3 and (frames[0].width, frames[0].height) == (64, 64) and rate == 8
    assert comment.startswith("a boat on a lake") and "VideoElevator: frames=3 refine_at=4/2" in comment
    assert f"VideoElevator motion_model: {MOTION}" in comment
    assert str(processed.images[0]).endswith(".gif")  # the gallery shows the animation first
    assert p.videoelevator["passes"] == {"t2i": 12, "correction": 0, "t2v": 8, "inversion": 4}
    assert p.videoelevator["reused"] == 1
    assert p.batch_size == 3


def test_every_patch_is_gone_after_a_finished_run(webui):
    from modules import sd_samplers

    before = fingerprint(webui.unet)
    create_sampler = sd_samplers.create_sampler
    webui.run(elevator_p(webui))
    assert_untouched(before, fingerprint(webui.unet))
    assert sd_samplers.create_sampler is create_sampler


def test_model_is_restored_after_a_failure_mid_sampling(webui):
    before = fingerprint(webui.unet)
    calls = []

    def fail_on_tenth_call(module, args):
        calls.append(1)
        if len(calls) == 10:  # inside a T2V or inversion call: every patch is installed
            raise RuntimeError("GPU fell over")

    handle = webui.unet.register_forward_pre_hook(fail_on_tenth_call)
    try:
        with pytest.raises(RuntimeError, match="GPU fell over"):
            webui.run(elevator_p(webui))
    finally:
        handle.remove()
    assert_untouched(before, fingerprint(webui.unet))


@pytest.mark.parametrize("action", ["interrupt", "skip"])
def test_model_is_restored_after_interrupt_and_skip(webui, action):
    from modules import script_callbacks, shared

    before = fingerprint(webui.unet)
    seen = []

    def stop_at_third_call(params):
        seen.append(params.sampling_step)
        if len(seen) == 3:
            getattr(shared.state, action)()

    script_callbacks.on_cfg_denoiser(stop_at_third_call)
    webui.run(elevator_p(webui))
    assert len(seen) == 3  # nothing ran through the CFGDenoiser after the stop
    assert_untouched(before, fingerprint(webui.unet))


def test_api_dict_uses_schema_names_and_defaults(webui):
    p = elevator_p(webui, api={"motion_model": MOTION, "frames": 2, "refine_at": [4, 2], "t2v_steps": 2,
                               "formats": ["webm"], "fps": 12})
    params = elevator_params(webui.run(p))
    assert params.frames == 2 and params.fps == 12 and params.d_t == 0.6  # default kept
    assert [path.suffix for path in videos_in(webui)] == [".webm"]


@pytest.mark.parametrize("payload,field", [
    ({"motion_model": MOTION, "frames": 1}, "frames=1"),
    ({"motion_model": MOTION, "frame": 16}, "'frame'"),
    ({"motion_model": MOTION, "formats": ["avi"]}, "formats"),
    ({"motion_model": MOTION, "refine_at": [4, 2], "t2v_steps": 5}, "t2v_steps=5"),
    ({"motion_model": "../../sd15.safetensors"}, "not in the motion-model folders"),
    ({}, "no motion model selected"),
])
def test_bad_api_payloads_fail_with_422_naming_the_field_and_change_nothing(webui, payload, field):
    before = fingerprint(webui.unet)
    p = elevator_p(webui, api=payload)
    with pytest.raises(ValueError) as error:
        webui.run(p)
    assert field in str(error.value) and getattr(error.value, "status_code", None) == 422
    assert p.batch_size == 1 and videos_in(webui) == []
    assert_untouched(before, fingerprint(webui.unet))


def refuse_sdxl_inpainting(webui, p):
    webui.sd_model.is_sdxl, webui.sd_model.is_sdxl_inpaint = True, True


def refuse_trt(webui, p):
    from modules import sd_unet

    sd_unet.current_unet = object()


@pytest.mark.parametrize("setup,prompt,fields,reason", [
    (refuse_sdxl_inpainting, "a boat", {}, "SDXL inpainting checkpoints are not supported"),
    (refuse_trt, "a boat", {}, "TensorRT"),
    (None, "a boat AND a lake", {}, "'AND' prompts"),
    (None, "a boat", {"frames": 65, "context": False}, "at most 64 frames and context windows are off"),
    (None, "a boat", {"motion_model": "AnimateLCM_t2v_lora.safetensors"}, "not supported as a motion module"),
])
def test_refusals_leave_everything_untouched(webui, setup, prompt, fields, reason):
    before = fingerprint(webui.unet)
    p = elevator_p(webui, prompt, **fields)
    if setup is not None:
        setup(webui, p)
    with pytest.raises(ValueError, match=reason):
        webui.run(p)
    assert p.batch_size == 1 and videos_in(webui) == []
    assert_untouched(before, fingerprint(webui.unet))


def use_refiner(webui, p):
    p.refiner_checkpoint, p.refiner_switch_at = webui.sd_model.sd_checkpoint_info.title, 0.5


def restore_faces_setting(webui, p):
    from modules import shared

    shared.opts.face_restoration = True  # the setting; p.restore_faces stays None


@pytest.mark.parametrize("setup,reason", [
    (use_refiner, "the refiner is not supported"),
    (lambda webui, p: setattr(p, "restore_faces", True), "'Restore faces' is not supported"),
    (restore_faces_setting, "'Restore faces' is not supported"),
])
@pytest.mark.parametrize("host", ["a1111", "forge"])
def test_refiner_and_restore_faces_are_refused_in_one_sentence_and_change_nothing(tmp_path, motion_file, host,
                                                                                  setup, reason):
    with extension_session(tmp_path, motion_file, host=host) as webui:
        before = fingerprint(webui.unet)
        p = elevator_p(webui)
        setup(webui, p)
        with pytest.raises(ValueError) as error:
            webui.run(p)
        message = str(error.value)
        assert reason in message and message.count(". ") == 0 and message.count(";") == 1, message
        assert p.batch_size == 1 and videos_in(webui) == []
        assert_untouched(before, fingerprint(webui.unet))


def test_hires_fix_is_refused_before_sampling(webui):
    """The stand-in has no hires pass, so this drives the script hooks and ``p.sample`` as A1111 does."""
    p = elevator_p(webui)
    p.enable_hr = True
    p.scripts.before_process(p)
    with pytest.raises(ValueError, match="hires fix is not supported"):
        p.sample(None, None, [1], [1], 0.0, ["a boat"])
    assert p.batch_size == 1


@pytest.mark.parametrize("animatediff_arg", [{"enable": True}, type("AnimateDiffProcess", (), {"enable": True})()])
def test_animatediff_enabled_in_the_same_request_is_refused(webui, animatediff_arg):
    from modules import scripts

    class AnimateDiff(scripts.Script):
        def title(self):
            return "AnimateDiff"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

    p = elevator_p(webui)
    animatediff = AnimateDiff()
    animatediff.args_from, animatediff.args_to = len(p.script_args), len(p.script_args) + 1
    p.script_args = list(p.script_args) + [animatediff_arg]
    p.scripts.alwayson_scripts.append(animatediff)
    try:
        with pytest.raises(ValueError, match="AnimateDiff is enabled"):
            webui.run(p)
    finally:
        p.scripts.alwayson_scripts.remove(animatediff)
    assert p.batch_size == 1 and videos_in(webui) == []


def test_token_merging_is_forced_off(webui):
    from modules import sd_models, shared

    shared.opts.token_merging_ratio = 0.5
    webui.run(elevator_p(webui))
    assert sd_models.token_merging_calls[0] == 0.0


def test_user_lora_applies_and_is_left_to_the_webui(webui):
    from modules import stub_lora

    original = {k: v.clone() for k, v in webui.unet.state_dict().items()}
    stub_lora.make_random_lora(webui.sd_model, "style", strength=0.5)
    webui.run(elevator_p(webui, "a boat <lora:style:1>"))
    merged = webui.unet.state_dict()
    assert any(not torch.equal(original[k], merged[k]) for k in original)  # the WebUI merged the user's LoRA
    stub_lora.restore_all(webui.sd_model)
    assert all(torch.equal(original[k], v) for k, v in webui.unet.state_dict().items())


def test_infotext_pastes_back_every_field(webui):
    from lib_elevator.params import ElevatorParams
    from modules import infotext_utils

    p = elevator_p(webui, d_t=0.4, noise_alpha=1.5, correction=False)
    processed = webui.run(p)
    params = infotext_utils.parse_generation_parameters(processed.infotexts[0])
    from modules import script_callbacks

    script_callbacks.infotext_pasted_callback(processed.infotexts[0], params)
    restored = {name: params[f"VideoElevator {name}"] for name in ElevatorParams.__dataclass_fields__}
    assert ElevatorParams.from_dict(restored) == requested_params(webui, p)
    assert params["VideoElevator motion_model"] == MOTION


def test_panel_defaults_are_the_schema_defaults(webui):
    from lib_elevator.webui.request import ElevatorRequest
    from lib_elevator.params import ElevatorParams

    args = webui.extension.default_script_args()[webui.script.args_from:webui.script.args_to]
    request = ElevatorRequest.from_script_args(args)
    assert request.enabled is False and request.params == ElevatorParams()


def recorded_elevator_call(webui, p) -> dict:
    """Run ``p`` and keep what ``sample_elevator`` was called with (x, σ ladder, params, noise draws, conditioning)
    and what it returned."""
    from lib_elevator.webui import run as webui_glue

    recorded = {}
    real_sample_elevator = webui_glue.sample_elevator

    def recording(t2i, t2v, x, sigmas, params, noise_sampler=None, **kwargs):
        draws = []

        def noise(sigma, sigma_next):
            draws.append(noise_sampler(sigma, sigma_next))
            return draws[-1]

        out = real_sample_elevator(t2i, t2v, x.clone(), sigmas, params, noise_sampler=noise, **kwargs)
        recorded.update(x=x.clone(), sigmas=sigmas.clone(), params=params, draws=draws, out=out.clone(),
                        cond=t2i.extra_args["cond"], uncond=t2i.extra_args["uncond"], cfg=t2i.extra_args["cond_scale"])
        return out

    webui_glue.sample_elevator = recording
    try:
        webui.run(p)
    finally:
        webui_glue.sample_elevator = real_sample_elevator
    return recorded


def test_a1111_adapter_equals_the_diffusers_backend_on_the_same_weights(webui, motion_file):
    """The WebUI path (ldm UNet, the WebUI's CFGDenoiser, hooks) and the standalone path (diffusers UNet,
    EpsDenoiser) run the same algorithm: same x, σ ladder, conditioning and noise give the same latents."""
    from contextlib import ExitStack

    from ldm_helpers import SD15_SHAPED_UNET2D_CONFIG, diffusers_unet
    from lib_elevator import sampler
    from lib_elevator.attention import Inflation
    from lib_elevator.standalone.pipeline import EpsDenoiser, InjectedMotionT2V, unet2d_eps
    from lib_elevator.motion import load_motion_adapter
    from lib_elevator.schedules import ANIMATEDIFF_SCHEDULE, VPSchedule
    from modules import prompt_parser

    recorded = recorded_elevator_call(webui, elevator_p(webui, "a red fox in the snow", steps=8, refine_at="6,3",
                                                        t2v_steps=2))

    frames = recorded["params"].frames
    cond = prompt_parser.reconstruct_multicond_batch(recorded["cond"], 0)[1][:1]
    uncond = prompt_parser.reconstruct_cond_batch(recorded["uncond"], 0)[:1]
    unet = diffusers_unet(SD15_SHAPED_UNET2D_CONFIG)  # the weights the stand-in's ldm UNet was made from
    adapter, _ = load_motion_adapter(motion_file)
    draws = iter(recorded["draws"])
    with torch.no_grad(), ExitStack() as patches:
        inflation = patches.enter_context(Inflation(unet, frames))
        t2v_eps = InjectedMotionT2V(adapter, solver="lcm").prepare(patches, unet, inflation, recorded["params"])
        t2i = EpsDenoiser(unet2d_eps(unet), VPSchedule("sd", webui.sd_model.alphas_cumprod), cond, uncond,
                          recorded["cfg"], frames)
        t2v = EpsDenoiser(t2v_eps, ANIMATEDIFF_SCHEDULE, cond, uncond, recorded["params"].t2v_cfg_scale, frames,
                          solver="lcm")
        expected = sampler.sample_elevator(t2i, t2v, recorded["x"], recorded["sigmas"], recorded["params"],
                                           disable=True, noise_sampler=lambda s, sn: next(draws))
    from lib_elevator.schedules import ddim_sigmas

    # Schedule type "Automatic" is the paper's DDIM-leading ladder, ending at σ(0)
    assert torch.equal(recorded["sigmas"], ddim_sigmas(VPSchedule("sd", webui.sd_model.alphas_cumprod), 8).float())
    assert (recorded["out"] - expected).abs().max() <= 1e-4 * expected.std()


@pytest.mark.parametrize("host", ["a1111", "forge"])
def test_progress_eta_and_live_preview_move_through_every_unet_call(tmp_path, motion_file, host):
    """The UI's progress poll at every UNet call (T2I, correction, T2V, inversion) sees the bar advance, and
    the live preview is refreshed during the T2V passes of a refinement, not only once per T2I step."""
    with extension_session(tmp_path, motion_file, host=host) as webui:
        from modules import progress, shared

        shared.opts.show_progress_every_n_steps = 1
        p = elevator_p(webui, steps=6, refine_at="4,2", t2v_steps=2)
        polls = []

        def poll(module, args):
            answer = progress.progressapi(progress.ProgressRequest("task", live_preview=True))
            t2v = p.videoelevator.active.switch.active
            polls.append((answer.progress, answer.eta, shared.state.id_live_preview, t2v))

        handle = webui.unet.register_forward_pre_hook(poll)
        try:
            webui.run(p)
        finally:
            handle.remove()
        passes = sum(p.videoelevator["passes"].values())
        assert shared.state.sampling_steps == passes  # the bar's total is every pass the run made
        fractions = [fraction for fraction, *_ in polls]
        assert all(a < b for a, b in zip(fractions, fractions[1:])), fractions  # every call moves the bar
        assert all(eta is not None for _, eta, _, _ in polls[1:])
        t2v_previews = [preview for _, _, preview, t2v in polls if t2v]
        assert len(t2v_previews) == 4 and t2v_previews == sorted(set(t2v_previews)), t2v_previews


def test_a_refused_api_request_is_a_422_with_the_message_and_no_traceback(webui, capsys):
    """What the WebUI API answers and prints when VideoElevator refuses a request (A1111's handler prints the
    traceback of every exception that is not an ``HTTPException``)."""
    before = fingerprint(webui.unet)
    status, body = webui.post_txt2img({"prompt": "a boat", "steps": 6, "width": 64, "height": 64, "alwayson_scripts": {
        "VideoElevator": {"args": [{"motion_model": MOTION, "frames": 1}]}}})
    assert status == 422 and body["detail"].startswith("VideoElevator: frames=1 is not allowed"), body
    assert body["error"] == "VideoElevator" and body["errors"] == body["detail"].removeprefix("VideoElevator: ")
    assert webui.errors == [] and "Traceback" not in capsys.readouterr().err
    assert_untouched(before, fingerprint(webui.unet))


@pytest.mark.parametrize("refine_at,t2v_steps", [("1", 1), ("3,1", 1), ("0.97", 1)])
def test_refining_at_the_last_step_makes_the_video_from_the_t2v_prediction(webui, refine_at, t2v_steps):
    """refine_at with one step left (also 0.97 of 30 steps) is valid: the video is the T2V's x̂0, as in the paper."""
    with sampled_latents() as outputs:
        steps = 30 if refine_at == "0.97" else 6
        processed = webui.run(elevator_p(webui, steps=steps, refine_at=refine_at, t2v_steps=t2v_steps))
    assert webui.errors == [] and len(outputs) == 1 and torch.isfinite(outputs[0]).all()
    assert [path.suffix for path in videos_in(webui)] == [".gif", ".mp4"] and processed.images
