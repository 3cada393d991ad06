"""Refusals every WebUI host shares: the request's own conflicts and whether the motion model
fits the loaded UNet. Each host adds what only it can check (``hosts.*.refusal_reasons``).
"""
from __future__ import annotations

import re

from ..lora import lora_fit_problem
from ..motion import check_fits_unet
from ..context import resolve_context
from ..motion.motion_lora import fit_problem
from ..params import ElevatorParams, ParamError
from .request import MotionModel
from .travel import travel_reasons

AND_PROMPT = re.compile(r"\bAND\b")


def _unet_shape(unet) -> tuple:
    """(block channels, text width, layers per block) of an ldm-layout UNet (A1111's and Forge's
    have the same tree), for the motion-module fit check."""
    channels = tuple(unet.model_channels * mult for mult in unet.channel_mult)
    text_width = next(m.attn2.to_k.in_features for m in unet.modules() if hasattr(m, "attn2"))
    return channels, text_width, unet.num_res_blocks[0]


def motion_fit_reasons(motion: MotionModel | None, unet) -> list[str]:
    """Why the motion model or its T2V LoRA cannot run in this ldm-layout UNet (none when they fit
    or none is chosen)."""
    if motion is None:
        return []
    reasons = []
    try:
        check_fits_unet(motion.info, *_unet_shape(unet))
    except ValueError as error:
        reasons.append(str(error))
    lora_problem = lora_fit_problem(unet, motion.lora) if motion.lora is not None else None
    if lora_problem:
        reasons.append(f"T2V LoRA {motion.lora_name!r} does not fit this checkpoint's UNet: {lora_problem}")
    return reasons


def sdxl_checkpoint_reasons(motion: MotionModel | None, unet, inpainting: bool) -> list[str]:
    """An SDXL checkpoint (ε- or v-prediction: the host's denoiser gives x̂0 either way, all the elevator needs)
    runs with an SDXL motion model (AnimateDiff-SDXL, Hotshot-XL); a motion model made for another base model is
    refused naming both sides, as are SDXL inpainting checkpoints."""
    return (["SDXL inpainting checkpoints are not supported"] if inpainting else []) + motion_fit_reasons(motion, unet)


def request_refusal_reasons(p, params: ElevatorParams, motion: MotionModel | None) -> list[str]:
    """What no host can honour, whatever the checkpoint: the request's own conflicts."""
    reasons = []
    if motion is None:
        reasons.append("no motion model selected")
    prompts = [p.prompt] if isinstance(p.prompt, str) else list(p.prompt)
    if any(AND_PROMPT.search(prompt) for prompt in prompts):
        reasons.append("composable 'AND' prompts are not supported (the frames must stay whole groups)")
    if getattr(p, "enable_hr", False):
        reasons.append("hires fix is not supported with VideoElevator; upscale the video afterwards")
    if getattr(p, "refiner_checkpoint", None) not in (None, "", "None", "none"):
        reasons.append("the refiner is not supported with VideoElevator (it swaps the checkpoint part-way through "
                       "the frames' sampling); switch the refiner off")
    if _restores_faces(p):
        reasons.append("'Restore faces' is not supported with VideoElevator (it repairs every frame on its own, so "
                       "faces flicker); switch it off")
    if _animatediff_enabled(p):
        reasons.append("AnimateDiff is enabled in the same request; both change the UNet and its schedule, "
                       "so switch one of them off")
    if motion is not None:
        try:
            resolve_context(params, motion.info.positional_encoding_length)
        except ParamError as error:
            reasons.append(f"{motion.info.kind.label} handles at most {motion.info.positional_encoding_length} frames "
                           f"and context windows are off; {params.frames} were asked for (turn context windows on "
                           f"for longer clips)")
    reasons += travel_reasons(prompts, params.frames)
    for lora, _ in motion.motion_loras if motion is not None else ():
        problem = fit_problem(lora, motion.info, motion.name, motion.adapter)
        if problem:
            reasons.append(problem)
    return reasons


def _restores_faces(p) -> bool:
    """``p.restore_faces``, where ``None`` means the "Restore faces" setting (the WebUI resolves it later)."""
    if p.restore_faces is not None:
        return bool(p.restore_faces)
    from modules import shared

    return bool(getattr(shared.opts, "face_restoration", False))


def _animatediff_enabled(p) -> bool:
    """sd-webui-animatediff's switch: its first argument is an object (UI) or a dict (API) with ``enable``."""
    runner = getattr(p, "scripts", None)
    for script in getattr(runner, "alwayson_scripts", ()):
        if script.title().lower() != "animatediff" or script.args_from is None:
            continue
        first = (p.script_args or [None] * (script.args_from + 1))[script.args_from]
        if first.get("enable", False) if isinstance(first, dict) else getattr(first, "enable", False):
            return True
    return False
