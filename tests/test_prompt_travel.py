"""Prompt travel: the syntax, the per-frame conditioning, and the standalone run and CLI."""
import subprocess
import sys

import av
import pytest
import torch

from lib_elevator.params import ElevatorParams, ParamError
from lib_elevator.prompt_travel import interpolate_conditioning, parse_prompt_travel, slerp
from lib_elevator.standalone.pipeline import EpsDenoiser, TextEncoder, encode_prompt, unet2d_eps
from lib_elevator.attention import inflated
from lib_elevator.schedules import SD_SCHEDULE

TRAVEL = "masterpiece, best quality,\n\n0: a boat at dawn\n 5 : a boat at night\n\nfilm grain"


def test_head_keys_and_tail_make_each_keyed_prompt():
    keys = parse_prompt_travel(TRAVEL, 8)
    assert [(key.frame, key.prompt) for key in keys] == [
        (0, "masterpiece, best quality, a boat at dawn, film grain"),
        (5, "masterpiece, best quality, a boat at night, film grain"),
    ]
    assert parse_prompt_travel("a boat\non a lake", 8) is None  # no keys: not travel


@pytest.mark.parametrize("text,line,fragment", [
    ("head\n0: a\n4: b\n2: c", 4, "must increase; frame 2 does not come after 4"),
    ("0: a\n3: a", 2, "below the clip's 3 frames"),
    ("0: a\n2:   \n", 2, "frame 2 needs a prompt"),
    ("0: a\nplain\n2: b", 2, "between frame keys"),
])
def test_bad_syntax_is_one_error_naming_the_line(text, line, fragment):
    with pytest.raises(ParamError) as error:
        parse_prompt_travel(text, 3 if "3: a" in text else 8)
    assert error.value.name == f"prompt line {line}" and fragment in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_conditioning_follows_the_interpolation_formula():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 4, generator=generator)
    conds = interpolate_conditioning(torch.stack([a, b]), [2, 6], 9)
    assert all(torch.equal(conds[f], a) for f in (0, 1, 2))  # before the first key: the first key's
    assert all(torch.equal(conds[f], b) for f in (6, 7, 8))  # after the last key: the last key's
    for f in (3, 4, 5):
        assert torch.allclose(conds[f], a + (f - 2) / 4 * (b - a), rtol=0, atol=1e-7)
    looped = interpolate_conditioning(torch.stack([a, b]), [2, 6], 9, closed_loop=True)
    assert torch.equal(looped[2], a) and torch.equal(looped[6], b)
    for f, t in ((7, 1 / 5), (8, 2 / 5), (0, 3 / 5), (1, 4 / 5)):  # last key (6) travels to the first (2 + 9)
        assert torch.allclose(looped[f], b + t * (a - b), rtol=0, atol=1e-7)
    spherical = interpolate_conditioning(torch.stack([a, b]), [2, 6], 9, method="slerp")
    assert torch.allclose(spherical[4], slerp(a, b, 0.5)) and not torch.allclose(spherical[4], conds[4])
    unit_a, unit_b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    assert torch.allclose(slerp(unit_a, unit_b, 0.3).norm(dim=-1), torch.ones(3), atol=1e-5)  # stays on the sphere


def test_a_prompt_without_keys_is_encoded_exactly_as_before(tiny):
    encoder = TextEncoder(tiny.tokenizer, tiny.text_encoder)
    assert torch.equal(encode_prompt(encoder, "a boat\non a lake", ElevatorParams(frames=4)).context,
                       encoder("a boat\non a lake"))
    travel = encode_prompt(encoder, "1: red\n3: blue", ElevatorParams(frames=5)).context
    assert travel.shape[0] == 5
    assert torch.equal(travel[0], encoder("red")[0]) and torch.equal(travel[1], encoder("red")[0])
    assert torch.equal(travel[3], encoder("blue")[0]) and torch.equal(travel[4], encoder("blue")[0])


def test_a_keyed_prompt_changes_only_its_frames_in_the_t2i(tiny):
    encoder = TextEncoder(tiny.tokenizer, tiny.text_encoder)
    frames = 6
    plain = encode_prompt(encoder, "red", ElevatorParams(frames=frames)).context
    keyed = encode_prompt(encoder, "0: red\n4: red\n5: blue", ElevatorParams(frames=frames)).context
    x = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    uncond = encoder("")
    with torch.no_grad(), inflated(tiny.unet, frames) as inflation:
        before, _ = EpsDenoiser(unet2d_eps(tiny.unet), SD_SCHEDULE, plain, uncond, 7.5, frames,
                                inflation=inflation).guided(x, 3.0)
        after, _ = EpsDenoiser(unet2d_eps(tiny.unet), SD_SCHEDULE, keyed, uncond, 7.5, frames,
                               inflation=inflation).guided(x, 3.0)
    changed = [f for f in range(frames) if not torch.equal(before[f], after[f])]
    assert changed == [5]


def test_cli_demo_travels_and_loops_from_a_prompt_file(tmp_path):
    prompt = tmp_path / "travel.txt"
    prompt.write_text("tiny, random\n0: a boat at dawn\n4: a boat at night\nfilm grain\n")
    out = tmp_path / "loop"
    result = subprocess.run([sys.executable, "-m", "lib_elevator", "demo", "--frames", "6", "--steps", "6",
                             "--refine-at", "4", "--t2v-steps", "2", "--prompt-file", str(prompt), "--closed-loop",
                             "--context-length", "4", "--out", str(out), "--format", "mp4", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with av.open(str(tmp_path / "loop.mp4")) as container:
        assert len(list(container.decode(video=0))) == 6
        comment = container.metadata["comment"]
    assert comment.startswith("tiny, random\n0: a boat at dawn\n4: a boat at night\nfilm grain\n")
    assert "closed_loop=on" in comment


def test_cli_bad_travel_syntax_is_one_line_exit_2(tmp_path):
    prompt = tmp_path / "travel.txt"
    prompt.write_text("0: a boat\n8: a car\n")
    result = subprocess.run([sys.executable, "-m", "lib_elevator", "demo", "--frames", "8", "--prompt-file",
                             str(prompt), "--out", str(tmp_path / "x"), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("videoelevator: error: prompt line 2=") and result.stderr.count("\n") == 1
    assert not (tmp_path / "x.mp4").exists()
