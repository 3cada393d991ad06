"""Every sampler and Schedule type of A1111 1.10.1 and Forge 2 with VideoElevator on the stand-ins: the run
uses Euler's first-order k-diffusion sampler object whatever the dropdown says, prompt editing is scheduled
over exactly N steps, the ladder is the Schedule type's ("Automatic" = the paper's DDIM ladder), and the
infotext says what ran."""
import numpy as np
import pytest
import torch

from test_a1111 import MOTION, elevator_p, extension_session, motion_file  # noqa: F401

A1111_SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
                  "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
                  "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
FORGE_SAMPLERS = A1111_SAMPLERS[:15] + ["HeunPP2", "IPNDM", "IPNDM_V", "DEIS"] + A1111_SAMPLERS[15:] + ["DDPM"]
A1111_SCHEDULES = ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
                   "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]
FORGE_SCHEDULES = A1111_SCHEDULES + ["Turbo", "Align Your Steps GITS", "Align Your Steps 11", "Align Your Steps 32"]
SAMPLERS = {"a1111": A1111_SAMPLERS, "forge": FORGE_SAMPLERS}
SCHEDULES = {"a1111": A1111_SCHEDULES, "forge": FORGE_SCHEDULES}
CASES = [(host, name) for host in SAMPLERS for name in SAMPLERS[host]]
SMALL = dict(frames=2, refine_at="3,1", t2v_steps=1, formats=["png"])
STEPS = 4


@pytest.fixture(scope="module", params=["a1111", "forge"])
def session(request, tmp_path_factory, motion_file):  # noqa: F811
    with extension_session(tmp_path_factory.mktemp(request.param), motion_file, host=request.param) as webui:
        webui.euler = {}  # schedule → the Euler run's frames, computed once
        yield webui


def frames_of(processed):
    """The pixels of every frame the run returned, as one tensor."""
    return torch.from_numpy(np.concatenate([np.asarray(image).ravel() for image in processed.images
                                            if not isinstance(image, str)]))


def run_video(webui, sampler_name, scheduler, prompt="a boat on a lake"):
    p = elevator_p(webui, prompt, steps=STEPS, **SMALL)
    p.sampler_name, p.scheduler = sampler_name, scheduler
    processed = webui.run(p)
    assert webui.errors == []
    return p, processed


def euler_frames(webui, scheduler):
    if scheduler not in webui.euler:
        webui.euler[scheduler] = frames_of(run_video(webui, "Euler", scheduler)[1])
    return webui.euler[scheduler]


def test_the_stand_ins_list_every_sampler_and_schedule_of_their_host(session):
    from modules import sd_samplers, sd_schedulers

    assert [config.name for config in sd_samplers.all_samplers] == SAMPLERS[session.host]
    assert [scheduler.label for scheduler in sd_schedulers.schedulers] == SCHEDULES[session.host]


@pytest.mark.parametrize("sampler_name", sorted(set(FORGE_SAMPLERS)))
def test_every_sampler_makes_the_video_euler_makes(session, sampler_name):
    if sampler_name not in SAMPLERS[session.host]:
        pytest.skip(f"{sampler_name} is not a {session.host} sampler")
    for scheduler in ("Automatic", "Karras"):
        p, processed = run_video(session, sampler_name, scheduler)
        assert torch.equal(frames_of(processed), euler_frames(session, scheduler)), (sampler_name, scheduler)
        assert f"Sampler: Euler, Schedule type: {scheduler}," in processed.info  # what ran, for paste-back


def test_an_old_style_sampler_name_keeps_its_schedule(session):
    p, processed = run_video(session, "DPM++ 2M Karras", "Automatic")
    assert (p.sampler_name, p.scheduler) == ("Euler", "Karras")
    assert torch.equal(frames_of(processed), euler_frames(session, "Karras"))


@pytest.mark.parametrize("scheduler", sorted(set(FORGE_SCHEDULES)))
def test_every_schedule_type_makes_a_video_on_its_own_ladder(session, scheduler, monkeypatch):
    if scheduler not in SCHEDULES[session.host]:
        pytest.skip(f"{scheduler} is not a {session.host} schedule")
    from lib_elevator.webui import run as webui_glue
    from modules import sd_schedulers

    seen = {}
    real = webui_glue.sample_elevator

    def recording(t2i, t2v, x, sigmas, *args, **kwargs):
        seen.update(sigmas=torch.as_tensor(sigmas).clone(), wrap=t2i.model.inner_model)
        return real(t2i, t2v, x, sigmas, *args, **kwargs)

    monkeypatch.setattr(webui_glue, "sample_elevator", recording)
    p, processed = run_video(session, "DPM++ 2M SDE", scheduler)
    assert len([image for image in processed.images if not isinstance(image, str)]) == SMALL["frames"]
    wrap = seen["wrap"]
    if scheduler == "Automatic":
        from lib_elevator.schedules import VPSchedule, ddim_sigmas

        expected = ddim_sigmas(VPSchedule("checkpoint", 1 / (1 + wrap.sigmas.double() ** 2)), STEPS).float()
    else:
        schedule = sd_schedulers.schedulers_map[scheduler]
        table = wrap.sigmas
        arguments = dict(n=STEPS, sigma_min=table[0].item(), sigma_max=table[-1].item(), device="cpu")
        expected = schedule.function(**arguments, **({"inner_model": wrap} if schedule.need_inner_model else {}))
    assert torch.allclose(seen["sigmas"].float(), expected.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampler_name", ["Euler", "Heun", "DPM++ SDE", "DPM2 a", "Restart", "DPM++ 3M SDE",
                                          "DPM fast", "DDIM", "LCM"])
def test_prompt_editing_switches_at_the_txt2img_step_with_every_sampler(session, sampler_name):
    """[cat:dog:0.5] switches where plain txt2img switches at N steps, in T2I and T2V calls alike (A1111
    schedules prompts over 2N steps for second-order samplers and Restart)."""
    from modules import prompt_parser, script_callbacks

    prompt = "a [cat:dog:0.5] on a lake"
    (cat_until, _), _ = prompt_parser.get_learned_conditioning_prompt_schedules([prompt], STEPS)[0]
    first_dog = cat_until + 1  # the step index after the last "cat" step

    seen = []

    def record(params):
        seen.append((params.denoiser.step, params.text_cond.clone()))

    script_callbacks.on_cfg_denoiser(record)
    try:
        run_video(session, sampler_name, "Automatic", prompt=prompt)
    finally:
        script_callbacks.remove_callbacks_for_function(record)
    cat = next(cond for step, cond in seen if step == 0)
    switched = sorted({step for step, cond in seen if not torch.equal(cond, cat)})
    assert switched and switched[0] == first_dog, (sampler_name, switched)
    assert all(torch.equal(cond, cat) == (step < first_dog) for step, cond in seen)
