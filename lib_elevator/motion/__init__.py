"""Motion-model loading: weight files read safely, identified, and turned into diffusers ``MotionAdapter``s.

``load_motion_adapter(path)`` is the entry point; ``check_fits_unet`` refuses a motion model made
for another base model than the loaded checkpoint. Every failure is a ``MotionModelError`` whose
message can be shown to the user as is.
"""
from .convert import load_motion_adapter, motion_adapter_config
from .detect import (
    MotionKind,
    MotionLoraInfo,
    MotionModuleInfo,
    check_fits_unet,
    describe_motion_lora,
    describe_motion_module,
)
from .errors import MotionModelError
from .safe_load import load_weights_file

__all__ = [
    "MotionKind",
    "MotionLoraInfo",
    "MotionModelError",
    "MotionModuleInfo",
    "check_fits_unet",
    "describe_motion_lora",
    "describe_motion_module",
    "load_motion_adapter",
    "load_weights_file",
    "motion_adapter_config",
]
