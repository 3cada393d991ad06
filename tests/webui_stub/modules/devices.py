"""Mirrors A1111 ``modules/devices.py`` for a CPU float32 run (no autocast, no half precision).

``device`` is the CPU, or with ``$WEBUI_STUB_DEVICE=fake_gpu`` the ``lazy`` device that
``tests/fake_gpu.py`` turns into a second, real device (the session then runs inside ``fake_gpu()``),
so low-VRAM moves between "GPU" and CPU can be observed.
"""
import contextlib
import os

import torch

cpu = torch.device("cpu")
device = torch.device("lazy") if os.environ.get("WEBUI_STUB_DEVICE") == "fake_gpu" else cpu
device_interrogate = device_gfpgan = device_esrgan = device_codeformer = device
dtype = dtype_vae = dtype_unet = dtype_inference = torch.float32
unet_needs_upcast = False
fp8 = False


def get_optimal_device():
    return cpu


def torch_gc():
    pass


def autocast(disable=False):
    """No mixed precision on a float32 CPU run: a context that changes nothing."""
    return contextlib.nullcontext()


without_autocast = autocast


class NansException(Exception):
    """A model produced nothing but NaNs (``test_for_nans``)."""


def test_for_nans(x, where):
    if torch.isnan(x).all().item():
        raise NansException(f"A tensor with all NaNs was produced in {where}.")
