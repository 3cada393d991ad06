"""The txt2vid tab's host side: script arguments, output picking, refusal messages, and one run
against a fake WebUI that behaves as 1.10 does where it matters (before_process errors swallowed)."""
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lib_elevator.webui import dispatch
from lib_elevator.webui import request as webui
from lib_elevator.webui.txt2vid import (ScriptSlot, assemble_script_args, control_field_names,
                                                 elevator_script_args, generate, info_html, input_names,
                                                 live_script_slots, pick_outputs)
from lib_elevator.params import ElevatorParams

ELEVATOR_ARGS = len(webui.SCRIPT_FIELDS) + len(webui.param_field_names())


def txt2img_slots():
    """A txt2img runner's layout: Sampler, Seed, ControlNet-like, VideoElevator, a selectable script."""
    elevator_defaults = (False,) + (None,) * (ELEVATOR_ARGS - 1)
    return [
        ScriptSlot("sampler", 1, 4, (20, "DPM++ 2M", "Automatic")),
        ScriptSlot("seed", 4, 10, (-1, False, -1, 0.0, 0, 0)),
        ScriptSlot("controlnet", 10, 12, ("unit-0", "unit-1")),
        ScriptSlot("videoelevator", 12, 12 + ELEVATOR_ARGS, elevator_defaults),
        ScriptSlot("x/y/z plot", 12 + ELEVATOR_ARGS, 14 + ELEVATOR_ARGS, ("Seed", "1,2")),
    ]


def tab_controls():
    return {"motion_model": "mm.safetensors", "t2v_lora": "", "solver": "auto", "formats": ["mp4", "gif"],
            "loop": 0, "compare": False, "motion_loras": "", **{name: value for name, value in ElevatorParams(frames=8).to_dict().items()}}


def test_our_slice_is_filled_and_every_other_script_keeps_its_defaults():
    ours = elevator_script_args(tab_controls())
    args = assemble_script_args(txt2img_slots(), {
        "Sampler": [30, "Euler", "Karras"], "Seed": [1234], "VideoElevator": ours})
    assert args[0] == 0  # no selectable script
    assert args[1:4] == [30, "Euler", "Karras"]
    assert args[4:10] == [1234, False, -1, 0.0, 0, 0]  # only the seed itself replaced
    assert args[10:12] == ["unit-0", "unit-1"]
    assert args[12:12 + ELEVATOR_ARGS] == ours
    assert args[12 + ELEVATOR_ARGS:] == ["Seed", "1,2"]


def test_our_slice_is_in_the_script_argument_order_and_parses_as_an_enabled_request():
    ours = elevator_script_args(tab_controls())
    assert len(ours) == ELEVATOR_ARGS and ours[0] is True
    request = webui.ElevatorRequest.from_script_args(ours)
    assert request.enabled and request.motion_model == "mm.safetensors" and request.params.frames == 8
    assert request.formats == ("mp4", "gif")


def test_tab_inputs_are_every_script_argument_but_the_switch():
    assert "enabled" not in control_field_names()
    assert set(control_field_names()) | {"enabled"} == set(webui.SCRIPT_FIELDS + webui.param_field_names())
    assert input_names()[:9] == ("prompt", "negative_prompt", "width", "height", "steps", "scheduler",
                                 "cfg_scale", "seed", "n_iter")


def test_refuses_when_our_script_is_not_loaded():
    slots = [slot for slot in txt2img_slots() if slot.title != "videoelevator"]
    with pytest.raises(webui.RequestError, match="'VideoElevator', which is not loaded"):
        assemble_script_args(slots, {"VideoElevator": elevator_script_args(tab_controls())})


def test_too_many_values_for_a_script_never_spill_into_the_next_one():
    with pytest.raises(ValueError, match="4 arguments for 'Sampler', which takes 3"):
        assemble_script_args(txt2img_slots(), {"Sampler": [30, "Euler", "Karras", "extra"]})


def test_no_scripts_still_gives_the_script_dropdown_slot():
    assert assemble_script_args([], {}) == [0]


def test_live_slots_read_the_built_controls_and_skip_scripts_without_a_ui():
    control = SimpleNamespace
    runner = SimpleNamespace(scripts=[
        SimpleNamespace(name="sampler", args_from=1, args_to=3, controls=[control(value=20), control(value="Euler")]),
        SimpleNamespace(name=None, args_from=3, args_to=3, controls=None),
        SimpleNamespace(name=None, args_from=None, args_to=None, controls=None),
    ])
    assert live_script_slots(runner) == [ScriptSlot("sampler", 1, 3, (20, "Euler")), ScriptSlot("", 3, 3, ())]


