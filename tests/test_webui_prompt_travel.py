"""Prompt travel in the WebUI, on the A1111 and Forge stand-ins: each frame of the batch samples with its
own conditioning, interpolated between the keys the WebUI encoded (extra networks once for the clip,
prompt editing per line), in the T2I and the T2V (context windows) passes alike."""
import pytest
import torch

from test_a1111 import (assert_untouched, elevator_p, extension_session, fingerprint, motion_file,  # noqa: F401
                        newest_mp4)
from test_sdxl_webui import SDXL_MOTION, sdxl  # noqa: F401

# frames 0-6; keys at 2 and 5, so frames 0-1 take key 2's prompt and frames 3-4 lie between the keys
TRAVEL = "masterpiece\n2: a red fox\n5: a blue bird\nfilm grain"
KEY_PROMPTS = ("masterpiece, a red fox, film grain", "masterpiece, a blue bird, film grain")


@pytest.fixture(params=["a1111", "forge"])
def session(request, tmp_path, motion_file):
    with extension_session(tmp_path, motion_file, request.param) as webui:
        yield webui


def row(batch, index):
    """Row ``index`` of a conditioning batch: a tensor, or SDXL's dict of them (a copy)."""
    if isinstance(batch, dict):
        return {part: rows[index].clone() for part, rows in batch.items()}
    return batch[index].clone()


def encoded(p, prompt):
    """The WebUI's own conditioning of ``prompt`` alone at the first step of ``p``'s job (SDXL's takes the image size)."""
    from modules import prompt_parser, shared

    prompts = prompt_parser.SdConditioning([prompt], width=p.width, height=p.height)
    schedule = prompt_parser.get_learned_conditioning(shared.sd_model, prompts, p.steps)
    return row(prompt_parser.reconstruct_cond_batch(schedule, 0), 0)


def run_recording(session, prompt, **fields):
    """Run a job; return (p, processed, [(T2V call?, CFG step, text_cond)] of every CFGDenoiser call,
    texts the WebUI encoded for the prompt)."""
    from modules import prompt_parser, script_callbacks

    calls, texts = [], []
    p = elevator_p(session, prompt, **fields)

    def seen(params):
        calls.append((p.videoelevator.active.switch.active, params.denoiser.step, row(params.text_cond, slice(None))))

    real_encode = prompt_parser.get_multicond_learned_conditioning

    def encode(model, prompts, *args, **kwargs):
        texts.extend(prompts)
        return real_encode(model, prompts, *args, **kwargs)

    script_callbacks.on_cfg_denoiser(seen, name="travel-test")
    prompt_parser.get_multicond_learned_conditioning = encode
    try:
        processed = session.run(p)
    finally:
        prompt_parser.get_multicond_learned_conditioning = real_encode
        script_callbacks.remove_callbacks_for_function(seen)
    assert session.errors == []
    return p, processed, calls, texts


def test_each_frame_samples_with_the_interpolated_conditioning_in_t2i_and_t2v_windows(session):
    fields = dict(frames=7, context_length=4, context_overlap=1, refine_at="4,2", t2v_steps=2)
    p, processed, calls, texts = run_recording(session, TRAVEL, **fields)
    a, b = (encoded(p, prompt) for prompt in KEY_PROMPTS)
    expected = torch.stack([a, a, a, a + (b - a) / 3, a + 2 * (b - a) / 3, b, b])
    assert sorted(set(texts)) == sorted(KEY_PROMPTS)  # each key's text encoded by the WebUI, nothing else
    t2i = [cond for t2v, _, cond in calls if not t2v]
    assert t2i and all(torch.allclose(cond, expected, rtol=0, atol=1e-6) for cond in t2i)
    assert all(torch.equal(cond[[0, 1, 2, 5, 6]], expected[[0, 1, 2, 5, 6]]) for cond in t2i)  # keys exactly
    windows = [[0, 1, 2, 3], [3, 4, 5, 6]]
    t2v = [cond for is_t2v, _, cond in calls if is_t2v]
    assert len(t2v) == 2 * 2 * len(windows)  # 2 refinements × 2 T2V steps × 2 windows
    for n, cond in enumerate(t2v):
        assert torch.allclose(cond, expected[windows[n % 2]], rtol=0, atol=1e-6)
    # the infotext (and so paste-back) and the video carry the whole multi-line prompt
    from modules import infotext_utils

    assert infotext_utils.parse_generation_parameters(processed.infotexts[0])["Prompt"] == TRAVEL
    assert newest_mp4(session)[2].startswith(TRAVEL + "\n")


def test_a_lora_tag_in_a_keyed_line_applies_once_to_the_whole_clip(session):
    from modules import stub_lora

    stub_lora.make_random_lora(session.sd_model, "style", strength=0.5)
    prompt = "0: a red fox\n4: a blue bird <lora:style:0.7>"
    _, _, calls, texts = run_recording(session, prompt, frames=6)
    assert [(n.name, n.unet_multiplier) for n in stub_lora.loaded_networks] == [("style", 0.7)]
    assert not any("<lora" in text for text in texts) and sorted(set(texts)) == ["a blue bird", "a red fox"]


