"""The elevator with an SDXL T2I standalone: first-frame attention on every SDXL transformer block,
SDXL conditioning per frame, the motion model's own schedule, v-prediction, refusals, files and the CLI."""
import json
import subprocess
import sys

import av
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionXLPipeline

import motion_files
from lib_elevator.attention import inflated
from lib_elevator.params import ElevatorParams
from lib_elevator.schedules import ANIMATEDIFF_SDXL_SCHEDULE, SD_SCHEDULE
from lib_elevator.standalone.cli import demo_pipeline, main
from lib_elevator.standalone.conditioning import SDXLTextEncoder, TextConditioning
from lib_elevator.standalone.files import ModelFilesError, load_pipeline
from lib_elevator.standalone.pipeline import EpsDenoiser, generate, unet2d_eps

FRAMES, SIZE = 3, 64
SHORT = dict(frames=FRAMES, refine_at=(10, 6), t2v_steps=3)


@pytest.fixture(scope="module", params=["animatediff-sdxl", "hotshotxl"])
def pipe(request):
    return demo_pipeline("sdxl", request.param)[0]


def run(pipe, seed=3, **kwargs):
    return generate(pipe, "a dancing robot", "blurry", params=ElevatorParams(**SHORT), width=SIZE, height=SIZE,
                    steps=12, seed=seed, decode=False, disable_progress=True, **kwargs)


def unet_snapshot(unet, conditioning):
    probe = torch.randn(2 * FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = unet(probe, 400, **conditioning.per_frame(FRAMES)).sample
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules())
    processors = {name: type(p) for name, p in unet.attn_processors.items()}
    return {k: v.clone() for k, v in unet.state_dict().items()}, output, hooks, processors


def assert_same(before, after):
    assert before[0].keys() == after[0].keys() and all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert torch.equal(before[1], after[1]) and before[2:] == after[2:]


def two_prompts(pipe):
    return TextConditioning.cat([pipe.text_encoder(p) for p in ("a", "b")]).sized(SIZE, SIZE)


def test_sdxl_conditioning_is_what_diffusers_sdxl_pipeline_builds(pipe):
    text = pipe.text_encoder
    reference = StableDiffusionXLPipeline(
        vae=pipe.vae, text_encoder=text.models[0], text_encoder_2=text.models[1], tokenizer=text.tokenizers[0],
        tokenizer_2=text.tokenizers[1], unet=pipe.unet, scheduler=DDIMScheduler())
    embeds, _, pooled, _ = reference.encode_prompt("a dancing robot", do_classifier_free_guidance=False)
    ours = text("a dancing robot").sized(SIZE, 48)
    assert torch.equal(ours.context, embeds) and torch.equal(ours.pooled, pooled)
    expected_ids = reference._get_add_time_ids((48, SIZE), (0, 0), (48, SIZE), pooled.dtype,
                                               text_encoder_projection_dim=text.models[1].config.projection_dim)
    assert torch.equal(ours.time_ids, expected_ids)


