"""VideoElevator axes on the X/Y/Z plot (stand-in of the WebUI's scripts/xyz_grid.py, on A1111 and Forge): the
axes are registered as AxisOptions, and a 2×1 sweep makes two videos, each with its cell's value."""
from pathlib import Path

import pytest

from test_a1111 import MOTION, REPO, SHORT, motion_file  # noqa: F401
from webui_stub_fixture import webui_stub

import motion_files

EXPECTED_AXES = ["[VideoElevator] Refine motion at", "[VideoElevator] Motion smoothing (temporal cut-off d_t)",
                 "[VideoElevator] Motion model steps per refinement", "[VideoElevator] Motion model CFG",
                 "[VideoElevator] Shared noise (α)", "[VideoElevator] Mode", "[VideoElevator] Motion model"]


@pytest.fixture(params=["a1111", "forge"])
def webui(request, tmp_path, motion_file):
    with webui_stub(tmp_path, unet_config="sd15_shaped", host=request.param) as session:
        folder = Path(session.paths.models_path) / "VideoElevator"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MOTION).write_bytes(motion_file.read_bytes())
        motion_files.write_kind("animatediff_v3", folder / "v3_tiny.ckpt")
        session.extension = session.load_extension(REPO, webui_scripts=True)
        yield session


def xyz_module():
    from modules import scripts

    return next(data.module for data in scripts.scripts_data if data.script_class.__module__ == "xyz_grid.py")


def test_axes_are_registered_once_on_the_plot_script(webui):
    from lib_elevator.webui import xyz

    xyz.register_axes()  # a second registration (a UI reload) adds nothing
    module = xyz_module()
    ours = [option for option in module.axis_options if option.label.startswith("[VideoElevator]")]
    assert [option.label for option in ours] == EXPECTED_AXES
    assert all(isinstance(option, module.AxisOption) for option in ours)
    by_label = {option.label: option for option in ours}
    assert by_label["[VideoElevator] Mode"].choices() == ["elevate", "t2v", "t2i"]
    assert by_label["[VideoElevator] Motion model"].choices() == sorted([MOTION, "v3_tiny.ckpt"])


@pytest.mark.parametrize("axis, values, field, expected", [
    ("[VideoElevator] Motion smoothing (temporal cut-off d_t)", "0.3, 0.9", "d_t", [0.3, 0.9]),
    ("[VideoElevator] Refine motion at", "4/2, 3", "refine_at", [(4, 2), (3,)]),
])
def test_a_two_by_one_sweep_makes_two_videos(webui, axis, values, field, expected):
    runner = webui.extension
    plot = next(script for script in runner.selectable_scripts if script.title() == "X/Y/Z plot")
    elevator = next(script for script in runner.alwayson_scripts if script.title() == "VideoElevator")
    from lib_elevator.webui import request as webui_request

    args = list(runner.default_script_args())
    names = webui_request.SCRIPT_FIELDS + webui_request.param_field_names()
    values_by_name = dict(zip(names, args[elevator.args_from:elevator.args_to]))
    values_by_name.update(enabled=True, motion_model=MOTION, formats=["mp4", "gif"], **SHORT)
    args[elevator.args_from:elevator.args_to] = [values_by_name[name] for name in names]
    args[0] = runner.selectable_scripts.index(plot) + 1
    x_type = plot.current_axis_options.index(next(o for o in plot.current_axis_options if o.label == axis))
    plot_args = list(args[plot.args_from:plot.args_to])
    plot_args[0:2] = [x_type, values]
    args[plot.args_from:plot.args_to] = plot_args
    p = webui.txt2img("a boat on a lake", steps=6, scripts=runner, script_args=args)
    processed = webui.run(p)
    assert webui.errors == []
    videos = sorted((Path(webui.data_dir) / "outputs" / "txt2vid-videos").rglob("*.mp4"))
    assert len(videos) == 2
    from lib_elevator.video import read_parameters

    written = [read_parameters(video) for video in videos]
    for text, value in zip(written, expected):
        shown = "/".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"
        assert f"{field}={shown}" in text
    grid = processed.images[0]
    assert grid.size == (2 * 64, 64)  # the two cells' GIF previews, side by side
