"""Interrupt and skip take effect within one UNet call in every stage (T2I, correction, T2V, inversion), on both
hosts and whether the WebUI batches cond and uncond into one UNet call or not."""
import pytest

from test_a1111 import elevator_p, extension_session, motion_file  # noqa: F401

STAGE_OF = {("t2i", "guided"): "t2i", ("t2i", "conditional"): "correction", ("t2v", "guided"): "t2v",
            ("t2i", "unconditional"): "inversion"}
WITH_CORRECTIONS = dict(steps=8, refine_at="6,3", t2v_steps=2)


class UNetCalls:
    """Every UNet forward with the stage it belongs to; can stop the job from inside the n-th one."""

    def __init__(self, webui, monkeypatch):
        from lib_elevator.webui import run

        self.stages, self.stage, self.stop_at, self.action = [], None, None, "interrupt"
        for method in ("guided", "conditional", "unconditional"):
            original = getattr(run.WebUIDenoiser, method)

            def tagged(denoiser, *args, original=original, method=method, **kwargs):
                self.stage = STAGE_OF[("t2v" if denoiser.cond_scale is not None else "t2i", method)]
                return original(denoiser, *args, **kwargs)

            monkeypatch.setattr(run.WebUIDenoiser, method, tagged)
        self.handle = webui.unet.register_forward_pre_hook(self._called)
        self.state = webui.shared.state

    def _called(self, module, args):
        self.stages.append(self.stage)
        if len(self.stages) - 1 == self.stop_at:
            getattr(self.state, self.action)()


@pytest.mark.parametrize("host,together", [("a1111", True), ("a1111", False), ("forge", False)],
                         ids=["a1111-cond_uncond_batched", "a1111-cond_uncond_apart", "forge-cond_uncond_apart"])
def test_a_stop_ends_the_run_within_one_unet_call_in_every_stage(tmp_path, motion_file, monkeypatch, host, together):
    with extension_session(tmp_path, motion_file, host) as webui:
        webui.shared.opts.batch_cond_uncond = together
        if host == "forge":
            from backend.sampling import sampling_function

            monkeypatch.setattr(sampling_function, "BATCHING", "together" if together else "separate_cond_first")
        calls = UNetCalls(webui, monkeypatch)
        webui.run(elevator_p(webui, **WITH_CORRECTIONS))
        sequence = list(calls.stages)
        assert set(sequence) == set(STAGE_OF.values())
        latency = {}
        for action in ("interrupt", "skip"):
            for stage in STAGE_OF.values():
                stop_at = sequence.index(stage, len(sequence) // 3)  # a call of that stage well inside the run
                calls.stages, calls.stop_at, calls.action = [], stop_at, action
                webui.run(elevator_p(webui, **WITH_CORRECTIONS))
                webui.shared.state.interrupted = webui.shared.state.skipped = False  # the UI resets them
                latency[action, stage] = len(calls.stages) - 1 - stop_at
        calls.handle.remove()
        print(f"\nUNet calls after a stop ({host}, cond/uncond {'batched' if together else 'apart'}): {latency}")
        assert max(latency.values()) <= 1, latency