def test_picks_the_newest_playable_video_and_one_preview_per_video():
    saved = [Path("out/00001-1.mp4"), Path("out/00001-1.gif"), Path("out/00001-1-frames"),
             Path("out/00002-2.webm"), Path("out/00002-2.webp"), Path("out/00002-2.gif"), Path("out/00003-3.png")]
    player, previews = pick_outputs(saved)
    assert player == str(Path("out/00002-2.webm"))
    assert previews == [str(Path("out/00001-1.gif")), str(Path("out/00002-2.gif"))]
    assert pick_outputs(["a.webm", "a.mp4"])[0] == "a.mp4"
    assert pick_outputs([]) == (None, [])


def test_info_html_escapes_and_lists_the_saved_files():
    text = info_html("a <cat>\nSteps: 30", "", [Path("out/1.mp4")])
    assert text == f"<p>a &lt;cat&gt;<br>Steps: 30</p><p>{Path('out/1.mp4')}</p>"  # no paragraph for no comments


class FakeTxt2Img:
    """Stands in for StableDiffusionProcessingTxt2Img: keeps what it is given."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def sample(self, *args):
        return "latents"

    def close(self):
        self.closed = True


def fake_webui(monkeypatch, refusal=None):
    """Just enough of modules.* for run_txt2vid: process_images runs our script's before_process
    (which refuses by making ``p.sample`` raise, see ``dispatch.refuse``), then samples."""
    control = SimpleNamespace
    runs = []
    runner = SimpleNamespace(scripts=[
        SimpleNamespace(name="sampler", args_from=1, args_to=4, controls=[control(value=v) for v in (20, "DPM++ 2M", "Automatic")]),
        SimpleNamespace(name="seed", args_from=4, args_to=6, controls=[control(value=-1), control(value=False)]),
        SimpleNamespace(name="videoelevator", args_from=6, args_to=6 + ELEVATOR_ARGS, controls=[control(value=None)] * ELEVATOR_ARGS),
    ])

    def process_images(p):
        runs.append(p)
        if refusal:
            dispatch.refuse(p, webui.RequestError(refusal))
        else:
            p.videoelevator = {"videos": [str(Path("out/00001-7.mp4")), str(Path("out/00001-7.gif"))]}
        p.sample("cond", "uncond", [7], [0], 0.0, ["a cat"])
        return SimpleNamespace(info="a cat\nSteps: 30", comments="")

    opts = SimpleNamespace(outdir_samples="", outdir_txt2img_samples="out/txt2img", outdir_grids="",
                           outdir_txt2img_grids="out/grids")
    fake_modules = {
        "modules": SimpleNamespace(),
        "modules.processing": SimpleNamespace(StableDiffusionProcessingTxt2Img=FakeTxt2Img, process_images=process_images),
        "modules.scripts": SimpleNamespace(scripts_txt2img=runner),
        "modules.shared": SimpleNamespace(opts=opts, total_tqdm=SimpleNamespace(clear=lambda: None)),
    }
    for name, fake in fake_modules.items():
        monkeypatch.setitem(sys.modules, name, fake)
        if "." in name:
            setattr(fake_modules["modules"], name.split(".")[1], fake)
    return runs


def tab_values(**changes):
    values = {"prompt": "a cat <lora:x:1>", "negative_prompt": "blurry", "width": 512, "height": 384, "steps": 30,
              "scheduler": "Karras", "cfg_scale": 7.5, "seed": 7, "n_iter": 2, **tab_controls(), **changes}
    return [values[name] for name in input_names()]


def test_generate_runs_the_webui_txt2img_with_our_script_on(monkeypatch):
    runs = fake_webui(monkeypatch)
    player, previews, info = generate("task(abc)", *tab_values())
    assert (player, previews) == (str(Path("out/00001-7.mp4")), [str(Path("out/00001-7.gif"))])
    assert info.startswith("<p>a cat<br>Steps: 30</p>")
    p, = runs
    assert p.kwargs["prompt"] == "a cat <lora:x:1>" and p.kwargs["n_iter"] == 2 and p.kwargs["batch_size"] == 1
    assert p.kwargs["outpath_samples"] == "out/txt2img" and p.closed
    assert p.scripts is sys.modules["modules.scripts"].scripts_txt2img
    assert p.script_args[:6] == [0, 30, "Euler", "Karras", 7, False]
    assert p.script_args[6:] == elevator_script_args(tab_controls())


def test_a_refusal_stops_sampling_and_shows_its_reason(monkeypatch):
    fake_webui(monkeypatch, refusal="VideoElevator: SD1.x checkpoints only")
    player, previews, info = generate("task(abc)", *tab_values())
    assert (player, previews) == (None, [])
    assert info == "<div class='error'>VideoElevator: SD1.x checkpoints only</div>"
