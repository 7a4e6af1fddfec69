"""Argument types and checks of ``python -m slb``: every value is checked while the command
line is parsed (argparse prints one ``usage`` line and the reason, exit status 2), so no
command starts work it cannot finish. The limits are those of :mod:`slb.limits`."""

from __future__ import annotations

import argparse
import math
import re

import torch

from .limits import (
    FIT_SIZE_RANGE,
    MAX_BATCH,
    MAX_COMPONENTS,
    MAX_DEMO_STEPS,
    MAX_PREVIEW_COUNT,
    MAX_PREVIEW_SCALE,
    MAX_SEED,
    MEAN_RANGE,
    STRENGTH_RANGE,
    SUBSEED_STRENGTH_RANGE,
    fit_size_problem,
    shape_problem,
)
from .lowfreq import LowFreqError, parse_colour, parse_components
from .settings import SettingsError, parse_means, short_repr


def _integer(text: str, what: str) -> int:
    if not re.fullmatch(r"\s*[+-]?[0-9]{1,40}\s*", text):
        raise argparse.ArgumentTypeError(f"{what} must be an integer, got {short_repr(text)}")
    return int(text)


def int_in(lo: int, hi: int, what: str):  # noqa: ANN201
    """An argparse type: an integer in ``lo..hi``."""
    def parse(text: str) -> int:
        value = _integer(text, what)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must lie in {lo}..{hi}, got {value}")
        return value

    parse.__name__ = what
    return parse


def float_in(lo: float, hi: float, what: str):  # noqa: ANN201
    """An argparse type: a finite number in ``lo..hi``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got "
                                             f"{short_repr(text)}") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must lie in {lo:g}..{hi:g}, got {text}")
        return value

    parse.__name__ = what
    return parse


seed = int_in(0, MAX_SEED, "seed")
strength = float_in(*STRENGTH_RANGE, "strength")
subseed_strength = float_in(*SUBSEED_STRENGTH_RANGE, "variation strength")
n_components = int_in(1, MAX_COMPONENTS, "LF components")
batch_size = int_in(1, MAX_BATCH, "batch size")
preview_count = int_in(1, MAX_PREVIEW_COUNT, "count")
preview_scale = int_in(1, MAX_PREVIEW_SCALE, "scale")
demo_steps = int_in(1, MAX_DEMO_STEPS, "steps")


def shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (_integer(p, "shape") for p in text.split(","))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 4,64,64), got "
                                         f"{short_repr(text)}") from None
    problem = shape_problem((c, h, w))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return c, h, w


def means(text: str) -> dict[int, float]:
    try:
        values = parse_means(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    lo, hi = MEAN_RANGE
    for ch, value in values.items():
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"mean for channel {ch} must lie in {lo:g}..{hi:g},"
                                             f" got {value:g}")
    return values


def fit_size(text: str) -> int:
    value = _integer(text, "size")
    problem = fit_size_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def crop(text: str) -> str:
    if not re.fullmatch(r"center|random:-?[0-9]{1,18}", text):
        raise argparse.ArgumentTypeError(f"crop must be 'center' or 'random:<seed>', got "
                                         f"{short_repr(text)}")
    return text


def device(text: str) -> torch.device:
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {short_repr(text)}; use cpu, cuda, "
                                         "cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"device {text}: CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"device {text}: there are only "
                                         f"{torch.cuda.device_count()} CUDA device(s)")
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise argparse.ArgumentTypeError(f"device {text}: MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"device {text}: only cpu, cuda and mps are supported")
    return dev


FIT_LIMITS = (f"size {FIT_SIZE_RANGE[0]}..{FIT_SIZE_RANGE[1]} px in steps of 8, LF components "
              f"1..{MAX_COMPONENTS}, batch size 1..{MAX_BATCH}")


def components(text: str) -> dict:
    """``'0:0,1=0.5;1:1,0=-0.3'`` -> ``{(0,0,1): 0.5, (1,1,0): -0.3}``, values in range."""
    try:
        values = parse_components(text)
    except LowFreqError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    lo, hi = MEAN_RANGE
    for (c, u, v), value in values.items():
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"component {c}:{u},{v} must lie in "
                                             f"{lo:g}..{hi:g}, got {value:g}")
    return values


def colour(text: str) -> str:
    try:
        parse_colour(text)
    except LowFreqError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
