"""Stand-in for Forge 2 ``backend/diffusion_engine/sdxl.py``: ``StableDiffusionXL``, the engine of an SDXL checkpoint.

``StableDiffusionXL(estimated_config, huggingface_components)`` with components ``unet`` (the stand-in's
sgm-shaped ldm ``UNetModel``, see ``tests/ldm_helpers.sgm_shaped_pair``), ``text_encoder`` / ``text_encoder_2``
(``clip_l`` / ``clip_g``), ``tokenizer`` / ``tokenizer_2``, ``vae`` and optionally ``scheduler``. Forge builds
its two ``ClassicTextProcessingEngine``s here (penultimate layer, no final layer norm; the second returns its
pooled projection too); the stand-in is handed the same chunking encoders the A1111 SDXL stand-in uses
(``text_processing_engine_l`` / ``_g``), so both hosts get identical conditioning. ``self.embedder`` is
``backend.nn.unet.Timestep``: 256 wide in Forge, ``size_embedding_width`` here (the tiny UNet's).
``get_learned_conditioning(prompt)`` loads the CLIP patcher, encodes with both engines and returns
``{"crossattn": cat(l, g) on the channels, "vector": cat(pooled, the six size/crop embeddings)}`` with the
size from ``prompt.width``/``height`` (1024 when missing) and crop from ``opts.sdxl_crop_left/top``; an
all-empty negative prompt gives zeros for the text parts. The VAE round trip is SD1's (the same in Forge).
``is_sdxl = True``; no refiner engine.
"""
import torch

from backend import memory_management
from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
from backend.diffusion_engine.sd15 import StableDiffusion
from backend.nn.unet import Timestep
from backend.patcher.clip import CLIP
from backend.patcher.unet import UnetPatcher
from backend.patcher.vae import VAE


class StableDiffusionXL(ForgeDiffusionEngine):
    def __init__(self, estimated_config, huggingface_components):
        super().__init__(estimated_config, huggingface_components)
        parts = huggingface_components
        clip = CLIP(model_dict={"clip_l": parts["text_encoder"], "clip_g": parts["text_encoder_2"]},
                    tokenizer_dict={"clip_l": parts["tokenizer"], "clip_g": parts["tokenizer_2"]})
        unet = UnetPatcher.from_model(model=parts["unet"], diffusers_scheduler=parts.get("scheduler"),
                                      config=estimated_config)
        self.text_processing_engine_l = parts["text_processing_engine_l"]
        self.text_processing_engine_g = parts["text_processing_engine_g"]
        self.embedder = Timestep(parts["size_embedding_width"])
        loaded = ForgeObjects(unet=unet, clip=clip, vae=VAE(model=parts["vae"]), clipvision=None)
        self.forge_objects = loaded
        self.forge_objects_original, self.forge_objects_after_applying_lora = loaded.shallow_copy(), loaded.shallow_copy()
        self.is_sdxl = True

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine_l.clip_skip = self.text_processing_engine_g.clip_skip = clip_skip

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]):
        from modules.shared import opts

        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        cond_l = self.text_processing_engine_l(prompt)
        cond_g, pooled = self.text_processing_engine_g(prompt)
        width = getattr(prompt, "width", 1024) or 1024
        height = getattr(prompt, "height", 1024) or 1024
        sizes = (height, width, opts.sdxl_crop_top, opts.sdxl_crop_left, height, width)
        flat = torch.cat([self.embedder(torch.Tensor([value])) for value in sizes]).flatten()
        flat = flat.unsqueeze(0).repeat(pooled.shape[0], 1).to(pooled)
        if getattr(prompt, "is_negative_prompt", False) and all(text == "" for text in prompt):
            pooled, cond_l, cond_g = torch.zeros_like(pooled), torch.zeros_like(cond_l), torch.zeros_like(cond_g)
        return dict(crossattn=torch.cat([cond_l, cond_g], dim=2), vector=torch.cat([pooled, flat], dim=1))

    encode_first_stage, decode_first_stage = StableDiffusion.encode_first_stage, StableDiffusion.decode_first_stage
