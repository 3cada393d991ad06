"""Stand-in for Forge 2 ``backend/modules/k_model.py``: ``KModel``, the UNet in σ-space
(``forge_objects.unet.model``).

``diffusion_model`` is the stand-in's ldm ``UNetModel`` (run by ``backend.nn.unet.unet_forward``, called
as ``diffusion_model(...)`` as in Forge; see there), ``predictor`` a ``backend.modules.k_prediction.Prediction``, ``storage_dtype`` /
``computation_dtype`` the UNet's dtype (float32 here). ``apply_model(x, t, c_concat=None,
c_crossattn=None, control=None, transformer_options={}, **kwargs)`` takes σ as ``t``: the input is
scaled by ``predictor.calculate_input`` (1/√(σ²+1)), ``c_concat`` appended on the channels, σ turned into
a timestep with ``predictor.timestep`` (nearest entry of the *current* σ table), the UNet run with
``transformer_options``, and the ε it returns turned into x0 = x − σ·ε. ``memory_required`` is a rough
figure (nothing depends on it here).
"""
from functools import partial

import torch

from backend import memory_management
from backend.modules.k_prediction import Prediction, k_prediction_from_diffusers_scheduler
from backend.nn import unet as forge_unet


class KModel(torch.nn.Module):
    def __init__(self, model, diffusers_scheduler=None, k_predictor=None, config=None):
        super().__init__()
        self.config = config
        self.storage_dtype = self.computation_dtype = model.dtype
        self.diffusion_model = model
        if k_predictor is not None:
            self.predictor = k_predictor
        elif diffusers_scheduler is not None:
            self.predictor = k_prediction_from_diffusers_scheduler(diffusers_scheduler)
        else:
            self.predictor = Prediction()

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs):
        sigma = t
        transformer_options = {} if transformer_options is None else transformer_options
        unet_input = self.predictor.calculate_input(sigma, x)
        if c_concat is not None:
            unet_input = torch.cat([unet_input, c_concat], dim=1)
        dtype = self.computation_dtype
        extra = {name: value.to(dtype) if torch.is_tensor(value) and value.is_floating_point() else value
                 for name, value in kwargs.items()}
        # called as a module (hooks fire) once the fixture has installed Forge's forward on ldm's UNet class
        run = self.diffusion_model if forge_unet.installed() else partial(forge_unet.unet_forward, self.diffusion_model)
        eps = run(unet_input.to(dtype), self.predictor.timestep(sigma).float(), context=c_crossattn.to(dtype),
                  control=control, transformer_options=transformer_options, **extra)
        return self.predictor.calculate_denoised(sigma, eps.float(), x)

    def memory_required(self, input_shape):
        pixels = input_shape[0] * input_shape[2] * input_shape[3]
        return 1.28 * pixels * memory_management.dtype_size(self.computation_dtype) * 16384

    def get_dtype(self):
        return self.storage_dtype
