"""What the WebUI shows for each VideoElevator setting: words a user understands, in the WebUI's
style. The schema names (API, infotext, CLI) stay as they are; these are for the panel and the
X/Y/Z plot axes only."""
from __future__ import annotations

LABELS = {
    "mode": "Mode",
    "motion_model": "Motion model",
    "frames": "Frames",
    "fps": "Frames per second",
    "refine_at": "Refine motion at",
    "t2v_steps": "Motion model steps per refinement",
    "t2v_cfg_scale": "Motion model CFG",
    "filter": "Low-pass filter",
    "d_s": "Spatial cut-off (d_s)",
    "d_t": "Motion smoothing (temporal cut-off d_t)",
    "butterworth_order": "Butterworth order",
    "noise_alpha": "Shared noise (α)",
    "correction": "Inversion correction",
    "t2v_lora_scale": "T2V-only LoRA strength",
    "motion_norm": "Motion module normalisation",
    "solver": "Motion model solver",
    "t2v_lora": "T2V-only LoRA",
    "formats": "Save as",
    "loop": "Loop count (0 = forever)",
    "compare": "Compare with T2V-only and T2I-only",
    "motion_loras": "Motion LoRAs",
    "context": "Context windows",
    "context_length": "Context length (frames per window)",
    "context_overlap": "Context overlap (frames)",
    "context_stride": "Context stride",
    "context_fuse": "Window blending",
    "closed_loop": "Closed loop",
    "prompt_interpolation": "Prompt travel interpolation",
    "frames_per_batch": "Frames per UNet batch",
}
