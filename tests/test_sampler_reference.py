"""The σ-space sampler against a reference loop written from DESIGN §3.2 in VP space with
diffusers' own DDIM, DDIM-inverse and LCM scheduler steps, on the same tiny models and noise."""
import math

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, LCMScheduler

from lib_elevator.attention import inflated
from lib_elevator.standalone.pipeline import (
    ElevatorPipeline, TextEncoder, generate, t2v_from_motion_unet, t2v_from_unet3d,
)
from lib_elevator.params import ElevatorParams

FRAMES, SIZE = 4, 64
SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
ANIMATEDIFF_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="linear")


def gaussian_mask_per_voxel(frames, height, width, d_s, d_t):
    """The DESIGN formula evaluated voxel by voxel (float64, then float32)."""
    mask = torch.zeros(frames, height, width, dtype=torch.float64)
    for t in range(frames):
        for h in range(height):
            for w in range(width):
                tt, hh, ww = 2 * t / frames - 1, 2 * h / height - 1, 2 * w / width - 1
                mask[t, h, w] = math.exp(-((d_s / d_t * tt) ** 2 + hh**2 + ww**2) / (2 * d_s**2))
    return mask.float()


def reference_lpff(x0, d_s, d_t):
    frames, _, height, width = x0.shape
    video = x0.float().permute(1, 0, 2, 3)  # [C, F, h, w]: fft over the last three axes
    spectrum = torch.fft.fftshift(torch.fft.fftn(video, dim=(-3, -2, -1)), dim=(-3, -2, -1))
    spectrum = spectrum * gaussian_mask_per_voxel(frames, height, width, d_s, d_t)
    out = torch.fft.ifftn(torch.fft.ifftshift(spectrum, dim=(-3, -2, -1)), dim=(-3, -2, -1)).real
    return out.permute(1, 0, 2, 3).to(x0.dtype)