def test_first_frame_attention_covers_every_sdxl_transformer_block(pipe):
    blocks = [name for name, m in pipe.unet.named_modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert any(".transformer_blocks.1" in name for name in blocks)  # a block with several transformer blocks
    conditioning = two_prompts(pipe)
    sample = torch.randn(2 * FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    sample[FRAMES] = sample[0]  # the second clip's first frame equals the first clip's
    plain = unet2d_eps(pipe.unet)
    with torch.no_grad():
        expected = plain(sample, torch.tensor(500.0), conditioning.repeated(FRAMES), FRAMES)
        with inflated(pipe.unet, FRAMES) as inflation:
            wrapped = [n for n, p in pipe.unet.attn_processors.items() if type(p).__name__ == "_FirstFrameProcessor"]
            out = plain(sample, torch.tensor(500.0), conditioning.repeated(FRAMES), FRAMES)
    assert sorted(wrapped) == sorted(f"{name}.attn1.processor" for name in blocks)
    assert inflation.installed is False
    for first in (0, FRAMES):
        assert torch.allclose(out[first], expected[first], atol=1e-5)  # frame 0 attends to itself only
    assert not torch.allclose(out[1], expected[1], atol=1e-3)


def test_t2v_passes_run_on_the_motion_models_schedule_with_per_frame_sdxl_conditioning(pipe, monkeypatch):
    schedule = pipe.t2v.schedule
    hotshot = pipe.t2v.frame_pooled_spatial_norms
    assert schedule is (SD_SCHEDULE if hotshot else ANIMATEDIFF_SDXL_SCHEDULE)
    seen = []
    original = EpsDenoiser._denoise

    def spy(self, x, sigma, contexts):
        if self.schedule is schedule and self.solver == pipe.t2v.solver and self.cfg_scale == 2.0:
            seen.append((sigma, self.schedule.timestep(sigma), contexts.time_ids.tolist(), contexts.pooled.shape,
                         x.shape[0]))
        return original(self, x, sigma, contexts)

    monkeypatch.setattr(EpsDenoiser, "_denoise", spy)  # T2V calls told apart by their CFG scale (the T2I's is 5)
    generate(pipe, "a dancing robot", "blurry", params=ElevatorParams(**SHORT, t2v_cfg_scale=2.0), width=96,
             height=SIZE, steps=12, seed=1, decode=False, disable_progress=True, cfg_scale=5.0)
    assert len(seen) == 2 * 3  # two refinements of three T2V steps
    for sigma, t, time_ids, pooled_shape, rows in seen:  # a conditioning row per frame of the CFG batch
        assert 1 / (1 + sigma**2) == pytest.approx(float(schedule.alphas_cumprod[round(t)]), rel=1e-5)
        assert time_ids == [[SIZE, 96.0, 0.0, 0.0, SIZE, 96.0]] * rows and pooled_shape == (rows, 32)


def test_frame_chunked_sdxl_run_equals_one_batch(pipe):
    """The T2I/correction/inversion passes a frame at a time (bounded memory) give the one-batch video."""
    whole = run(pipe)
    chunked = generate(pipe, "a dancing robot", "blurry", params=ElevatorParams(**SHORT, frames_per_batch=1),
                       width=SIZE, height=SIZE, steps=12, seed=3, decode=False, disable_progress=True)
    assert torch.allclose(chunked.latents, whole.latents, atol=1e-5 * whole.latents.std().item())


def test_sdxl_run_is_reproducible_per_seed_and_leaves_the_unet_as_it_was(pipe):
    before = unet_snapshot(pipe.unet, two_prompts(pipe))
    first, again, other = run(pipe), run(pipe), run(pipe, seed=4)
    assert torch.equal(first.latents, again.latents) and not torch.allclose(first.latents, other.latents)
    assert torch.isfinite(first.latents).all()
    assert_same(before, unet_snapshot(pipe.unet, two_prompts(pipe)))


def test_a_failed_sdxl_run_leaves_the_unet_as_it_was(pipe):
    before = unet_snapshot(pipe.unet, two_prompts(pipe))

    def fail(info):
        if info["i"] == 3:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        run(pipe, callback=fail)
    assert_same(before, unet_snapshot(pipe.unet, two_prompts(pipe)))


def test_v_prediction_denoiser_recovers_x0():
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigma = 3.0
    alpha, sd = (1 + sigma**2) ** -0.5, sigma * (1 + sigma**2) ** -0.5

    def v_model(z, t, contexts, frames):
        return alpha * noise - sd * x0  # the exact v target for z = α·x0 + σ_VP·ε

    denoiser = EpsDenoiser(v_model, SD_SCHEDULE, torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), 1.0, 2,
                           prediction_type="v_prediction")
    assert torch.allclose(denoiser.conditional(x0 + sigma * noise, sigma), x0, atol=1e-5)
    with pytest.raises(ValueError, match="prediction_type 'sample'"):
        EpsDenoiser(v_model, SD_SCHEDULE, torch.zeros(1), torch.zeros(1), 1.0, 2, prediction_type="sample")


# --- files on disk ----------------------------------------------------------------------------------

def save_sdxl_folder(root, pipe, scheduler=None, **unet_overrides):
    """A diffusers SDXL folder of the tiny models (model_index.json, unet, vae, both encoders and tokenizers)."""
    from diffusers import UNet2DConditionModel

    text = pipe.text_encoder
    unet = pipe.unet
    if unet_overrides:
        unet = UNet2DConditionModel(**{**dict(unet.config), **unet_overrides})
    unet.save_pretrained(root / "unet")
    pipe.vae.save_pretrained(root / "vae")
    for i, suffix in enumerate(("", "_2")):
        text.tokenizers[i].save_pretrained(root / f"tokenizer{suffix}")
        text.models[i].save_pretrained(root / f"text_encoder{suffix}", safe_serialization=True)
    (root / "scheduler").mkdir()
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, **(scheduler or {})}
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    return root


@pytest.fixture(scope="module")
def sdxl_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl_models")
    pipe = demo_pipeline("sdxl", "animatediff-sdxl")[0]
    folder = save_sdxl_folder(root / "sdxl-tiny", pipe)
    motion = {}
    for kind in ("animatediff_sdxl_beta", "hotshotxl", "animatelcm_t2v"):
        suffix = "." + motion_files.spec()["kinds"][kind]["container"]
        motion[kind] = root / f"{kind}{suffix}"
        motion_files.write_kind(kind, motion[kind])
    return root, folder, pipe, motion


