"""Stand-in for A1111 ``modules/devices.py``: everything runs on the CPU. A1111's
``dtype_vae`` is fp16 unless ``--no-half(-vae)`` (126); here fp32 unless a test picks fp16."""

import contextlib

import torch

cpu = device = torch.device("cpu")
dtype = dtype_unet = dtype_inference = dtype_vae = torch.float32
unet_needs_upcast = fp8 = False


class NansException(Exception):
    pass


def get_optimal_device():
    return cpu


def torch_gc():
    pass


def autocast(disable=False):
    return contextlib.nullcontext()


without_autocast = autocast


def test_for_nans(x, where):
    if x is not None and bool(torch.isnan(x).any()):
        raise NansException(f"NaNs produced in {where}")
