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
