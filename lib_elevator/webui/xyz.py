"""VideoElevator axes on the WebUI's X/Y/Z plot (A1111's and Forge's built-in ``scripts/xyz_grid.py``).

The plot script is found as other extensions find it: the loaded module behind the ``scripts_data``
entry whose class comes from ``xyz_grid.py``; axes are appended to its ``axis_options``. Each axis
writes its value into ``p.videoelevator_overrides`` (a copy per cell: the plot shallow-copies ``p``),
which the script reads over the panel's values; each cell is then a video. WebUI modules are
imported inside functions only.
"""
from __future__ import annotations

from ..params import MODES
from .labels import LABELS

XYZ_MODULE_NAMES = ("xyz_grid.py", "xy_grid.py")
AXIS_PREFIX = "[VideoElevator] "
OVERRIDES = "videoelevator_overrides"
GRID_CELL = "videoelevator_grid_cell"


def _motion_models() -> list:
    from ..motion.library import list_motion_models
    from .outputs import motion_folders

    return sorted(list_motion_models(motion_folders()))


# schema (or script) field, value type, dropdown choices; refinement lists are written with "/" in a plot
# (commas separate the plot's values): 26/21/15/9
AXES = (
    ("refine_at", str, None),
    ("d_t", float, None),
    ("t2v_steps", int, None),
    ("t2v_cfg_scale", float, None),
    ("noise_alpha", float, None),
    ("mode", str, lambda: list(MODES)),
    ("motion_model", str, _motion_models),
)


def apply_override(field: str):
    def apply(p, value, values):
        setattr(p, OVERRIDES, {**getattr(p, OVERRIDES, {}), field: value})
        setattr(p, GRID_CELL, True)
    return apply


def find_xyz_grid():
    from modules import scripts

    for data in scripts.scripts_data:
        if data.script_class.__module__ in XYZ_MODULE_NAMES and hasattr(data, "module"):
            return data.module
    return None


def register_axes() -> None:
    """Add the VideoElevator axes to the X/Y/Z plot, once (nothing when the plot script is not loaded)."""
    xyz_grid = find_xyz_grid()
    if xyz_grid is None:
        return
    present = {option.label for option in xyz_grid.axis_options}
    for field, value_type, choices in AXES:
        label = AXIS_PREFIX + LABELS[field]
        if label not in present:
            xyz_grid.axis_options.append(xyz_grid.AxisOption(label, value_type, apply_override(field), choices=choices))