@pytest.mark.parametrize("kind, label", [("animatediff_sdxl_beta", "AnimateDiff-SDXL (beta) (ddim)"),
                                         ("hotshotxl", "Hotshot-XL (ddim)")])
def test_cli_elevates_an_sdxl_folder_with_an_sdxl_motion_file(sdxl_files, tmp_path, capsys, kind, label):
    _, folder, _, motion = sdxl_files
    out = tmp_path / "boat"
    args = ["generate", "--checkpoint", str(folder), "--motion-module", str(motion[kind]), "--prompt", "a boat",
            "--width", str(SIZE), "--height", str(SIZE), "--steps", "8", "--frames", "3", "--refine-at", "6,3",
            "--t2v-steps", "2", "--out", str(out), "--format", "mp4", "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    with av.open(str(out.with_suffix(".mp4"))) as container:
        frames = list(container.decode(video=0))
        assert len(frames) == 3 and (frames[0].width, frames[0].height) == (SIZE, SIZE)
        assert f"T2V: {label}" in container.metadata["comment"]


def test_sd15_motion_module_with_an_sdxl_checkpoint_is_refused_naming_both(sdxl_files):
    _, folder, _, motion = sdxl_files
    with pytest.raises(ValueError, match=r"AnimateLCM motion module is made for SD1\.5 UNets .* loaded model's UNet"):
        load_pipeline(folder, motion_module=motion["animatelcm_t2v"])


@pytest.mark.parametrize("variant, message", [
    ("refiner", "SDXL refiner"),
    ("inpainting", "inpainting or other 9-channel UNet"),
    ("transformer", r"transformer \(SD3/Flux-style\)"),
    ("zero_snr", "zero-terminal-SNR"),
    ("sd2_v", "v_prediction checkpoints are supported for SDXL only"),
])
def test_checkpoints_the_elevator_cannot_run_are_refused_by_name(sdxl_files, tmp_path, variant, message):
    _, folder, pipe, motion = sdxl_files
    target = tmp_path / variant
    if variant == "transformer":
        (target / "transformer").mkdir(parents=True)
    elif variant == "refiner":
        save_sdxl_folder(target, pipe)
        (target / "model_index.json").write_text(json.dumps({"requires_aesthetics_score": True}))
    elif variant == "inpainting":
        save_sdxl_folder(target, pipe, in_channels=9)
    elif variant == "zero_snr":
        save_sdxl_folder(target, pipe, {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True})
    else:
        save_sdxl_folder(target, pipe, {"prediction_type": "v_prediction"}, addition_embed_type=None)
    with pytest.raises(ModelFilesError, match=message):
        load_pipeline(target, motion_module=motion["animatediff_sdxl_beta"])


def test_v_prediction_sdxl_folder_runs_with_v_prediction_in_both_passes(sdxl_files, tmp_path):
    _, _, pipe, motion = sdxl_files
    folder = save_sdxl_folder(tmp_path / "vpred", pipe, {"prediction_type": "v_prediction"})
    loaded = load_pipeline(folder, motion_module=motion["animatediff_sdxl_beta"])
    assert loaded.prediction_type == "v_prediction"
    result = run(loaded)
    eps_result = run(load_pipeline(sdxl_files[1], motion_module=motion["animatediff_sdxl_beta"]))
    assert torch.isfinite(result.latents).all() and not torch.allclose(result.latents, eps_result.latents)


@pytest.mark.parametrize("motion", ["animatediff-sdxl", "hotshotxl"])
def test_demo_base_sdxl_writes_a_playable_mp4(tmp_path, motion):
    out = tmp_path / "D"
    result = subprocess.run([sys.executable, "-m", "lib_elevator", "demo", "--base", "sdxl", "--motion", motion,
                             "--frames", "4", "--steps", "10", "--t2v-steps", "3", "--format", "mp4", "--quiet",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    label = {"animatediff-sdxl": "AnimateDiff-SDXL (beta)", "hotshotxl": "Hotshot-XL"}[motion]
    assert f"tiny SDXL with {label}" in result.stdout
    with av.open(str(tmp_path / "D.mp4")) as container:
        assert len(list(container.decode(video=0))) == 4


def test_demo_refuses_a_motion_layout_of_another_base(capsys):
    assert main(["demo", "--base", "sd15", "--motion", "hotshotxl", "--quiet"]) == 2
    assert "--motion hotshotxl does not fit --base sd15" in capsys.readouterr().err
