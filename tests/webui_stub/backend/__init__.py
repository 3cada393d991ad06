"""Stand-in for Forge 2's ``backend`` package (the model runtime that replaces ldm/sgm), written for the tests.

Importable only in a ``host="forge"`` session: under the A1111 host ``import backend`` fails the way it does
in a real AUTOMATIC1111, so an extension's Forge detection sees the right answer.

Modules (same import paths as Forge 2):
- ``attention``                  ``attention_function(q, k, v, heads, mask=None)`` (torch SDPA)
- ``memory_management``          CPU only; ``load_models_gpu`` moves, patches and remembers patchers
- ``patcher.base``               ``ModelPatcher`` (model_options, patch setters, clone, object patches, LoRA patches)
- ``patcher.unet``               ``UnetPatcher`` (extra modules during sampling, transformer options, modifiers)
- ``patcher.clip``, ``patcher.vae``, ``patcher.lora`` the text encoder / VAE holders, the in-place LoRA merger
- ``modules.k_prediction``       ``Prediction`` (σ table, σ↔t, input/output scaling, noise scaling)
- ``modules.k_model``            ``KModel`` (``apply_model`` takes σ as ``t``)
- ``nn.unet``                    ``unet_forward``: Forge's UNet traversal with ``transformer_options`` over an ldm UNet
- ``sampling.condition``         ``compile_conditions`` / ``compile_weighted_conditions`` and the condition objects
- ``sampling.sampling_function`` cond/uncond batching (``BATCHING`` knob), CFG, ``sampling_prepare`` (``LOADED``)
- ``diffusion_engine``           ``ForgeObjects``, ``ForgeDiffusionEngine``, ``StableDiffusion`` (SD1),
                                 ``StableDiffusionXL`` (SDXL, on the sgm-shaped UNet)

The UNet itself is the same tiny ldm ``UNetModel`` the A1111 host runs (Forge's own
``IntegratedUNet2DConditionModel`` has the same module tree and names), so both hosts compute the same thing.
"""
import os

if os.environ.get("WEBUI_STUB_HOST") != "forge":
    raise ModuleNotFoundError("No module named 'backend' (the WebUI stand-in is running as AUTOMATIC1111)",
                              name="backend")
