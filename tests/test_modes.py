"""Modes of the standalone pipeline: ``elevate`` (VideoElevator), ``t2v`` (the motion model alone, as a
plain AnimateDiff/AnimateLCM loop does it) and ``t2i`` (the inflated T2I with no refinement)."""
import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler

from lib_elevator.noise import mixed_noise
from lib_elevator.params import ElevatorParams, ParamError
from lib_elevator.standalone.pipeline import ElevatorPipeline, InjectedMotionT2V, TextEncoder, generate

FRAMES, SIZE, STEPS = 3, 64, 12
SHORT = dict(frames=FRAMES, refine_at=(10, 6), t2v_steps=3, t2v_cfg_scale=2.5)
PROMPT, NEGATIVE = "a dancing robot", "blurry"
SCHEDULER_CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="linear")


def pipeline(tiny, solver):
    return ElevatorPipeline(tiny.unet, tiny.vae, TextEncoder(tiny.tokenizer, tiny.text_encoder),
                            InjectedMotionT2V(tiny.motion_adapter, solver=solver))


def run(pipe, steps=STEPS, **overrides):
    params = ElevatorParams(**{**SHORT, **overrides})
    return generate(pipe, PROMPT, NEGATIVE, params=params, width=SIZE, height=SIZE, steps=steps, seed=3,
                    decode=False, disable_progress=True)


def test_elevate_is_the_default_mode_and_refines():
    assert ElevatorParams().mode == "elevate"
    with pytest.raises(ParamError, match=r"mode='t3v' is not allowed; one of elevate, t2v, t2i"):
        ElevatorParams(mode="t3v")


def test_t2i_mode_is_the_elevator_without_refinement_and_elevate_refines(tiny):
    pipe = pipeline(tiny, "lcm")
    t2i = run(pipe, mode="t2i")
    assert torch.equal(t2i.latents, run(pipe, refine_at=()).latents)
    assert t2i.counter.passes == {"t2i": 2 * STEPS, "correction": 0, "t2v": 0, "inversion": 0}
    elevated = run(pipe)
    assert torch.equal(elevated.latents, run(pipe, mode="elevate").latents)
    assert elevated.counter.passes["t2v"] > 0 and not torch.equal(elevated.latents, t2i.latents)


def test_modes_other_than_elevate_ignore_refine_at(tiny):
    pipe = pipeline(tiny, "lcm")
    with pytest.raises(ParamError, match="refine_at"):
        run(pipe, steps=4)
    assert run(pipe, steps=4, mode="t2i").counter.passes["t2v"] == 0


def reference_animatediff(motion_unet, scheduler, latents, cond, uncond, cfg, steps, generator):
    """A plain AnimateDiff/AnimateLCM loop: UNetMotionModel on [1, C, F, h, w], ε-CFG, scheduler.step."""
    scheduler.set_timesteps(steps)
    z = latents.transpose(0, 1)[None]
    contexts = torch.cat([uncond, cond]).repeat_interleave(FRAMES, dim=0)
    for t in scheduler.timesteps:
        with torch.no_grad():
            uncond_eps, cond_eps = motion_unet(torch.cat([z, z]), t, encoder_hidden_states=contexts).sample.chunk(2)
        z = scheduler.step(uncond_eps + cfg * (cond_eps - uncond_eps), t, z, generator=generator).prev_sample
    return z[0].transpose(0, 1)


@pytest.mark.parametrize("solver, steps", [("ddim", 8), ("lcm", 4)])
def test_t2v_mode_equals_a_plain_animatediff_loop(tiny, motion_unet, solver, steps):
    pipe = pipeline(tiny, solver)
    latents = mixed_noise(FRAMES, (4, SIZE // 8, SIZE // 8), 0.5, generator=torch.Generator().manual_seed(7))
    noise_generator = torch.Generator().manual_seed(11)

    def lcm_noise(sigma, sigma_next):  # LCMScheduler draws [1, C, F, h, w] noise from the generator
        return torch.randn((1, 4, FRAMES, SIZE // 8, SIZE // 8), generator=noise_generator)[0].transpose(0, 1)

    ours = generate(pipe, PROMPT, NEGATIVE, params=ElevatorParams(**SHORT, mode="t2v"), width=SIZE, height=SIZE,
                    steps=steps, latents=latents, noise_sampler=lcm_noise, decode=False, disable_progress=True)
    if solver == "ddim":
        scheduler = DDIMScheduler(**SCHEDULER_CONFIG, steps_offset=1, clip_sample=False, set_alpha_to_one=False)
    else:
        scheduler = LCMScheduler(**SCHEDULER_CONFIG, original_inference_steps=50, timestep_scaling=10.0)
    noise_generator_reference = torch.Generator().manual_seed(11)
    cond, uncond = pipe.text_encoder(PROMPT), pipe.text_encoder(NEGATIVE)
    expected = reference_animatediff(motion_unet, scheduler, latents, cond, uncond, SHORT["t2v_cfg_scale"], steps,
                                     noise_generator_reference)
    assert (ours.latents - expected).abs().max() <= 1e-5 * expected.std()
    assert ours.counter.passes == {"t2i": 0, "correction": 0, "t2v": 2 * steps, "inversion": 0}