def reference_elevator(unet, t2v_eps, cond, uncond, t2v_cond, t2v_uncond, *, steps, refine, t2v_steps, cfg,
                       t2v_cfg, d_s, d_t, alpha, correction, t2v_scheduler, seed):
    """DESIGN §3.2, step by step, in VP space."""
    generator = torch.Generator().manual_seed(seed)
    scheduler = DDIMScheduler(**SD_BETAS, steps_offset=1, clip_sample=False, set_alpha_to_one=False)
    scheduler.set_timesteps(steps)
    inverse = DDIMInverseScheduler(**SD_BETAS, steps_offset=1, clip_sample=False, set_alpha_to_one=False)
    inverse.set_timesteps(steps)

    c = (1 + alpha**2) ** -0.5
    shared = torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=generator)
    per_frame = torch.randn((FRAMES, 4, SIZE // 8, SIZE // 8), generator=generator)
    z = shared * (alpha * c) + per_frame * c

    def t2i_eps(sample, t, contexts):
        batch = contexts.repeat_interleave(FRAMES, dim=0)
        return unet(sample.repeat(contexts.shape[0], 1, 1, 1), t, encoder_hidden_states=batch).sample

    def cfg_eps(model, sample, t, negative, positive, scale):
        eps_u, eps_c = model(sample, t, torch.cat([negative, positive])).chunk(2)
        return eps_u + scale * (eps_c - eps_u)

    path = []
    for k, t in enumerate(scheduler.timesteps):
        with inflated(unet, FRAMES):
            eps = cfg_eps(t2i_eps, z, t, uncond, cond, cfg)
            out = scheduler.step(eps, t, z)
            z_next, x0 = out.prev_sample, out.pred_original_sample
            if correction and len(path) > 1:
                z_o = path.pop()
                eps_o = cfg_eps(t2i_eps, z_o, t, uncond, cond, 1.0)
                z_next = z_next + (path[-1] - scheduler.step(eps_o, t, z_o).prev_sample)
        z = z_next
        if steps - k in refine:
            if steps - k > refine[-1]:
                x0 = reference_lpff(x0, d_s, d_t)
            noise = torch.randn((FRAMES, 4, SIZE // 8, SIZE // 8), generator=generator)
            z_v = t2v_scheduler.add_noise(x0, noise, t.reshape(1))
            t2v_scheduler.set_timesteps(steps)
            if isinstance(t2v_scheduler, LCMScheduler):
                t2v_scheduler.set_begin_index(k)
            for j in range(k, k + t2v_steps):
                t_v = t2v_scheduler.timesteps[j]
                eps_v = cfg_eps(t2v_eps, z_v, t_v, t2v_uncond, t2v_cond, t2v_cfg)
                out = t2v_scheduler.step(eps_v, t_v, z_v, generator=generator) \
                    if isinstance(t2v_scheduler, LCMScheduler) else t2v_scheduler.step(eps_v, t_v, z_v)
                z_v = out.prev_sample
                video_x0 = out.denoised if isinstance(t2v_scheduler, LCMScheduler) else out.pred_original_sample
            latents, path = video_x0, []
            with inflated(unet, FRAMES):
                for u in inverse.timesteps[: steps - k - 1]:
                    latents = inverse.step(t2i_eps(latents, u, uncond), u, latents).prev_sample
                    path.append(latents)
            z = latents
    return z


def video_eps(model, per_frame_context):
    def eps(sample, t, contexts):
        video = sample.unflatten(0, (1, FRAMES)).transpose(1, 2).repeat(contexts.shape[0], 1, 1, 1, 1)
        context = contexts.repeat_interleave(FRAMES, dim=0) if per_frame_context else contexts
        return model(video, t, encoder_hidden_states=context).sample.transpose(1, 2).flatten(0, 1)
    return eps


def encode(encoder, prompt):
    return encoder(prompt)


RECIPES = {
    "animatelcm": dict(steps=30, refine=(26, 21, 15, 9), t2v_steps=6, d_t=0.6, alpha=0.5, t2v_cfg=2.0),
    "zeroscope": dict(steps=50, refine=(45, 35, 25, 15), t2v_steps=8, d_t=0.4, alpha=1.5, t2v_cfg=7.5),
    # refining with one step left: nothing to invert, the video is the T2V's x̂0
    "last_step": dict(steps=6, refine=(3, 1), t2v_steps=1, d_t=0.6, alpha=0.5, t2v_cfg=2.0),
}


@pytest.mark.parametrize("correction", [True, False])
@pytest.mark.parametrize("recipe", ["animatelcm", "zeroscope", "last_step"])
def test_sampler_matches_reference_loop(tiny, motion_unet, t2v_text_encoder, recipe, correction):
    spec = RECIPES[recipe]
    text = TextEncoder(tiny.tokenizer, tiny.text_encoder)
    prompt, negative = "a corgi running on the beach", "blurry"
    if recipe != "zeroscope":
        t2v = t2v_from_motion_unet(motion_unet, "lcm")
        t2v_eps, t2v_text = video_eps(motion_unet, True), text
        t2v_scheduler = LCMScheduler(**ANIMATEDIFF_BETAS, original_inference_steps=50, timestep_scaling=10.0)
    else:
        t2v = t2v_from_unet3d(tiny.unet3d, t2v_text_encoder)
        t2v_eps, t2v_text = video_eps(tiny.unet3d, False), t2v_text_encoder
        t2v_scheduler = DDIMScheduler(**SD_BETAS, steps_offset=1, clip_sample=False, set_alpha_to_one=False)
    pipe = ElevatorPipeline(tiny.unet, tiny.vae, text, t2v)
    params = ElevatorParams(frames=FRAMES, refine_at=spec["refine"], t2v_steps=spec["t2v_steps"],
                            t2v_cfg_scale=spec["t2v_cfg"], d_t=spec["d_t"], noise_alpha=spec["alpha"],
                            correction=correction)
    ours = generate(pipe, prompt, negative, params=params, width=SIZE, height=SIZE, steps=spec["steps"],
                    cfg_scale=7.5, seed=11, decode=False, disable_progress=True).latents
    with torch.no_grad():
        expected = reference_elevator(
            tiny.unet, t2v_eps, text(prompt), text(negative), t2v_text(prompt), t2v_text(negative),
            steps=spec["steps"], refine=spec["refine"], t2v_steps=spec["t2v_steps"], cfg=7.5,
            t2v_cfg=spec["t2v_cfg"], d_s=1.0, d_t=spec["d_t"], alpha=spec["alpha"], correction=correction,
            t2v_scheduler=t2v_scheduler, seed=11)
    difference = (ours - expected).abs().max().item()
    assert difference <= 1e-5 * expected.std().item(), (difference, expected.std().item())
