"""Stand-in for Forge 2 ``backend/patcher/vae.py``: ``VAE`` (``forge_objects.vae``) around the checkpoint's
autoencoder (here the stand-in's tiny diffusers ``AutoencoderKL``, as ``first_stage_model``).

``decode(latents)`` takes *unscaled* latents and returns pixels as ``[B, H, W, C]`` in [0, 1] (clamped);
``encode(pixels)`` takes ``[B, H, W, C]`` in [0, 1] and returns unscaled latents (the posterior's mean —
the stand-in keeps encoding deterministic). ``process_in`` / ``process_out`` convert between unscaled
and sampler latents with the model's ``scaling_factor`` / ``shift_factor`` (in Forge they live on
``first_stage_model``). ``latent_channels``, ``patcher``, ``clone()`` as in Forge. No tiling.
"""
from backend import memory_management
from backend.patcher.base import ModelPatcher


class VAE:
    def __init__(self, model=None, device=None, dtype=None, no_init=False):
        if no_init:
            return
        self.first_stage_model = model
        self.latent_channels = int(model.config.latent_channels)
        self.scaling_factor = float(model.config.scaling_factor)
        self.shift_factor = float(getattr(model.config, "shift_factor", None) or 0.0)
        self.output_device = memory_management.vae_offload_device()
        self.patcher = ModelPatcher(model, load_device=memory_management.vae_device(),
                                    offload_device=memory_management.vae_offload_device())

    def clone(self):
        twin = VAE(no_init=True)
        twin.__dict__.update(self.__dict__)
        twin.patcher = self.patcher.clone()
        return twin

    def process_in(self, latent):
        return (latent - self.shift_factor) * self.scaling_factor

    def process_out(self, latent):
        return latent / self.scaling_factor + self.shift_factor

    def decode(self, samples_in):
        memory_management.load_model_gpu(self.patcher)
        model = self.first_stage_model
        pixels = model.decode(samples_in.to(model.dtype)).sample.float()
        return ((pixels + 1.0) / 2.0).clamp(0.0, 1.0).to(self.output_device).movedim(1, -1)

    def encode(self, pixel_samples):
        memory_management.load_model_gpu(self.patcher)
        model = self.first_stage_model
        pixels = pixel_samples.movedim(-1, 1).to(model.dtype) * 2.0 - 1.0
        return model.encode(pixels).latent_dist.mean.float().to(self.output_device)
