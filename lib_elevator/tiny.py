"""Tiny random diffusers models built from configs, for the demo, the benchmark and the tests.

Nothing is downloaded: every model is built from a config in this file and its weights are
drawn from one seeded generator in sorted key order (norm weights 1 + 0.02·N, every other float
tensor N/√fan_in). diffusers zero-initialises some layers (output convs, ``proj_out``), which
would leave code paths untested; redrawing everything also makes the weights independent of the
diffusers version.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

LATENT_CHANNELS = 4
TEXT_DIM = 32
BLOCK_CHANNELS = (32, 64)

UNET2D_CONFIG = dict(
    sample_size=8,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=BLOCK_CHANNELS,
    layers_per_block=1,
    cross_attention_dim=TEXT_DIM,
    attention_head_dim=8,
    norm_num_groups=32,
)

MOTION_ADAPTER_CONFIG = dict(
    block_out_channels=BLOCK_CHANNELS,
    motion_layers_per_block=1,
    motion_mid_block_layers_per_block=1,
    motion_num_attention_heads=2,
    motion_norm_num_groups=32,
    motion_max_seq_length=32,
    use_motion_mid_block=True,
)

UNET3D_CONFIG = dict(
    sample_size=8,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=BLOCK_CHANNELS,
    layers_per_block=1,
    cross_attention_dim=TEXT_DIM,
    attention_head_dim=8,
    norm_num_groups=32,
)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 16, 16, 16),
    layers_per_block=1,
    latent_channels=LATENT_CHANNELS,
    norm_num_groups=16,
    sample_size=64,
    scaling_factor=0.18215,
)

SDXL_BLOCK_CHANNELS = (32, 64, 128)  # SDXL's 320/640/1280 divided by 10
SDXL_TIME_ID_DIM = 8
SDXL_UNET2D_CONFIG = dict(
    sample_size=8,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=SDXL_BLOCK_CHANNELS,
    layers_per_block=2,
    transformer_layers_per_block=(1, 1, 2),
    cross_attention_dim=2 * TEXT_DIM,
    attention_head_dim=(2, 4, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=SDXL_TIME_ID_DIM,
    projection_class_embeddings_input_dim=TEXT_DIM + 6 * SDXL_TIME_ID_DIM,
    norm_num_groups=32,
)
"""SDXL's structure at toy width: 3 levels, no attention on the first, 2 layers per level, several
transformer blocks per attention on the deepest level, two concatenated text encoders (context
2×32) with the second one's pooled embedding and the six size/crop ids as added conditioning."""

CLIP_TEXT_CONFIG = dict(
    hidden_size=TEXT_DIM,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
    projection_dim=TEXT_DIM,
)


def randomize_weights(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Redraw every float tensor of ``model``'s state_dict from one generator, in sorted key order."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    new_state = {}
    for key in sorted(state):
        tensor = state[key]
        if not tensor.is_floating_point():
            continue
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
        if "norm" in key and key.endswith(".weight") and tensor.ndim == 1:
            value = 1.0 + 0.02 * noise
        else:
            fan_in = tensor[0].numel() if tensor.ndim >= 2 else tensor.shape[0]
            value = noise / fan_in**0.5
        new_state[key] = value.to(tensor.dtype)
    model.load_state_dict(new_state, strict=False)
    return model


def tiny_unet2d(seed: int = 1):
    from diffusers import UNet2DConditionModel

    return randomize_weights(UNet2DConditionModel(**UNET2D_CONFIG), seed).eval()


def tiny_sdxl_unet2d(seed: int = 11):
    from diffusers import UNet2DConditionModel

    return randomize_weights(UNet2DConditionModel(**SDXL_UNET2D_CONFIG), seed).eval()


def tiny_sdxl_motion_adapter(kind: str = "animatediff_sdxl_beta", seed: int = 12):
    """A motion model in an SDXL layout (AnimateDiff-SDXL beta or Hotshot-XL) at toy width, and what it is.

    Built by the same code as a loaded file of that kind, so Hotshot-XL's per-frame norms come with it.
    """
    from .motion.convert import motion_adapter_for
    from .motion.detect import MotionKind, MotionModuleInfo, SDXL_KIND_BY_NAMING_AND_STORED_PE

    motion_kind = MotionKind(kind)
    (_, pe_length), = [key for key, value in SDXL_KIND_BY_NAMING_AND_STORED_PE.items() if value is motion_kind]
    info = MotionModuleInfo(
        kind=motion_kind, base_model="SDXL", block_out_channels=SDXL_BLOCK_CHANNELS,
        motion_modules_per_down_block=2, motion_modules_per_up_block=3, has_mid_block=False,
        positional_encoding_length=pe_length, positional_encoding_stored=True, attention_heads=8,
        unet_cross_attention_dim=None,
    )
    return randomize_weights(motion_adapter_for(info, device="cpu"), seed).eval(), info


def tiny_motion_adapter(seed: int = 2, **overrides):
    from diffusers import MotionAdapter

    return randomize_weights(MotionAdapter(**{**MOTION_ADAPTER_CONFIG, **overrides}), seed).eval()


def tiny_unet3d(seed: int = 3):
    from diffusers import UNet3DConditionModel

    return randomize_weights(UNet3DConditionModel(**UNET3D_CONFIG), seed).eval()


def tiny_vae(seed: int = 4):
    from diffusers import AutoencoderKL

    return randomize_weights(AutoencoderKL(**VAE_CONFIG), seed).eval()


def tiny_tokenizer():
    """A real ``CLIPTokenizer`` over printable ASCII with no merges (one token per character).

    Saved to a temporary folder and read back with ``from_pretrained`` because that is the one
    constructor transformers 4 and 5 share.
    """
    from transformers import CLIPTokenizer

    symbols = [chr(code) for code in range(33, 127)]
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
        Path(folder, "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def tiny_text_encoder(tokenizer, seed: int = 5, with_projection: bool = False):
    """A tiny CLIP text encoder; ``with_projection`` gives SDXL's second encoder (pooled ``text_embeds``)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **CLIP_TEXT_CONFIG,
    )
    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return randomize_weights(model_class(config), seed).eval()


@dataclass
class TinyModels:
    """Everything the standalone pipeline needs, at toy size."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    tokenizer: object
    text_encoder: torch.nn.Module
    motion_adapter: torch.nn.Module
    unet3d: torch.nn.Module


@dataclass
class TinySDXLModels:
    """An SDXL-shaped T2I (two text encoders) and a motion model in an SDXL layout, at toy size."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    tokenizers: tuple
    text_encoders: tuple
    motion_adapter: torch.nn.Module
    motion_info: object


def tiny_sdxl_models(motion_kind: str = "animatediff_sdxl_beta") -> TinySDXLModels:
    tokenizer = tiny_tokenizer()
    adapter, info = tiny_sdxl_motion_adapter(motion_kind)
    return TinySDXLModels(
        unet=tiny_sdxl_unet2d(),
        vae=tiny_vae(),
        tokenizers=(tokenizer, tokenizer),
        text_encoders=(tiny_text_encoder(tokenizer, seed=13), tiny_text_encoder(tokenizer, seed=14, with_projection=True)),
        motion_adapter=adapter,
        motion_info=info,
    )


def tiny_models() -> TinyModels:
    tokenizer = tiny_tokenizer()
    return TinyModels(
        unet=tiny_unet2d(),
        vae=tiny_vae(),
        tokenizer=tokenizer,
        text_encoder=tiny_text_encoder(tokenizer),
        motion_adapter=tiny_motion_adapter(),
        unet3d=tiny_unet3d(),
    )
