"""No growth over many generations on the A1111 stand-in: 50 videos with a T2V LoRA, with the garbage collector
off (the WebUI never triggers a full collection, and it keeps each request's ``p`` and sampler alive in reference
cycles until one), leave as many objects of the extension's own classes and as many live tensors as there were
before, and read the LoRA and motion files once."""
import gc
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from test_a1111 import T2V_LORA, elevator_p, extension_session, motion_file  # noqa: F401

RUNS = 50
REPO = str(Path(__file__).resolve().parent.parent)
QUICK = dict(frames=2, refine_at="2", t2v_steps=1, formats=["gif"], t2v_lora=T2V_LORA)


def extension_objects() -> Counter:
    """Objects the collector tracks, unreachable ones included, whose class the extension defines."""
    def ours(cls):
        module = sys.modules.get(cls.__module__)
        return (getattr(module, "__file__", None) or "").startswith(REPO) and "/tests/" not in module.__file__

    counts = Counter()
    for obj in gc.get_objects():
        if ours(type(obj)):
            counts[type(obj).__qualname__] += 1
    return counts


def reachable_tensors() -> int:
    """Tensors still reachable once unreachable cycles are found (kept aside, not freed, so nothing changes)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        garbage = {id(obj) for obj in gc.garbage}
        return sum(isinstance(obj, torch.Tensor) and id(obj) not in garbage for obj in gc.get_objects())
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.parametrize("host", ["a1111", "forge"])
def test_fifty_videos_with_a_t2v_lora_leave_nothing_behind(tmp_path, motion_file, monkeypatch, host):
    from lib_elevator.motion import safe_load

    with extension_session(tmp_path, motion_file, host) as webui:
        webui.run(elevator_p(webui, steps=4, **QUICK))  # fills the caches: motion model, T2V LoRA, conditioning
        reads = []
        read_file = safe_load.load_file
        monkeypatch.setattr(safe_load, "load_file", lambda path, **kw: reads.append(path) or read_file(path, **kw))
        gc.collect()
        objects_before, tensors_before = extension_objects(), reachable_tensors()
        gc.disable()
        try:
            for seed in range(RUNS):
                webui.run(elevator_p(webui, steps=4, seed=seed, **QUICK))
            objects_after, tensors_after = extension_objects(), reachable_tensors()
        finally:
            gc.enable()
        assert webui.errors == []
        print(f"\n{host}: extension objects {sum(objects_before.values())} -> {sum(objects_after.values())}, "
              f"reachable tensors {tensors_before} -> {tensors_after} over {RUNS} runs")
        assert reads == []  # the LoRA and the motion model came from their caches
        assert objects_after == objects_before  # none kept by the WebUI's uncollected cycles either
        assert tensors_after == tensors_before


def test_choosing_another_t2v_lora_releases_the_first(tmp_path, motion_file):
    import weakref

    with extension_session(tmp_path, motion_file) as webui:
        folder = Path(webui.paths.models_path) / "VideoElevator"
        (folder / "another_t2v_lora.safetensors").write_bytes((folder / T2V_LORA).read_bytes())
        cache = type(webui.script).title.__globals__["T2V_LORA_CACHE"]  # the script module's
        webui.run(elevator_p(webui, steps=4, **QUICK))
        first = weakref.ref(next(iter(cache.get(folder / T2V_LORA).values())))
        webui.run(elevator_p(webui, steps=4, **{**QUICK, "t2v_lora": "another_t2v_lora.safetensors"}))
        assert first() is None  # freed without a garbage collection


def test_a_failed_request_leaves_nothing_behind(tmp_path, motion_file):
    with extension_session(tmp_path, motion_file) as webui:
        webui.run(elevator_p(webui, steps=4, **QUICK))
        calls = []

        def fail_on_fifth_call(module, args):
            calls.append(1)
            if len(calls) == 5:  # inside a T2V call: every patch and the T2V LoRA are installed
                raise RuntimeError("GPU fell over")

        gc.collect()
        before = extension_objects()
        gc.disable()
        try:
            handle = webui.unet.register_forward_pre_hook(fail_on_fifth_call)
            try:
                webui.run(elevator_p(webui, steps=4, **QUICK))
            except RuntimeError:
                pass
            handle.remove()
            after = extension_objects()
        finally:
            gc.enable()
        assert len(calls) == 5 and after == before
