import pytest
import torch
from diffusers import DDIMScheduler

from lib_elevator.attention import inflated
from lib_elevator.standalone.pipeline import ElevatorPipeline, TextEncoder, generate, t2v_from_motion_unet
from lib_elevator.params import ElevatorParams
from lib_elevator.sampler import ElevatorPlan

FRAMES, SIZE = 2, 64
LCM_RECIPE = dict(refine_at=(26, 21, 15, 9), t2v_steps=6, t2v_cfg_scale=2.0, d_t=0.6, noise_alpha=0.5)


@pytest.fixture(scope="module")
def pipe(tiny, motion_unet):
    return ElevatorPipeline(tiny.unet, tiny.vae, TextEncoder(tiny.tokenizer, tiny.text_encoder),
                            t2v_from_motion_unet(motion_unet, "lcm"))


def run(pipe, steps=30, **overrides):
    params = ElevatorParams(**{"frames": FRAMES, **LCM_RECIPE, **overrides})
    return generate(pipe, "a red fox", "ugly", params=params, width=SIZE, height=SIZE, steps=steps,
                    seed=5, decode=False, disable_progress=True)


def count_passes(module):
    """Counts F-frame passes from real forward calls (batch items / F)."""
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args, kwargs: seen.append(args[0].shape), with_kwargs=True)
    return seen, handle


