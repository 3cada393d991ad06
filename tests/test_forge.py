"""The extension on the Forge 2 stand-in (tests/webui_stub with host="forge"): the same script through Forge's
p.sample (forge_objects reset, process_before_every_sampling, sampling_prepare/cleanup), patches made on a clone
of the UnetPatcher, cond/uncond chunking, parity with the A1111 adapter, and the restore guarantee."""
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from test_a1111 import (MOTION, T2V_LORA, assert_untouched, elevator_p, extension_session, fingerprint,  # noqa: F401
                        motion_file, newest_mp4)

BATCHINGS = ("together_cond_first", "together_uncond_first", "separate_cond_first", "separate_uncond_first")


@pytest.fixture
def forge(tmp_path, motion_file):
    with extension_session(tmp_path, motion_file, "forge") as session:
        yield session


def forge_state(webui):
    """What a run must hand back: the patcher in forge_objects, its options, and the predictor's σ tables."""
    unet = webui.sd_model.forge_objects.unet
    predictor = unet.model.predictor
    return unet, repr(unet.model_options), predictor.sigmas.clone(), predictor.log_sigmas.clone()


def assert_forge_untouched(before, after):
    assert after[0] is before[0] and after[1] == before[1]
    assert torch.equal(after[2], before[2]) and torch.equal(after[3], before[3])


def test_txt2img_makes_a_video_on_forge(forge):
    from backend.sampling import sampling_function

    p = elevator_p(forge)
    processed = forge.run(p)
    assert forge.errors == []
    frames, rate, comment = newest_mp4(forge)
    assert len(frames) == 3 and (frames[0].width, frames[0].height) == (64, 64) and rate == 8
    assert "VideoElevator: frames=3 refine_at=4/2" in comment
    assert str(processed.images[0]).endswith(".gif")
    assert p.videoelevator["passes"] == {"t2i": 12, "correction": 0, "t2v": 8, "inversion": 4}
    assert p.videoelevator["reused"] == 1
    loaded = [type(patcher.model).__name__ for patcher in sampling_function.LOADED]
    assert "MotionAdapter" in loaded  # Forge's memory management loaded the motion modules with the UNet


def test_every_patch_is_gone_after_a_finished_run_on_forge(forge):
    from modules import sd_samplers

    before, state = fingerprint(forge.unet), forge_state(forge)
    create_sampler = sd_samplers.create_sampler
    forge.run(elevator_p(forge, t2v_lora=T2V_LORA))
    assert forge.errors == []
    assert_untouched(before, fingerprint(forge.unet))
    assert_forge_untouched(state, forge_state(forge))
    assert sd_samplers.create_sampler is create_sampler


@pytest.mark.parametrize("failure", ["unet", "patching"])
def test_forge_is_restored_after_a_failure(forge, monkeypatch, failure):
    from lib_elevator.webui.hosts import forge as forge_adapter

    before, state = fingerprint(forge.unet), forge_state(forge)
    if failure == "unet":
        calls = []

        def fail_on_tenth_call(module, args):
            calls.append(1)
            if len(calls) == 10:
                raise RuntimeError("GPU fell over")

        handle = forge.unet.register_forward_pre_hook(fail_on_tenth_call)
        expected = "GPU fell over"
    else:  # Forge logs and ignores exceptions from process_before_every_sampling: we must notice
        def broken(*args, **kwargs):
            raise RuntimeError("cannot patch")

        monkeypatch.setattr(forge_adapter, "first_frame_attention", broken)
        handle = None
        expected = "patches were not applied"
    try:
        with pytest.raises(Exception, match=expected):
            forge.run(elevator_p(forge))
    finally:
        if handle is not None:
            handle.remove()
    assert_untouched(before, fingerprint(forge.unet))
    assert_forge_untouched(state, forge_state(forge))


def test_interrupt_on_forge_stops_and_restores(forge):
    from modules import script_callbacks, shared

    before, state = fingerprint(forge.unet), forge_state(forge)
    seen = []

    def stop_at_third_call(params):
        seen.append(params.sampling_step)
        if len(seen) == 3:
            shared.state.interrupt()

    script_callbacks.on_cfg_denoiser(stop_at_third_call)
    forge.run(elevator_p(forge))
    assert len(seen) == 3
    assert_untouched(before, fingerprint(forge.unet))
    assert_forge_untouched(state, forge_state(forge))


def test_sdxl_inpainting_on_forge_is_refused_and_changes_nothing(forge):
    forge.sd_model.is_sd1, forge.sd_model.is_sdxl, forge.sd_model.is_inpaint = False, True, True
    before, state = fingerprint(forge.unet), forge_state(forge)
    with pytest.raises(Exception, match="SDXL inpainting checkpoints are not supported"):
        forge.run(elevator_p(forge))
    assert_untouched(before, fingerprint(forge.unet))
    assert_forge_untouched(state, forge_state(forge))


def patched_unet(forge, frames=3, lora=False):
    """The adapter's patches on a clone of the session's UnetPatcher, as process_before_every_sampling makes them."""
    from lib_elevator.webui.hosts import forge as forge_adapter
    from lib_elevator.webui.request import ElevatorRequest, MotionModel
    from lib_elevator.motion import load_motion_adapter

    request = ElevatorRequest.from_script_args([{"motion_model": MOTION, "frames": frames}])
    adapter, info = load_motion_adapter(Path(forge.paths.models_path) / "VideoElevator" / MOTION)
    p = forge.txt2img("a fox")
    run = forge_adapter.ForgeRun(p, request.params, MotionModel(MOTION, adapter, info), [1])
    run.before_sampling(p)
    return run, forge.sd_model.forge_objects.unet


