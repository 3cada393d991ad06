"""Stand-in for Forge 2 ``backend/diffusion_engine/sd15.py``: ``StableDiffusion``, the engine of an SD1 checkpoint.

``StableDiffusion(estimated_config, huggingface_components)`` with components ``unet`` (the stand-in's ldm
``UNetModel``), ``text_encoder`` (a module with ``transformer`` and ``tokenizer``: the stand-in's
``FrozenCLIPEmbedder``), ``tokenizer``, ``vae`` (diffusers ``AutoencoderKL``) and optionally
``scheduler``; ``text_processing_engine`` stands for Forge's ``ClassicTextProcessingEngine`` (the stand-in
passes the same 75-token chunking encoder the A1111 host uses, so both hosts get identical conditioning).
Builds ``ForgeObjects(unet=UnetPatcher.from_model(...), clip=CLIP(...), vae=VAE(...), clipvision=None)``
and the two copies; ``is_sd1 = True``.
``get_learned_conditioning(prompts)`` loads the CLIP patcher (merging its LoRA patches) and encodes;
``decode_first_stage(z)`` / ``encode_first_stage(x)`` go through ``forge_objects.vae`` with pixels in
[-1, 1] (decoding clamps); all three run under ``torch.inference_mode()``, as in Forge.
"""
import torch

from backend import memory_management
from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
from backend.patcher.clip import CLIP
from backend.patcher.unet import UnetPatcher
from backend.patcher.vae import VAE


class StableDiffusion(ForgeDiffusionEngine):
    def __init__(self, estimated_config, huggingface_components):
        super().__init__(estimated_config, huggingface_components)
        parts = huggingface_components
        clip = CLIP(model_dict={"clip_l": parts["text_encoder"]}, tokenizer_dict={"clip_l": parts["tokenizer"]})
        unet = UnetPatcher.from_model(model=parts["unet"], diffusers_scheduler=parts.get("scheduler"),
                                      config=estimated_config)
        self.text_processing_engine = parts["text_processing_engine"]
        loaded = ForgeObjects(unet=unet, clip=clip, vae=VAE(model=parts["vae"]), clipvision=None)
        self.forge_objects = loaded
        self.forge_objects_original, self.forge_objects_after_applying_lora = loaded.shallow_copy(), loaded.shallow_copy()
        self.is_sd1 = True  # the WebUI's legacy flag

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine.clip_skip = clip_skip  # the stand-in's encoder reads the setting itself

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]):
        clip = self.forge_objects.clip
        memory_management.load_model_gpu(clip.patcher)  # merges the CLIP LoRA patches
        return self.text_processing_engine(prompt)

    @torch.inference_mode()
    def encode_first_stage(self, x):
        vae = self.forge_objects.vae
        return vae.process_in(vae.encode(x.movedim(1, -1) * 0.5 + 0.5)).to(x)

    @torch.inference_mode()
    def decode_first_stage(self, x):
        vae = self.forge_objects.vae
        return (vae.decode(vae.process_out(x)).movedim(-1, 1) * 2.0 - 1.0).to(x)
