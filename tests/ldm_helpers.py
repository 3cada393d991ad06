"""Tiny ldm ``UNetModel``s (the UNet class A1111 runs) with the weights of a tiny diffusers UNet.

The ldm package is ``stable-diffusion-sdkit`` (installed with ``--no-deps``; its attention.py is
A1111's). Weights move from diffusers to ldm names with diffusers' own ldm→diffusers UNet key
converter, run backwards through ``diffusers_to_ldm_names``.
"""
from __future__ import annotations

import pytest
import torch

from lib_elevator.lora import diffusers_to_ldm_names
from lib_elevator.tiny import (
    LATENT_CHANNELS, MOTION_ADAPTER_CONFIG, SDXL_UNET2D_CONFIG, TEXT_DIM, UNET2D_CONFIG, randomize_weights,
)

SD15_SHAPED_CHANNELS = (32, 64, 128, 128)

SD15_SHAPED_UNET2D_CONFIG = dict(
    sample_size=8,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=SD15_SHAPED_CHANNELS,
    layers_per_block=2,
    cross_attention_dim=TEXT_DIM,
    attention_head_dim=8,
    norm_num_groups=32,
)
"""SD1.5's block structure (4 levels, 2 layers each, every block type and resampler position) at toy width."""

SD15_SHAPED_ADAPTER_CONFIG = {
    **MOTION_ADAPTER_CONFIG, "block_out_channels": SD15_SHAPED_CHANNELS, "motion_layers_per_block": 2,
}

SGM_SHAPED_UNET2D_CONFIG = {**SDXL_UNET2D_CONFIG, "transformer_layers_per_block": 1, "attention_head_dim": 4}
"""The tiny SDXL UNet with one transformer block per level (ldm's ``UNetModel`` has no per-level depth)."""

UNET_CONFIGS = {"tiny": UNET2D_CONFIG, "sd15_shaped": SD15_SHAPED_UNET2D_CONFIG}
ADAPTER_CONFIGS = {"tiny": MOTION_ADAPTER_CONFIG, "sd15_shaped": SD15_SHAPED_ADAPTER_CONFIG}


def diffusers_unet(config: dict, seed: int = 1):
    from diffusers import UNet2DConditionModel

    return randomize_weights(UNet2DConditionModel(**config), seed).eval()


def motion_adapter(config: dict, seed: int = 2):
    from diffusers import MotionAdapter

    return randomize_weights(MotionAdapter(**config), seed).eval()


def ldm_unet_kwargs(config: dict) -> dict:
    """ldm ``UNetModel`` arguments for the same network as a diffusers ``UNet2DConditionModel`` config.

    diffusers' ``attention_head_dim`` is, for SD1.x configs, the number of heads (a known naming
    quirk), which is what ldm's ``num_heads`` means.
    """
    base = config["block_out_channels"][0]
    return dict(
        image_size=config["sample_size"],
        in_channels=config["in_channels"],
        out_channels=config["out_channels"],
        model_channels=base,
        channel_mult=[channels // base for channels in config["block_out_channels"]],
        num_res_blocks=config["layers_per_block"],
        attention_resolutions=[
            2**level for level, kind in enumerate(config["down_block_types"]) if kind.startswith("CrossAttn")
        ],
        num_heads=config["attention_head_dim"],
        use_spatial_transformer=True,
        transformer_depth=1,
        context_dim=config["cross_attention_dim"],
        use_linear_in_transformer=config.get("use_linear_projection", False),
        legacy=False,
    )


def ldm_state_dict_from_diffusers(ldm_unet, diffusers_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = diffusers_to_ldm_names(ldm_unet)
    missing = sorted(set(ldm_unet.state_dict()) - set(names.values()))
    if missing or len(names) != len(diffusers_state):
        raise AssertionError(f"key conversion incomplete: ldm keys without a source {missing[:5]}")
    return {ldm_name: diffusers_state[name] for name, ldm_name in names.items()}


def ldm_unet_like(unet, config: dict):
    """An ldm ``UNetModel`` computing the same function as the diffusers ``unet`` built from ``config``.

    Skips the calling test when the ldm package is not installed, so diffusers-only tests still run;
    an installed but broken one (a dependency missing) fails loudly instead of skipping.
    """
    pytest.importorskip("ldm", reason="needs the ldm package: pip install --no-deps stable-diffusion-sdkit==2.1.5")
    from ldm.modules.diffusionmodules import openaimodel

    ldm_unet = openaimodel.UNetModel(**ldm_unet_kwargs(config)).eval()
    ldm_unet.load_state_dict(ldm_state_dict_from_diffusers(ldm_unet, unet.state_dict()), strict=True)
    return ldm_unet


def run_unet(unet, sample: torch.Tensor, timestep: float, context: torch.Tensor) -> torch.Tensor:
    """One forward of either UNet kind on a [N, C, H, W] batch; no_grad, as in sampling."""
    timesteps = torch.full((sample.shape[0],), float(timestep))
    with torch.no_grad():
        if hasattr(unet, "input_blocks"):
            return unet(sample, timesteps=timesteps, context=context)
        return unet(sample, timesteps, context).sample


def sgm_shaped_pair(seed: int = 21):
    """A diffusers SDXL-shaped UNet and ldm's ``UNetModel`` with the same weights and SDXL's vector input.

    No PyPI package ships ``sgm``; its ``UNetModel`` is ldm's block tree (``input_blocks``/``middle_block``/
    ``output_blocks`` of ``ResBlock``, ``SpatialTransformer``, ``Downsample``/``Upsample``) plus
    ``label_emb`` (Linear-SiLU-Linear) on ``y`` = pooled text ⊕ size-id embeddings, which is what
    ``num_classes="sequential"`` builds there. This stand-in uses one transformer block per level (ldm
    has no per-level depth).
    """
    pytest.importorskip("ldm", reason="needs the ldm package: pip install --no-deps stable-diffusion-sdkit==2.1.5")
    from ldm.modules.diffusionmodules import openaimodel

    config = SGM_SHAPED_UNET2D_CONFIG
    unet = diffusers_unet(config, seed)
    sgm = openaimodel.UNetModel(**ldm_unet_kwargs(config)).eval()
    state = {k: v for k, v in unet.state_dict().items() if not k.startswith("add_embedding.")}
    sgm.load_state_dict(ldm_state_dict_from_diffusers(sgm, state), strict=True)
    embedding = unet.add_embedding
    sgm.num_classes = "sequential"
    sgm.label_emb = torch.nn.Sequential(torch.nn.Sequential(embedding.linear_1, torch.nn.SiLU(), embedding.linear_2))
    return unet, sgm
