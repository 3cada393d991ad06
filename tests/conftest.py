import pytest
import torch

# Tiny models: thread start-up costs more than it saves, and CI has only 2 cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    """The embedded tiny models (seeded, deterministic), built once per test session."""
    from lib_elevator.tiny import tiny_models

    return tiny_models()


@pytest.fixture(scope="session")
def motion_unet(tiny):
    """diffusers' UNetMotionModel copy of the tiny T2I UNet plus the tiny motion adapter."""
    from diffusers import UNetMotionModel

    return UNetMotionModel.from_unet2d(tiny.unet, tiny.motion_adapter).eval()


@pytest.fixture(scope="session")
def t2v_text_encoder():
    """A second, differently seeded CLIP for the UNet3D T2V (ZeroScope has its own)."""
    from lib_elevator.standalone.pipeline import TextEncoder
    from lib_elevator.tiny import tiny_text_encoder, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    return TextEncoder(tokenizer, tiny_text_encoder(tokenizer, seed=6))


TEXT_WIDTH = 76  # SD1.5's 768, scaled down 10x as in the motion-module test files


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    """A diffusers SD folder with SD1.5's block structure, an AnimateLCM-layout motion module and
    AnimateLCM's t2v LoRA layout, all scaled down from the real key layouts."""
    from transformers import CLIPTextConfig, CLIPTextModel

    import motion_files
    from ldm_helpers import SD15_SHAPED_UNET2D_CONFIG, diffusers_unet
    from lib_elevator.tiny import CLIP_TEXT_CONFIG, randomize_weights, tiny_tokenizer, tiny_vae

    root = tmp_path_factory.mktemp("models")
    checkpoint = root / "sd15-tiny"
    diffusers_unet({**SD15_SHAPED_UNET2D_CONFIG, "cross_attention_dim": TEXT_WIDTH}).save_pretrained(checkpoint / "unet")
    tiny_vae().save_pretrained(checkpoint / "vae")
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(checkpoint / "tokenizer")
    text_config = CLIPTextConfig(**{**CLIP_TEXT_CONFIG, "hidden_size": TEXT_WIDTH, "projection_dim": TEXT_WIDTH},
                                 vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    # safetensors on every transformers version (4.30, the WebUI pin, still defaults to pickles)
    randomize_weights(CLIPTextModel(text_config), 7).save_pretrained(checkpoint / "text_encoder", safe_serialization=True)
    motion = root / "AnimateLCM_sd15_t2v.safetensors"
    motion_files.write_kind("animatelcm_t2v", motion)
    lora = root / "AnimateLCM_sd15_t2v_lora.safetensors"
    motion_files.write_kind("animatelcm_t2v_lora", lora)
    return checkpoint, motion, lora
