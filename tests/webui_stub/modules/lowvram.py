"""Mirrors A1111 ``modules/lowvram.py`` (``--medvram`` / ``--lowvram``), written for this project from
reading it, not copied.

Behaviour reproduced, as an extension can observe it:
- ``apply(sd_model)``: ``is_needed`` (``--lowvram`` or ``--medvram``; ``--medvram-sdxl`` for SDXL only)
  decides; when needed it disables parallel processing and calls ``setup_for_low_vram(sd_model,
  use_medvram=not --lowvram)``, else sets ``sd_model.lowvram = False``. ``is_enabled(sd_model)`` reads it.
- ``setup_for_low_vram``: the model's small parts go to ``devices.device`` while the big ones (VAE,
  text encoder, UNet wrapper) stay on the CPU; each big one gets a forward pre-hook that moves it to the
  GPU and first moves whichever hooked module was there before (``module_in_gpu``) back to the CPU, so
  one of them is on the GPU at a time. The VAE's ``encode``/``decode`` are wrapped to do the same (they
  are not ``forward``). With ``--lowvram`` the UNet is split further: its ``time_embed``, every input
  block, the middle block and every output block are hooked on their own, the rest of the UNet lives on
  the GPU. A hooked part stays on the GPU after its call until another hooked part runs.
- ``send_everything_to_cpu()``: the hooked module on the GPU goes back to the CPU.
The stand-in's text encoder is the already-wrapped ``FrozenCLIPEmbedderWithCustomWords`` (A1111 sets low
VRAM up before the hijack wraps it), so the hook sits on ``cond_stage_model.wrapped.transformer`` with
the wrapper as the module moved. Not reproduced: SD2/SDXL/depth/embedder fields, the streamlined
(CUDA-stream) variant.
"""
import torch

from modules import devices, shared

module_in_gpu = None
cpu = torch.device("cpu")


def send_everything_to_cpu():
    global module_in_gpu
    if module_in_gpu is not None:
        module_in_gpu.to(cpu)
    module_in_gpu = None


def is_needed(sd_model):
    options = shared.cmd_opts
    return options.lowvram or options.medvram or (options.medvram_sdxl and hasattr(sd_model, "conditioner"))


def apply(sd_model):
    needed = is_needed(sd_model)
    shared.parallel_processing_allowed = not needed
    if needed:
        setup_for_low_vram(sd_model, not shared.cmd_opts.lowvram)
    else:
        sd_model.lowvram = False


def _one_on_gpu(parents):
    """The forward pre-hook: ``module`` (or the part it belongs to) becomes the one hooked module on the GPU."""

    def move_in(module, _args):
        global module_in_gpu
        module = parents.get(module, module)
        if module_in_gpu is module:
            return
        if module_in_gpu is not None:
            module_in_gpu.to(cpu)
        module.to(devices.device)
        module_in_gpu = module

    return move_in


def _to_device_without(owner, parts):
    """Move ``owner`` to the GPU with the attributes named in ``parts`` detached (they stay where they are)."""
    held = {name: getattr(owner, name) for name in parts}
    for name in parts:
        setattr(owner, name, None)
    try:
        owner.to(devices.device)
    finally:
        for name, module in held.items():
            setattr(owner, name, module)


def setup_for_low_vram(sd_model, use_medvram):
    if getattr(sd_model, "lowvram", False):
        return
    sd_model.lowvram = True
    parents = {}
    move_in = _one_on_gpu(parents)

    vae = sd_model.first_stage_model
    encode, decode = vae.encode, vae.decode

    def encode_on_gpu(x, *args, **kwargs):
        move_in(vae, None)
        return encode(x, *args, **kwargs)

    def decode_on_gpu(z, *args, **kwargs):
        move_in(vae, None)
        return decode(z, *args, **kwargs)

    clip = sd_model.cond_stage_model
    _to_device_without(sd_model, ("first_stage_model", "model", "cond_stage_model"))

    clip.wrapped.transformer.register_forward_pre_hook(move_in)
    parents[clip.wrapped.transformer] = clip
    vae.register_forward_pre_hook(move_in)
    vae.encode, vae.decode = encode_on_gpu, decode_on_gpu

    if use_medvram:
        sd_model.model.register_forward_pre_hook(move_in)
        return
    unet = sd_model.model.diffusion_model
    _to_device_without(unet, ("input_blocks", "middle_block", "output_blocks", "time_embed"))
    unet.time_embed.register_forward_pre_hook(move_in)
    for block in unet.input_blocks:
        block.register_forward_pre_hook(move_in)
    unet.middle_block.register_forward_pre_hook(move_in)
    for block in unet.output_blocks:
        block.register_forward_pre_hook(move_in)


def is_enabled(sd_model):
    return sd_model.lowvram
