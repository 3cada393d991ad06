"""Stand-in for the WebUI's own ``scripts/xyz_grid.py`` (A1111 1.10 and Forge 2 have the same interface),
written for these tests from reading it, not copied.

Kept because extensions register axes on it: the module is found through ``scripts.scripts_data`` (its
``script_class.__module__`` is ``"xyz_grid.py"``, the file name the WebUI loads it under) and extended by
appending to the module-level ``axis_options`` list; ``AxisOption(label, type, apply, format_value=…,
confirm=None, cost=0.0, choices=None, prepare=None)`` and its ``AxisOptionTxt2Img``/``AxisOptionImg2Img``
subclasses; ``apply_field``; the script's ``run(p, x_type, x_values, x_values_dropdown, y_type, …,
csv_mode)`` with axis types as indices into the axis options of its tab; values from the text box split
at commas and converted with ``opt.type`` (or the dropdown's list when the axis has ``choices``); per cell
``pc = copy(p)``, ``x_opt.apply(pc, x, xs)`` … then ``process_images(pc)``, whose first image is the cell.
Left out: ranges (``1-5``), the Z axis, seeds varying per axis, legends, sub-grids, saving the grid.
"""
from copy import copy

import modules.scripts as scripts
from modules import images
from modules.processing import Processed, fix_seed, process_images


def apply_field(field):
    def apply(p, x, xs):
        setattr(p, field, x)
    return apply


def do_nothing(p, x, xs):
    pass


def format_value_add_label(p, opt, x):
    return f"{opt.label}: {x}"


class AxisOption:
    def __init__(self, label, type, apply, format_value=format_value_add_label, confirm=None, cost=0.0, choices=None,
                 prepare=None):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


axis_options = [
    AxisOption("Nothing", str, do_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOptionTxt2Img("Sampler", str, apply_field("sampler_name")),
]


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.current_axis_options = [x for x in axis_options if type(x) is AxisOption or x.is_img2img == is_img2img]
        return [0, "", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0, False]

    def run(self, p, x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
            z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x,
            vary_seeds_y, vary_seeds_z, margin_size, csv_mode):
        if not no_fixed_seeds:
            fix_seed(p)
        p.batch_size = 1

        def process_axis(opt, vals, vals_dropdown):
            if opt.label == "Nothing":
                return [0]
            if opt.choices is not None and not csv_mode:
                values = list(vals_dropdown)
            elif opt.prepare is not None:
                values = opt.prepare(vals)
            else:
                values = [v.strip() for v in vals.split(",") if v.strip()]
            values = [opt.type(v) for v in values]
            if opt.confirm:
                opt.confirm(p, values)
            return values

        x_opt = self.current_axis_options[x_type]
        y_opt = self.current_axis_options[y_type]
        xs = process_axis(x_opt, x_values, x_values_dropdown)
        ys = process_axis(y_opt, y_values, y_values_dropdown)
        cells = []
        for y in ys:
            for x in xs:
                pc = copy(p)
                x_opt.apply(pc, x, xs)
                y_opt.apply(pc, y, ys)
                cells.append(process_images(pc))
        grid = images.image_grid([cell.images[0] for cell in cells], rows=len(ys))
        return Processed(p, [grid] + [cell.images[0] for cell in cells], p.seed, "")
