"""A second device for a CPU-only machine, so tests can see where a WebUI's low-VRAM mode puts tensors.

Inside ``fake_gpu()`` the ``lazy`` device (compiled into every torch build, unused otherwise; unlike
``meta`` no kernel special-cases it, and an operation that escapes the wrapper fails loudly on it) stands
for the GPU: ``.to(FAKE_GPU)``, ``module.to(FAKE_GPU)``, factory functions and ``torch.tensor`` with
``device=FAKE_GPU`` give ``OnFakeGPU`` tensors, which report ``device='lazy'`` but keep their values in a
CPU tensor and compute for real. Mixing one with a CPU tensor (other than a
0-dim scalar, as CUDA allows) raises the same "Expected all tensors to be on the same device" error CUDA
does, so code that forgets to move something fails here as it would on a GPU. Unlike a real device, a
move makes new Parameter objects (a plain Parameter cannot take a wrapper's data), so code that keeps
Parameter objects across moves (Forge's LoRA backups) is not modelled. ``.to('cpu')`` gives a
plain CPU tensor back. Built on torch's wrapper subclasses and a ``TorchDispatchMode``; no tensor ever
lands on the real lazy device.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

FAKE_GPU = torch.device("lazy")
CPU = torch.device("cpu")
_CROSS_DEVICE_OPS = {torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default}


class OnFakeGPU(torch.Tensor):
    """A tensor "on the GPU": reports ``FAKE_GPU``, holds its values in ``self.elem`` on the CPU."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(), dtype=elem.dtype,
                                                   device=FAKE_GPU, requires_grad=elem.requires_grad)

    def __init__(self, elem: torch.Tensor):
        self.elem = elem

    def __repr__(self):
        return f"OnFakeGPU({self.elem!r})"

    def __getitem__(self, index):
        return super().__getitem__(_list_indices_on_fake_gpu(index))

    def __setitem__(self, index, value):
        super().__setitem__(_list_indices_on_fake_gpu(index), value)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _CROSS_DEVICE_OPS:
            flat, _ = tree_flatten((args, kwargs))
            if any(isinstance(t, torch.Tensor) and not isinstance(t, OnFakeGPU) and t.dim() > 0 for t in flat):
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                   f"{FAKE_GPU} (the fake GPU) and cpu! ({func})")
        devices = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.device)]
        out = func(*tree_map(_unwrap_device, args), **tree_map(_unwrap_device, kwargs))
        if func is torch.ops.aten.copy_.default:  # in place into a fake-GPU tensor: the wrapper is the result
            return args[0]
        if any(device == CPU for device in devices):  # .to(cpu) spelled as aten.to.device: a plain tensor
            return out
        return tree_map(_wrap, out)


def _list_indices_on_fake_gpu(index):
    """``x[[0, 2]]`` builds its index tensor below the dispatcher, on ``x``'s device: build it here instead."""
    if isinstance(index, list):
        return torch.tensor(index).to(FAKE_GPU)
    if isinstance(index, tuple):
        return tuple(_list_indices_on_fake_gpu(part) for part in index)
    return index


def _unwrap(value):
    return value.elem if isinstance(value, OnFakeGPU) else value


def _unwrap_device(value):
    """Tensors to their CPU values, the fake GPU to the CPU (where those values are)."""
    if isinstance(value, torch.device) and value == FAKE_GPU:
        return CPU
    return _unwrap(value)


def _wrap(value):
    return OnFakeGPU(value) if type(value) is torch.Tensor else value


def _is_fake_gpu(device) -> bool:
    return device is not None and torch.device(device) == FAKE_GPU


class _FakeGPUMode(TorchDispatchMode):
    """Routes moves to and from ``FAKE_GPU`` and factory calls that name it."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        named = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.device)]
        if any(device == FAKE_GPU for device in named):  # .to(FAKE_GPU), factories, new_*/*_like naming it
            return tree_map(_wrap, func(*tree_map(_unwrap_device, args), **tree_map(_unwrap_device, kwargs)))
        return func(*args, **kwargs)


def _via_cpu(make):
    """``torch.tensor``/``as_tensor`` build from Python data below the dispatcher: build on the CPU, then move."""

    def build(data, *args, device=None, **kwargs):
        if _is_fake_gpu(device):
            return make(data, *args, **kwargs).to(FAKE_GPU)
        return make(data, *args, device=device, **kwargs)

    return build


@contextmanager
def fake_gpu():
    """While open, ``FAKE_GPU`` behaves as a second, real device."""
    constructors = {name: getattr(torch, name) for name in ("tensor", "as_tensor")}
    for name, make in constructors.items():
        setattr(torch, name, _via_cpu(make))
    try:
        with _FakeGPUMode():
            yield FAKE_GPU
    finally:
        for name, make in constructors.items():
            setattr(torch, name, make)


def devices_of(module: torch.nn.Module) -> dict[str, torch.device]:
    """Every parameter's and buffer's device, by name."""
    return {name: t.device for name, t in [*module.named_parameters(), *module.named_buffers()]}
