"""A stand-in for the AUTOMATIC1111 WebUI 1.10.1 ``modules`` package, for testing extensions without the WebUI.

Put ``tests/webui_stub`` on ``sys.path`` (the ``webui`` fixture in ``tests/webui_stub_fixture.py`` does,
and removes every ``modules*``/``k_diffusion*``/``gradio*`` entry from ``sys.modules`` afterwards). Each module
below carries the same names, signatures and — where an extension can observe it — the same
behaviour as the A1111 file it mirrors (A1111 v1.10.1, commit 82a973c0). The code is our own small
re-implementation, written from the WebUI's observable behaviour, not a copy (the WebUI is AGPL): keep it
that way, and check new code with ``duplicates`` against a WebUI checkout. Every module's docstring says
what is faithful and what is simplified.

Module → A1111 file it mirrors
- ``paths``                      modules/paths.py, paths_internal.py (rooted at ``$WEBUI_STUB_DATA_DIR``)
- ``errors``                     modules/errors.py (+ ``errors.reported``: every reported exception)
- ``safe``                       modules/safe.py (replaces ``torch.load`` with a checking wrapper; A1111 host only)
- ``devices``                    modules/devices.py (CPU, float32, no autocast; or the fake GPU of
                                 ``tests/fake_gpu.py`` with ``$WEBUI_STUB_DEVICE=fake_gpu``)
- ``lowvram``                    modules/lowvram.py (``--medvram``/``--lowvram`` forward pre-hooks)
- ``options``, ``shared_options`` modules/options.py, shared_options.py (subset of settings, 1.10.1 defaults)
- ``shared_cmd_options``,
  ``script_loading``             modules/shared_cmd_options.py, cmd_args.py (few flags; preload.py runs),
                                 script_loading.py
- ``shared_state``,
  ``shared_total_tqdm``, ``shared`` modules/shared_state.py, shared_total_tqdm.py (counts, no bar), shared.py
- ``script_callbacks``           modules/script_callbacks.py
- ``scripts``                    modules/scripts.py (Script, AlwaysVisible, ScriptRunner, load_scripts)
- ``prompt_parser``              modules/prompt_parser.py (regex instead of lark: non-nested editing only)
- ``extra_networks``             modules/extra_networks.py
- ``stub_lora``                  extensions-builtin/Lora (networks.py, lora_patches.py,
                                 extra_networks_lora.py) — weight-patch mode, Linear/Conv2d only
- ``rng``                        modules/rng.py (CPU generators)
- ``sd_schedulers``              modules/sd_schedulers.py (every 1.10.1 schedule; Forge's four more on that host)
- ``sd_samplers_common``         modules/sd_samplers_common.py
- ``sd_samplers_cfg_denoiser``   modules/sd_samplers_cfg_denoiser.py (no edit models / masks / refiner)
- ``sd_samplers_kdiffusion``     modules/sd_samplers_kdiffusion.py (every sampler listed; Euler, Euler a, DPM++ 2M run)
- ``sd_samplers_timesteps``,
  ``sd_samplers_lcm``,
  ``sd_samplers_extra``          the DDIM/PLMS/UniPC, LCM and Restart samplers (listed, not runnable)
- ``sd_samplers``                modules/sd_samplers.py
- ``sd_models``, ``sd_vae``,
  ``sd_unet``                    modules/sd_models.py (token merging recorded, not applied), sd_vae.py, sd_unet.py
- ``sd_hijack``,
  ``sd_hijack_optimizations``    modules/sd_hijack.py, sd_hijack_optimizations.py ("sdp" replaces
                                 ``ldm.modules.attention.CrossAttention.forward`` at class level)
- ``images``                     modules/images.py (grid, numbering, PNG infotext; no filename patterns)
- ``infotext_utils``             modules/infotext_utils.py (quote, parse_generation_parameters, paste)
- ``processing``                 modules/processing.py (txt2img only; no hires fix, img2img, refiner, styles;
                                 the Img2Img class exists for isinstance checks)
- ``ui_components``              modules/ui_components.py (InputAccordion etc. without Gradio)
- ``api.api``                    modules/api/api.py (the txt2img endpoint and the error middleware, no HTTP)
- ``call_queue``                 modules/call_queue.py (wrap_gradio_gpu_call: state.begin/end, errors → HTML)
- ``api.api``                    modules/api/api.py: only how an exception in an API route is answered and logged
                                 (``../fastapi``: FastAPI's ``HTTPException``)
- ``progress``                   modules/progress.py: what the progress API computes (progress, ETA, live preview)
- ``stub_model``                 the loaded checkpoint (ldm LatentDiffusion shape, tiny real ldm UNetModel; or SDXL:
                                 sgm DiffusionEngine shape around an sgm-shaped ldm UNetModel, dict conditioning)
- ``../k_diffusion``             crowsonkb/k-diffusion ``external.CompVisDenoiser``/``CompVisVDenoiser`` and three samplers

Faithful where extensions depend on it: hook and callback order and arguments (script arg slices),
reported-not-raised exceptions in hooks and callbacks, CFGDenoiser batching ([cond rows; uncond rows],
one UNet call with ``batch_cond_uncond``), ``denoiser.step`` counting and prompt editing, interrupt/skip
via ``InterruptedException`` and ``launch_sampling`` returning ``last_latent``, ``p.sample`` looked up on
the instance (wrappable), per-seed noise, k-diffusion σ-space sampling with ``CompVisDenoiser`` built
from ``sd_model.alphas_cumprod`` when the sampler is created, ``alphas_cumprod`` reset from
``alphas_cumprod_original`` every batch, in-place LoRA weight patching that stays merged after the job,
class-level attention-forward replacement, infotext format and quoting.
Not provided: Gradio/UI, HTTP (the API is called in-process), img2img/inpainting, hires fix, refiner, SDXL/SD2/v-prediction,
timestep samplers (DDIM/PLMS/UniPC/LCM), styles, embeddings, hypernetworks, face restoration.

Forge 2 host. ``webui_stub(..., host="forge")`` sets ``$WEBUI_STUB_HOST=forge`` (``stub_host``) and the same
package then behaves like stable-diffusion-webui-forge 2.x (main, 2.0.1v1.10.1) where Forge differs:
``shared.sd_model`` is a ``backend.diffusion_engine.sd15.StableDiffusion`` (``stub_model.build_tiny_forge_model``:
same tiny weights), the ``../backend`` stand-in is importable, and ``processing`` (forge_objects resets,
``process_before_every_sampling`` after the reset, inference mode, Forge's version in the infotext),
``sd_samplers_kdiffusion`` (``ForgeScheduleLinker``, ``sampling_prepare``/``sampling_cleanup``),
``sd_samplers_cfg_denoiser`` (unbatched ``on_cfg_denoiser``, ``sampling_function``, no ``on_cfg_denoised``)
and ``stub_lora`` (patches on cloned patchers, merged when loaded) switch on ``stub_host.is_forge()``.
Each of those modules' docstrings says what its Forge branch does.
"""