@pytest.mark.parametrize("t2v", [False, True], ids=["t2i-inflated", "t2v-motion"])
def test_chunked_cond_uncond_in_either_order_equals_one_batched_call(forge, monkeypatch, t2v):
    """Forge batches cond/uncond by free VRAM and in either order; attention and motion must group by chunk."""
    from backend.sampling import sampling_function
    from backend.sampling.condition import compile_conditions

    run, unet = patched_unet(forge)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 8, 8, generator=generator)
    sigma = torch.full((3,), 2.5)
    cond = compile_conditions(torch.randn(3, 77, 32, generator=generator))
    uncond = compile_conditions(torch.randn(3, 77, 32, generator=generator))
    results = {}
    for batching in BATCHINGS:
        monkeypatch.setattr(sampling_function, "BATCHING", batching)
        with torch.no_grad(), (run.switch.on() if t2v else nullcontext()):
            results[batching] = sampling_function.calc_cond_uncond_batch(unet.model, cond, uncond, x, sigma,
                                                                         unet.model_options)
    reference = results["together_cond_first"]
    for batching in BATCHINGS[1:]:
        for got, expected in zip(results[batching], reference):
            assert (got - expected).abs().max() <= 1e-5 * expected.abs().max(), batching
    with torch.no_grad():  # and the patches do something: without them the result differs
        plain = forge.sd_model.forge_objects_after_applying_lora.unet
        unpatched = sampling_function.calc_cond_uncond_batch(plain.model, cond, uncond, x, sigma, plain.model_options)
    assert not torch.allclose(unpatched[0], reference[0], atol=1e-4)


def test_first_frame_attention_groups_by_cond_or_uncond(forge):
    """Frame 0 of each chunk is unchanged by inflation (it attends to itself); the other frames change."""
    from backend.sampling.condition import compile_conditions
    from backend.sampling.sampling_function import calc_cond_uncond_batch

    _, unet = patched_unet(forge)
    plain = forge.sd_model.forge_objects_after_applying_lora.unet
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(3, 4, 8, 8, generator=generator)
    sigma = torch.full((3,), 1.5)
    cond = compile_conditions(torch.randn(3, 77, 32, generator=generator))
    with torch.no_grad():
        inflated, _ = calc_cond_uncond_batch(unet.model, cond, None, x, sigma, unet.model_options)
        reference, _ = calc_cond_uncond_batch(plain.model, cond, None, x, sigma, plain.model_options)
    assert torch.allclose(inflated[0], reference[0], atol=1e-5)
    assert not torch.allclose(inflated[1:], reference[1:], atol=1e-4)


def test_a_call_that_is_not_whole_clips_is_refused(forge):
    from backend.sampling.condition import compile_conditions
    from backend.sampling.sampling_function import calc_cond_uncond_batch

    _, unet = patched_unet(forge, frames=2)
    x = torch.randn(3, 4, 8, 8)
    with torch.no_grad(), pytest.raises(ValueError, match="not whole 2-frame clips"):
        calc_cond_uncond_batch(unet.model, compile_conditions(torch.randn(3, 77, 32)), None, x,
                               torch.full((3,), 1.0), unet.model_options)


def test_t2v_sigma_table_is_in_the_predictor_only_during_t2v_calls(forge):
    from lib_elevator.webui.hosts.forge import t2v_sigmas
    from lib_elevator.schedules import ANIMATEDIFF_SCHEDULE

    predictor = forge.sd_model.forge_objects.unet.model.predictor
    sigmas, log_sigmas = predictor.sigmas, predictor.log_sigmas
    with t2v_sigmas(predictor, ANIMATEDIFF_SCHEDULE):
        assert torch.allclose(predictor.sigmas, ANIMATEDIFF_SCHEDULE.sigmas)
        t = predictor.timestep(ANIMATEDIFF_SCHEDULE.sigma(500.0) * torch.ones(1))
        assert int(t) == 500
    assert predictor.sigmas is sigmas and predictor.log_sigmas is log_sigmas


def test_forge_and_a1111_adapters_make_the_same_video(tmp_path, motion_file):
    """Same tiny UNet weights, prompt, seed and noise through both hosts' processing → the same latents
    (with the T2V LoRA: A1111's hooks on ldm Linears, Forge's on the shared diffusion model)."""
    from lib_elevator.webui import run as webui_glue

    outputs = {}
    real_sample_elevator = webui_glue.sample_elevator

    for host in ("a1111", "forge"):
        def recording(*args, **kwargs):
            outputs[host] = real_sample_elevator(*args, **kwargs).clone()
            return outputs[host]

        with extension_session(tmp_path / host, motion_file, host) as session:
            session.shared.opts.enable_quantization = True  # Forge always rounds σ→t to a table index; A1111 only then
            webui_glue.sample_elevator = recording
            try:
                session.run(elevator_p(session, "a red fox in the snow", steps=8, refine_at="6,3", t2v_steps=2,
                                       t2v_lora=T2V_LORA))
                assert session.errors == []
            finally:
                webui_glue.sample_elevator = real_sample_elevator
    expected = outputs["a1111"]
    assert (outputs["forge"] - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_motion_modules_run_in_the_unets_computation_dtype(forge, monkeypatch):
    """fp8/NF4/GGUF storage computes in fp16/bf16/fp32: the motion modules follow the computation dtype."""
    kmodel = forge.sd_model.forge_objects.unet.model
    monkeypatch.setattr(kmodel, "computation_dtype", torch.bfloat16)
    run, unet = patched_unet(forge)
    assert {p.dtype for p in run.motion.adapter.parameters()} == {torch.bfloat16}
    assert unet.extra_model_patchers_during_sampling[-1].model is run.motion.adapter
