import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler

from lib_elevator.schedules import (
    ANIMATEDIFF_SCHEDULE, SD_SCHEDULE, VPSchedule, ddim_leading_timesteps, ddim_sigmas, lcm_timesteps,
)


@pytest.mark.parametrize("schedule,beta_schedule", [(SD_SCHEDULE, "scaled_linear"), (ANIMATEDIFF_SCHEDULE, "linear")])
def test_tables_equal_diffusers(schedule, beta_schedule):
    reference = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule=beta_schedule)
    assert torch.equal(schedule.alphas_cumprod, reference.alphas_cumprod)


@pytest.mark.parametrize("steps", [1, 20, 30, 50])
def test_ladders_equal_diffusers(steps):
    ddim = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
    ddim.set_timesteps(steps)
    assert ddim_leading_timesteps(steps) == ddim.timesteps.tolist()
    lcm = LCMScheduler(beta_schedule="linear", original_inference_steps=50)
    lcm.set_timesteps(steps)
    assert lcm_timesteps(steps) == lcm.timesteps.tolist()


def test_lcm_ladder_at_30_steps_and_its_limit():
    assert lcm_timesteps(30)[:5] == [999, 979, 939, 899, 879] and lcm_timesteps(30)[-1] == 39
    with pytest.raises(ValueError, match="51 steps"):
        lcm_timesteps(51)


def test_sigma_and_timestep_are_inverse_and_exact_on_the_table():
    for t in (0, 1, 34, 500, 826, 999):
        assert SD_SCHEDULE.sigma(t) == pytest.approx(float(SD_SCHEDULE.sigmas[t]), rel=1e-6)
        assert SD_SCHEDULE.timestep(SD_SCHEDULE.sigma(t)) == pytest.approx(t, abs=1e-6)
    assert SD_SCHEDULE.timestep(SD_SCHEDULE.sigma(412.25)) == pytest.approx(412.25, abs=1e-6)
    # the reference numbers of DESIGN §3.1
    assert SD_SCHEDULE.sigma(826) == pytest.approx(5.77, abs=0.01)
    assert ANIMATEDIFF_SCHEDULE.sigma(826) == pytest.approx(9.58, abs=0.01)
    assert ANIMATEDIFF_SCHEDULE.sigma(879) == pytest.approx(12.66, abs=0.01)


def test_out_of_range_sigmas_clamp_to_the_table_ends():
    assert SD_SCHEDULE.timestep(1e-6) == 0.0 and SD_SCHEDULE.timestep(1e6) == 999.0


def test_ddim_ladder_ends_at_alpha_bar_zero_not_one():
    sigmas = ddim_sigmas(SD_SCHEDULE, 30)
    assert len(sigmas) == 31 and sigmas[-1] == pytest.approx(0.0292, abs=1e-4) and sigmas[0] == SD_SCHEDULE.sigmas[958]


def test_schedule_from_any_table():
    table = SD_SCHEDULE.alphas_cumprod.double()
    schedule = VPSchedule("host", table)
    assert schedule.alphas_cumprod.dtype == torch.float32 and torch.equal(schedule.sigmas, SD_SCHEDULE.sigmas)
