"""Stand-in for Forge 2 ``backend/diffusion_engine/base.py``: what ``shared.sd_model`` is in Forge.

``ForgeObjects(unet, clip, vae, clipvision)`` with ``shallow_copy()`` (a new holder of the same four
objects). ``ForgeDiffusionEngine`` holds three of them — ``forge_objects`` (the working set processing
and scripts change), ``forge_objects_original`` (as loaded) and ``forge_objects_after_applying_lora`` —
and the WebUI-compatibility fields Forge sets (``is_sd1`` … ``is_sd3`` False, ``first_stage_model`` and
``cond_stage_model`` None, ``tiling_enabled``, ``is_inpaint`` from the model config). It is not an
``nn.Module`` and has no ``model``/``apply_model``/``alphas_cumprod``.
"""


def _left_to_the_engine(self, *args):
    """The base class does nothing here; each engine (``sd15.StableDiffusion`` …) overrides it."""
    return None


class ForgeObjects:
    def __init__(self, unet, clip, vae, clipvision):
        self.unet, self.clip, self.vae, self.clipvision = unet, clip, vae, clipvision

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class ForgeDiffusionEngine:
    matched_guesses = []

    def __init__(self, estimated_config, huggingface_components):
        self.model_config = estimated_config
        self.is_inpaint = estimated_config.inpaint_model()
        self.forge_objects = self.forge_objects_original = self.forge_objects_after_applying_lora = None
        self.current_lora_hash = str([])
        self.fix_for_webui_backward_compatibility()

    def fix_for_webui_backward_compatibility(self):
        self.tiling_enabled = False
        self.first_stage_model = self.cond_stage_model = None
        self.use_distilled_cfg_scale = False
        self.is_sd1 = self.is_sd2 = self.is_sdxl = self.is_sd3 = False

    set_clip_skip = get_learned_conditioning = encode_first_stage = decode_first_stage = _left_to_the_engine

    def get_first_stage_encoding(self, x):
        return x  # Forge's latents are already scaled

    def get_prompt_lengths_on_ui(self, prompt):
        return 0, 75  # (tokens used, tokens available) for the UI counter

    def is_webui_legacy_model(self):
        return any((self.is_sd1, self.is_sd2, self.is_sdxl, self.is_sd3))
