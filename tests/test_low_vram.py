"""Low-VRAM hosts: where every motion-module parameter and T2V LoRA tensor lives before, during and after
a run, measured on the stand-in's fake GPU (``tests/fake_gpu.py``: a second device whose tensors compute for
real and refuse to mix with CPU tensors, as CUDA's do) under A1111's ``--lowvram`` / ``--medvram`` hooks
(the stand-in's ``modules/lowvram.py``) and on a normal-VRAM session."""
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch.nn.modules.module import register_module_forward_hook

from fake_gpu import FAKE_GPU
from lib_elevator import lora as lora_module
from lib_elevator.webui.hosts import a1111
from test_a1111 import MOTION, T2V_LORA, elevator_p, extension_session, motion_file  # noqa: F401

GPU, CPU = str(FAKE_GPU), "cpu"


def where(tensors) -> Counter:
    """How many tensors sit on each device."""
    return Counter(str(t.device) for t in tensors)


def tensors_of(module):
    return [*module.parameters(), *module.buffers()]


def motion_modules(adapter):
    return [m for m in adapter.modules() if type(m).__name__ == "AnimateDiffTransformer3D"]


@pytest.fixture
def recorded_loras(monkeypatch):
    """Every T2V LoRA patch the A1111 adapter makes, kept for measuring."""
    made = []

    class Recorded(lora_module.GatedLora):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(a1111, "GatedLora", Recorded)
    return made


def lora_tensors(loras):
    return [t for patch in loras for target in patch.targets for t in (target.down, target.up)]


@contextmanager
def measured_calls(adapter, loras):
    """At every motion-module call: (where the called module is, where the other modules are, where the
    T2V LoRA's pairs are)."""
    modules = motion_modules(adapter)
    calls = []

    def record(module, args, output):
        if any(module is m for m in modules):
            others = [t for m in modules if m is not module for t in tensors_of(m)]
            calls.append((where(tensors_of(module)), where(others), where(lora_tensors(loras))))

    handle = register_module_forward_hook(record)
    try:
        yield calls
    finally:
        handle.remove()


@pytest.fixture(params=["--lowvram", "--medvram", ""], ids=["lowvram", "medvram", "normal"])
def session(request, tmp_path, motion_file):
    with extension_session(tmp_path, motion_file, commandline_args=request.param, device="fake_gpu") as webui:
        webui.vram_flag = request.param
        yield webui


def cached_adapter(webui):
    """The motion adapter the extension's cache holds (what every run of this motion file uses)."""
    script_globals = type(webui.script).before_process.__globals__
    return script_globals["MOTION_CACHE"].get(Path(webui.paths.models_path) / "VideoElevator" / MOTION)[0]


def first_run(webui):
    """The first run loads the motion model into the extension's cache; returns the cached adapter."""
    p = elevator_p(webui, t2v_lora=T2V_LORA)
    webui.run(p)
    assert webui.errors == []
    return cached_adapter(webui)


def test_motion_modules_and_t2v_lora_live_on_the_gpu_only_while_a_low_vram_run_needs_them(session, recorded_loras):
    adapter = first_run(session)
    total = len(tensors_of(adapter))
    before = where(tensors_of(adapter))
    p = elevator_p(session, t2v_lora=T2V_LORA)
    with measured_calls(adapter, recorded_loras) as calls:
        session.run(p)
    assert session.errors == []
    after = where(tensors_of(adapter))
    assert calls and cached_adapter(session) is adapter
    called = [call[0] for call in calls]
    assert all(c == Counter({GPU: c.total()}) for c in called)  # a module runs where the activations are
    if session.vram_flag:  # low VRAM: nothing on the GPU before or after the run, the LoRA pairs never
        assert before == after == Counter({CPU: total})
        assert all(call[2] == Counter({CPU: call[2].total()}) for call in calls)
        assert lora_tensors(recorded_loras) and where(lora_tensors(recorded_loras)).keys() == {CPU}
    if session.vram_flag == "--lowvram":  # one motion module on the GPU at a time, like the UNet's blocks
        assert all(GPU not in call[1] for call in calls)
    if session.vram_flag == "--medvram":  # on the GPU for the whole run once used
        assert any(call[1][GPU] for call in calls)
    if not session.vram_flag:  # a normal-VRAM host keeps them cached on the GPU
        assert before == after == Counter({GPU: total})


@pytest.mark.parametrize("stop", ["error", "interrupt"])
def test_motion_modules_go_back_to_the_cpu_after_a_failed_or_interrupted_low_vram_run(tmp_path, motion_file,
                                                                                       recorded_loras, stop):
    with extension_session(tmp_path, motion_file, commandline_args="--lowvram", device="fake_gpu") as webui:
        from modules import script_callbacks, shared

        adapter = first_run(webui)
        calls = []

        def stop_inside_a_motion_module(module, args, output):
            if type(module).__name__ == "AnimateDiffTransformer3D":
                calls.append(module)
                if len(calls) == 3 and stop == "error":
                    raise RuntimeError("GPU fell over")

        def interrupt_after_a_t2v_call(params):
            if len(calls) >= 3:
                shared.state.interrupt()

        script_callbacks.on_cfg_denoiser(interrupt_after_a_t2v_call)
        handle = register_module_forward_hook(stop_inside_a_motion_module)
        try:
            if stop == "error":
                with pytest.raises(RuntimeError, match="GPU fell over"):
                    webui.run(elevator_p(webui, t2v_lora=T2V_LORA))
            else:
                webui.run(elevator_p(webui, t2v_lora=T2V_LORA))
        finally:
            handle.remove()
        assert len(calls) >= 3
        assert where(tensors_of(adapter)).keys() == {CPU}
        assert where(lora_tensors(recorded_loras)).keys() <= {CPU}


@pytest.mark.parametrize("vram", ["LOW_VRAM", "NO_VRAM", "NORMAL_VRAM"])
def test_forge_hands_the_motion_modules_back_to_its_memory_management_in_low_vram(tmp_path, motion_file, monkeypatch,
                                                                                  vram):
    """Forge moves modules between devices itself; in its low-VRAM states our motion modules' patcher must be
    unloaded *with* moving (Forge would later drop the abandoned patcher without moving it, leaving the cached
    modules on the GPU). Checked on Forge's bookkeeping: the stand-in's Forge devices are all the CPU."""
    with extension_session(tmp_path, motion_file, host="forge") as forge:
        from backend import memory_management as memory

        monkeypatch.setattr(memory, "vram_state", memory.VRAMState[vram])
        unloads = []
        model_unload = memory.LoadedModel.model_unload

        def recorded_unload(self, avoid_model_moving=False):
            unloads.append((self.model.model, avoid_model_moving))
            return model_unload(self, avoid_model_moving)

        monkeypatch.setattr(memory.LoadedModel, "model_unload", recorded_unload)
        p = elevator_p(forge, t2v_lora=T2V_LORA)
        forge.run(p)
        assert forge.errors == []
        adapter = cached_adapter(forge)
        still_loaded = [m for m in memory.current_loaded_models if m.model.model is adapter]
        if vram == "NORMAL_VRAM":  # cached: Forge keeps it loaded (and frees it under memory pressure)
            assert still_loaded and (adapter, False) not in unloads
        else:
            assert not still_loaded and (adapter, False) in unloads
