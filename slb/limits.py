"""Every numeric limit on user input, in one place (CLI ``--help``, API routes and the UI
state the same numbers). Requests outside them are refused before any work starts."""

from __future__ import annotations

from .sampling import MAX_SEED
from .settings import MEAN_RANGE, STRENGTH_RANGE

# A drawn leak: at most 16 channels and 512 latent pixels a side (4096 px images), and at
# most this many values in all (a 16-channel 4096x4096 px latent).
MAX_SAMPLE_CHANNELS = 16
MAX_SAMPLE_SIDE = 512
MAX_SAMPLE_ELEMENTS = 16 * 512 * 512
# Fitting: crop sizes in pixels (a multiple of the VAE's 8x downsampling), LF components,
# batch size.
FIT_SIZE_RANGE = (64, 4096)
FIT_SIZE_MULTIPLE = 8
MAX_COMPONENTS = 256
MAX_BATCH = 256
# Preview PNGs.
MAX_PREVIEW_COUNT = 64
MAX_PREVIEW_SCALE = 16
MAX_PREVIEW_PIXELS = 1 << 26
# The Gaussian-world demo.
MAX_DEMO_STEPS = 1000
SUBSEED_STRENGTH_RANGE = (0.0, 1.0)

__all__ = [
    "FIT_SIZE_MULTIPLE", "FIT_SIZE_RANGE", "MAX_BATCH", "MAX_COMPONENTS", "MAX_DEMO_STEPS",
    "MAX_PREVIEW_COUNT", "MAX_PREVIEW_PIXELS", "MAX_PREVIEW_SCALE", "MAX_SAMPLE_CHANNELS",
    "MAX_SAMPLE_ELEMENTS", "MAX_SAMPLE_SIDE", "MAX_SEED", "MEAN_RANGE", "STRENGTH_RANGE",
    "SUBSEED_STRENGTH_RANGE",
]


def fit_size_problem(size: object) -> str:
    """Why ``size`` is not a usable fit crop size, or ``""``."""
    lo, hi = FIT_SIZE_RANGE
    if isinstance(size, bool) or not isinstance(size, int) or not lo <= size <= hi:
        return f"size must be an integer in {lo}..{hi} pixels, got {size!r}"
    if size % FIT_SIZE_MULTIPLE:
        return (f"size must be a multiple of {FIT_SIZE_MULTIPLE} (the VAE downsamples 8x), "
                f"got {size}; try {size - size % 8 or 8}")
    return ""


def shape_problem(shape: tuple[int, ...]) -> str:
    """Why a leak of ``(C, H, W)`` is refused, or ``""``."""
    c, h, w = shape
    if min(c, h, w) < 1:
        return f"shape {shape} must be positive"
    if c > MAX_SAMPLE_CHANNELS or max(h, w) > MAX_SAMPLE_SIDE:
        return (f"shape {shape} is too large: at most {MAX_SAMPLE_CHANNELS} channels and "
                f"{MAX_SAMPLE_SIDE} latent pixels a side (4096 px images)")
    if c * h * w > MAX_SAMPLE_ELEMENTS:
        return f"shape {shape} is too large (at most {MAX_SAMPLE_ELEMENTS} values)"
    return ""
