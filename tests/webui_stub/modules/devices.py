"""Mirrors A1111 ``modules/devices.py`` for a CPU float32 run (no autocast, no half precision)."""
import contextlib

import torch

cpu = torch.device("cpu")
device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = cpu
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
