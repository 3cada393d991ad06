import pytest
import torch

from lib_elevator.attention import Inflation, first_frame_context, inflated
from lib_elevator.tiny import UNET2D_CONFIG

FRAMES = 3


def forward(unet, sample, context):
    timesteps = torch.full((sample.shape[0],), 500.0)
    with torch.no_grad():
        if hasattr(unet, "input_blocks"):
            return unet(sample, timesteps=timesteps, context=context)
        return unet(sample, timesteps, encoder_hidden_states=context).sample


@pytest.fixture(params=["diffusers", "ldm"])
def unet(request, tiny):
    if request.param == "diffusers":
        return tiny.unet
    from ldm_helpers import ldm_unet_like

    return ldm_unet_like(tiny.unet, UNET2D_CONFIG)


def batch(groups, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(groups * FRAMES, 4, 8, 8, generator=generator)
    prompts = torch.randn(groups, 77, 32, generator=generator)
    return sample, prompts.repeat_interleave(FRAMES, dim=0)


def test_first_frame_context_repeats_each_groups_first_frame():
    hidden = torch.arange(2 * FRAMES, dtype=torch.float32).reshape(2 * FRAMES, 1, 1)
    assert first_frame_context(hidden, FRAMES).flatten().tolist() == [0, 0, 0, 3, 3, 3]
    with pytest.raises(ValueError, match="not a whole number of 3-frame groups"):
        first_frame_context(torch.zeros(4, 1, 1), FRAMES)


def test_frame_zero_equals_plain_unet_on_frame_zero_alone(unet):
    sample, context = batch(2)
    with inflated(unet, FRAMES):
        out = forward(unet, sample, context)
    for first in (0, FRAMES):  # the first frame of each group
        alone = forward(unet, sample[first:first + 1], context[first:first + 1])
        torch.testing.assert_close(out[first:first + 1], alone, rtol=1e-5, atol=1e-5)


def test_identical_frames_stay_identical(unet):
    sample, context = batch(1)
    sample = sample[:1].expand_as(sample).contiguous()
    with inflated(unet, FRAMES):
        out = forward(unet, sample, context)
    torch.testing.assert_close(out, out[:1].expand_as(out), rtol=1e-5, atol=1e-5)


def test_inflation_changes_later_frames(unet):
    sample, context = batch(1)
    with inflated(unet, FRAMES):
        out = forward(unet, sample, context)
    assert (out[1:] - forward(unet, sample, context)[1:]).abs().max() > 1e-3


def test_groups_never_attend_to_each_other(unet):
    sample, context = batch(2)
    other = sample.clone()
    other[FRAMES:] = torch.randn(FRAMES, 4, 8, 8)  # change only the second (cond) group
    with inflated(unet, FRAMES):
        both = forward(unet, sample, context)
        changed = forward(unet, other, context)
        first_group_alone = forward(unet, sample[:FRAMES], context[:FRAMES])  # a batch with no CFG
    torch.testing.assert_close(changed[:FRAMES], both[:FRAMES], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(first_group_alone, both[:FRAMES], rtol=1e-5, atol=1e-5)


def test_install_then_remove_is_bit_identical(unet):
    sample, context = batch(2)
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    modules = [(name, type(module)) for name, module in unet.named_modules()]
    before = forward(unet, sample, context)
    with inflated(unet, FRAMES):
        forward(unet, sample, context)
    assert [(name, type(module)) for name, module in unet.named_modules()] == modules
    after_state = unet.state_dict()
    assert state.keys() == after_state.keys() and all(torch.equal(state[k], after_state[k]) for k in state)
    assert torch.equal(forward(unet, sample, context), before)


def test_failure_inside_the_block_still_removes(unet):
    sample, context = batch(1)
    before = forward(unet, sample, context)
    with pytest.raises(RuntimeError, match="boom"):
        with inflated(unet, FRAMES):
            raise RuntimeError("boom")
    assert torch.equal(forward(unet, sample, context), before)


def test_inactive_inflation_is_the_plain_unet(unet):
    sample, context = batch(2)
    before = forward(unet, sample, context)
    with inflated(unet, FRAMES) as inflation:
        inflation.active = False
        assert torch.equal(forward(unet, sample, context), before)


def test_wrong_batch_for_frame_count_is_an_error(unet):
    sample, context = batch(1)
    with inflated(unet, 2), pytest.raises(ValueError, match="2-frame groups"):
        forward(unet, sample, context)


def test_double_install_is_refused(tiny):
    inflation = Inflation(tiny.unet, FRAMES).install()
    try:
        with pytest.raises(RuntimeError, match="already installed"):
            inflation.install()
    finally:
        inflation.remove()