def test_prompt_editing_switches_per_line_at_its_step(session):
    """``[red:blue:2]`` in key 0's line: frames anchored to key 0 switch after step 2; key 3's frames never do."""
    p, _, calls, _ = run_recording(session, "0: a [red:blue:2] fox\n3: a green frog", frames=4, refine_at="",
                                   steps=5)
    red, blue, frog = (encoded(p, prompt) for prompt in ("a red fox", "a blue fox", "a green frog"))
    steps = [step for _, step, _ in calls]
    assert steps == [0, 1, 2, 3, 4]
    for step, (_, _, cond) in enumerate(calls):
        first = red if step <= 2 else blue
        expected = torch.stack([first, first + (frog - first) / 3, first + 2 * (frog - first) / 3, frog])
        assert torch.allclose(cond, expected, rtol=0, atol=1e-6), step


def test_a_prompt_without_frame_keys_samples_with_the_webuis_own_conditioning(session, monkeypatch):
    """Not travel: the prompts and the conditioning object the WebUI built reach the sampler untouched."""
    from modules import processing

    from lib_elevator.webui import run as webui_glue

    built, sampled = [], []
    real_setup, real_sample = processing.StableDiffusionProcessing.setup_conds, webui_glue.sample_elevator

    def setup_conds(p):
        real_setup(p)
        built.append(p.c)

    def recording(t2i, *args, **kwargs):
        sampled.append(t2i.extra_args["cond"])
        return real_sample(t2i, *args, **kwargs)

    monkeypatch.setattr(processing.StableDiffusionProcessing, "setup_conds", setup_conds)
    monkeypatch.setattr(webui_glue, "sample_elevator", recording)
    _, _, _, texts = run_recording(session, "a boat\non a lake: calm water")
    assert len(built) == len(sampled) == 1 and sampled[0] is built[0]
    assert set(texts) == {"a boat\non a lake: calm water"}


BAD_TRAVEL = [
    ("0: a fox\n4: a bird\n2: a frog", 3, "frame 2 does not come after 4"),
    ("0: a fox\n9: a bird", 2, "below the clip's 6 frames"),
    ("0: a fox\n2: <lora:style:1>", 2, "frame 2 needs a prompt"),  # nothing left once the tag is out
]


def test_bad_travel_syntax_is_one_error_naming_the_line_and_changes_nothing(session):
    before = fingerprint(session.unet)
    for prompt, line, fragment in BAD_TRAVEL:
        p = elevator_p(session, prompt, frames=6)
        with pytest.raises(ValueError) as error:
            session.run(p)
        message = str(error.value)
        assert f"prompt line {line}" in message and fragment in message and len(message.splitlines()) == 1
        assert getattr(error.value, "status_code", None) == 422  # what the API answers
        assert p.batch_size == 1
    assert_untouched(before, fingerprint(session.unet))


def test_64_frames_travelling_on_context_windows_in_a_loop(session):
    before = fingerprint(session.unet)
    p = elevator_p(session, "a lake\n0: at dawn\n32: at night", frames=64, context_length=16, closed_loop=True,
                   refine_at="2", t2v_steps=1, steps=3)
    session.run(p)
    assert session.errors == [] and len(newest_mp4(session)[0]) == 64
    assert_untouched(before, fingerprint(session.unet))


def test_slerp_moves_between_the_keys_on_the_sphere(session):
    from lib_elevator.prompt_travel import slerp

    p, _, calls, _ = run_recording(session, TRAVEL, frames=7, refine_at="", steps=2, prompt_interpolation="slerp")
    a, b = (encoded(p, prompt) for prompt in KEY_PROMPTS)
    for _, _, cond in calls:
        assert torch.equal(cond[2], a) and torch.equal(cond[5], b)
        assert torch.allclose(cond[3], slerp(a, b, 1 / 3), rtol=0, atol=1e-6)
        assert not torch.allclose(cond[3], a + (b - a) / 3, rtol=0, atol=1e-4)


def test_sdxl_travels_key_by_key_of_its_dict_conditioning(sdxl):
    """SDXL's conditioning is a dict (token rows and the pooled vector): each part is interpolated."""
    p, _, calls, _ = run_recording(sdxl, "0: a red fox\n2: a blue bird", frames=3, refine_at="", steps=2,
                                   motion_model=SDXL_MOTION["animatediff_sdxl_beta"], formats=["mp4"])
    a, b = (encoded(p, prompt) for prompt in ("a red fox", "a blue bird"))
    assert calls and all(set(cond) == {"crossattn", "vector"} for _, _, cond in calls)
    for _, _, cond in calls:
        for part in ("crossattn", "vector"):
            assert torch.equal(cond[part][0], a[part]) and torch.equal(cond[part][2], b[part])
            assert torch.allclose(cond[part][1], a[part] + (b[part] - a[part]) / 2, rtol=0, atol=1e-6)
