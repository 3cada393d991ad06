import pytest

from lib_elevator.params import GenerationSettings, ElevatorParams, ParamError, field_specs, validate_size


def test_defaults_are_the_animatelcm_recipe_at_30_steps():
    params = ElevatorParams()
    assert params.refine_steps_remaining(30) == (26, 21, 15, 9)
    assert (params.frames, params.t2v_steps, params.t2v_cfg_scale, params.d_t, params.noise_alpha) == (16, 6, 2.0, 0.6, 0.5)
    assert (params.filter, params.d_s, params.correction, params.t2v_lora_scale) == ("gaussian", 1.0, True, 0.8)


def test_fractions_follow_the_step_count():
    params = ElevatorParams(refine_at=(0.1, 0.3, 0.5, 0.7), t2v_steps=8)
    assert params.refine_steps_remaining(50) == (45, 35, 25, 15)  # the ZeroScope recipe
    assert ElevatorParams(refine_at=(0.5,), t2v_steps=2).refine_steps_remaining(4) == (2,)


@pytest.mark.parametrize("values,field,fragment", [
    (dict(frames=1), "frames", "[2, 1024]"),
    (dict(frames=2.5), "frames", "whole number"),
    (dict(t2v_steps=0), "t2v_steps", "[1, 50]"),
    (dict(t2v_cfg_scale=0.5), "t2v_cfg_scale", "[1, 30]"),
    (dict(filter="sinc"), "filter", "gaussian, butterworth, ideal, box"),
    (dict(d_s=0), "d_s", "(0, 1]"),
    (dict(d_t=1.5), "d_t", "(0, 1]"),
    (dict(noise_alpha=-1), "noise_alpha", "[0, 10]"),
    (dict(correction="maybe"), "correction", "true or false"),
    (dict(refine_at=(26, 0.5)), "refine_at", "not mixed"),
    (dict(refine_at="a,b"), "refine_at", "list of numbers"),
    (dict(fps=float("nan")), "fps", "a number"),
])
def test_bad_values_name_the_field_and_the_allowed_range(values, field, fragment):
    with pytest.raises(ParamError) as error:
        ElevatorParams(**values)
    assert error.value.name == field and fragment in str(error.value)


@pytest.mark.parametrize("refine_at,t2v_steps,steps,fragment", [
    ((26, 21, 15, 9), 6, 20, "must lie in 1..20"),
    ((21, 26), 6, 30, "schedule order"),
    ((26, 26), 6, 30, "distinct"),
    ((26, 21, 15, 9), 10, 30, "at most 9 T2V steps"),  # the paper's code runs past the ladder here
])
def test_schedule_dependent_checks(refine_at, t2v_steps, steps, fragment):
    with pytest.raises(ParamError, match=fragment):
        ElevatorParams(refine_at=refine_at, t2v_steps=t2v_steps).refine_steps_remaining(steps)


def test_dict_round_trip_and_api_spellings():
    params = ElevatorParams(frames=24, refine_at=(45, 35, 25, 15), t2v_steps=8, d_t=0.4, correction=False)
    assert ElevatorParams.from_dict(params.to_dict()) == params
    assert ElevatorParams.from_dict({"frames": "24", "refine_at": "45,35,25,15", "t2v_steps": 8.0, "d_t": "0.4",
                                     "correction": "off"}) == params
    assert ElevatorParams.from_dict({}) == ElevatorParams()


def test_unknown_keys_are_refused():
    with pytest.raises(ParamError) as error:
        ElevatorParams.from_dict({"frame": 16})
    assert error.value.name == "frame" and "known fields are" in str(error.value)


def test_infotext_round_trip_has_no_commas():
    params = ElevatorParams(refine_at=(0.2, 0.6), filter="butterworth", butterworth_order=2, fps=12.5, correction=False)
    text = params.to_infotext()
    assert "," not in text and "refine_at=0.2/0.6" in text and "correction=off" in text
    assert ElevatorParams.from_infotext(text) == params
    no_refinement = ElevatorParams(refine_at=())
    assert ElevatorParams.from_infotext(no_refinement.to_infotext()) == no_refinement


def test_bad_infotext_is_a_param_error():
    with pytest.raises(ParamError, match="key=value"):
        ElevatorParams.from_infotext("frames 16")


def test_every_field_has_help_for_uis_and_clis():
    assert all(spec.metadata["help"] for spec in field_specs())


@pytest.mark.parametrize("width,height,field", [(60, 64, "width"), (64, 2056, "height"), (32, 64, "width")])
def test_sizes_must_be_multiples_of_8_in_range(width, height, field):
    with pytest.raises(ParamError) as error:
        validate_size(width, height)
    assert error.value.name == field
    validate_size(512, 768)


def test_default_refine_points_are_fitted_to_a_low_step_count():
    fitted, notes = ElevatorParams().fitted_to_steps(4)
    assert fitted.refine_at == (0.13, 0.5) and fitted.refine_steps_remaining(4) == (3, 2) and fitted.t2v_steps == 2
    assert len(notes) == 2 and "collapses at 4 steps" in notes[0] and "using 2" in notes[1]
    assert ElevatorParams().fitted_to_steps(30) == (ElevatorParams(), [])
    assert ElevatorParams().fitted_to_steps(1)[0].refine_at == ()


@pytest.mark.parametrize(("values", "keep", "field"), [
    (dict(t2v_steps=6), {"t2v_steps"}, "t2v_steps"),
    (dict(refine_at=(0.13, 0.3)), {"refine_at"}, "refine_at"),
    (dict(refine_at=(4, 4)), set(), "refine_at"),
])
def test_values_the_user_chose_are_never_fitted_only_refused(values, keep, field):
    with pytest.raises(ParamError) as raised:
        ElevatorParams(**values).fitted_to_steps(4, keep=keep)
    assert raised.value.name == field


@pytest.mark.parametrize(("values", "field", "message"), [
    (dict(steps=-5), "steps", "a value in [1, 1000]"),
    (dict(steps=10.5), "steps", "a whole number"),
    (dict(seed=2**70), "seed", "[0, 18446744073709551615]"),
    (dict(seed="abc"), "seed", "a whole number"),
    (dict(cfg_scale="high"), "cfg_scale", "a number"),
    (dict(cfg_scale=float("nan")), "cfg_scale", "a number"),
    (dict(cfg_scale=float("inf")), "cfg_scale", "a number"),
    (dict(cfg_scale=-5), "cfg_scale", "[1, 30]"),
    (dict(width=60), "width", "a multiple of 8 in [64, 2048]"),
    (dict(height=4096), "height", "a multiple of 8 in [64, 2048]"),
])
def test_generation_settings_refuse_bad_values_by_name(values, field, message):
    with pytest.raises(ParamError) as raised:
        GenerationSettings(**values)
    assert raised.value.name == field and message in str(raised.value)