def test_without_refinement_equals_plain_ddim_with_inflated_t2i(tiny, pipe):
    ours = run(pipe, steps=12, refine_at=()).latents
    text = pipe.text_encoder
    contexts = torch.cat([text("ugly"), text("a red fox")]).repeat_interleave(FRAMES, dim=0)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                              clip_sample=False, set_alpha_to_one=False)
    scheduler.set_timesteps(12)
    from lib_elevator.noise import mixed_noise
    z = mixed_noise(FRAMES, (4, SIZE // 8, SIZE // 8), 0.5, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), inflated(tiny.unet, FRAMES):
        for t in scheduler.timesteps:
            eps_u, eps_c = tiny.unet(torch.cat([z, z]), t, encoder_hidden_states=contexts).sample.chunk(2)
            z = scheduler.step(eps_u + 7.5 * (eps_c - eps_u), t, z).prev_sample
    assert (ours - z).abs().max() <= 1e-5 * z.std()


def test_pass_counts_match_real_unet_calls_and_beat_the_paper_pipeline(tiny, pipe, motion_unet):
    t2i_calls, t2i_handle = count_passes(tiny.unet)
    t2v_calls, t2v_handle = count_passes(motion_unet)
    try:
        result = run(pipe)
    finally:
        t2i_handle.remove()
        t2v_handle.remove()
    passes = result.counter.passes
    assert passes == {"t2i": 60, "correction": 17, "t2v": 48, "inversion": 67}
    assert result.counter.reused == 4  # first correction after each inversion reuses the main call
    assert sum(shape[0] for shape in t2i_calls) == (60 + 17 + 67) * FRAMES
    assert sum(shape[0] * shape[2] for shape in t2v_calls) == 48 * FRAMES  # [G, C, F, h, w]
    paper = 30 * 2 + 24 * 2 + 24 * 2 + 67  # DESIGN §3.4: the released pipeline's structure
    assert paper == 223 and result.counter.total == 192
    assert ElevatorPlan.build(30, result.params).passes == 192  # what the WebUI's progress bar expects


def test_correction_off_drops_only_correction_passes(pipe):
    off = run(pipe, correction=False)
    assert off.counter.passes == {"t2i": 60, "correction": 0, "t2v": 48, "inversion": 67}
    assert ElevatorPlan.build(30, off.params).passes == off.counter.total
    assert off.counter.reused == 0
    assert not torch.equal(off.latents, run(pipe).latents)


def test_seeded_runs_are_reproducible_and_noise_is_injectable(pipe):
    first, second = run(pipe), run(pipe)
    assert torch.equal(first.latents, second.latents)
    draws = []

    def noise(sigma, sigma_next):
        draws.append((sigma, sigma_next))
        return torch.zeros(FRAMES, 4, SIZE // 8, SIZE // 8)

    latents = torch.zeros(FRAMES, 4, SIZE // 8, SIZE // 8)
    params = ElevatorParams(frames=FRAMES, **LCM_RECIPE)
    a = generate(pipe, "a red fox", params=params, width=SIZE, height=SIZE, steps=30, seed=None, latents=latents,
                 noise_sampler=noise, decode=False, disable_progress=True)
    # one SDEdit draw per refinement, then one per LCM step (none at ladder index N-1)
    assert len(draws) == 4 * (1 + 6)
    b = generate(pipe, "a red fox", params=params, width=SIZE, height=SIZE, steps=30, seed=None, latents=latents,
                 noise_sampler=noise, decode=False, disable_progress=True)
    assert torch.equal(a.latents, b.latents)


def test_callback_sees_every_t2i_step(pipe):
    seen = []
    params = ElevatorParams(frames=FRAMES, refine_at=(0.5,), t2v_steps=2)
    generate(pipe, "a red fox", params=params, width=SIZE, height=SIZE, steps=8, seed=1, decode=False,
             disable_progress=True, callback=lambda info: seen.append((info["i"], info["denoised"].shape)))
    assert [i for i, _ in seen] == list(range(8))
    assert all(shape == (FRAMES, 4, SIZE // 8, SIZE // 8) for _, shape in seen)


def test_ladder_ending_at_zero_sigma_runs(tiny, pipe):
    """WebUI ladders end at σ = 0; the loop must handle the final step and an inversion from 0."""
    from lib_elevator.standalone.pipeline import EpsDenoiser, unet2d_eps
    from lib_elevator.sampler import sample_elevator
    from lib_elevator.schedules import SD_SCHEDULE

    cond = pipe.text_encoder("a fox")
    t2i = EpsDenoiser(unet2d_eps(tiny.unet), SD_SCHEDULE, cond, cond, 5.0, FRAMES)
    t2v = EpsDenoiser(pipe.t2v.eps_model, pipe.t2v.schedule, cond, cond, 2.0, FRAMES, solver="lcm")
    sigmas = torch.tensor([14.6, 6.0, 2.5, 1.0, 0.4, 0.1, 0.0])
    with torch.no_grad(), inflated(tiny.unet, FRAMES):
        out = sample_elevator(t2i, t2v, torch.randn(FRAMES, 4, 8, 8) * 14.6, sigmas,
                              ElevatorParams(frames=FRAMES, refine_at=(4, 2), t2v_steps=2), disable=True)
    assert out.shape == (FRAMES, 4, 8, 8) and torch.isfinite(out).all()


def test_sampler_builds_no_autograd_graph(tiny, pipe):
    """Called outside ``torch.no_grad`` (as a WebUI extension may be), nothing keeps a graph."""
    from lib_elevator.standalone.pipeline import EpsDenoiser, unet2d_eps
    from lib_elevator.sampler import sample_elevator
    from lib_elevator.schedules import SD_SCHEDULE, ddim_sigmas

    cond = pipe.text_encoder("a fox").detach()
    t2i = EpsDenoiser(unet2d_eps(tiny.unet), SD_SCHEDULE, cond, cond, 5.0, FRAMES)
    t2v = EpsDenoiser(pipe.t2v.eps_model, pipe.t2v.schedule, cond, cond, 2.0, FRAMES, solver="lcm")
    assert any(parameter.requires_grad for parameter in tiny.unet.parameters())
    with inflated(tiny.unet, FRAMES):
        out = sample_elevator(t2i, t2v, torch.randn(FRAMES, 4, 8, 8) * 14.6, ddim_sigmas(SD_SCHEDULE, 4),
                              ElevatorParams(frames=FRAMES, refine_at=(2,), t2v_steps=1), disable=True)
    assert not out.requires_grad


def test_plan_counts_calls_for_the_progress_bar():
    plan = ElevatorPlan.build(30, ElevatorParams(**LCM_RECIPE))
    assert plan.refine_steps == (4, 9, 15, 21) and plan.filtered_steps == (4, 9, 15)
    assert plan.calls == 30 + 4 * 6 + (25 + 20 + 14 + 8)
