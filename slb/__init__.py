"""Signal-leak bias for Stable Diffusion: host-independent library.

Implements "Exploiting the Signal-Leak Bias in Diffusion Models" (Everaert et al., WACV 2024)
from its maths: fit the distribution of clean latents of a set of images, sample a leak from it
and start generation from ``sqrt(abar_T) * leak + sqrt(1 - abar_T) * noise``.
No WebUI import anywhere in this package.
"""

__version__ = "0.1.0"

from .dct import dct2, idct2, lowfreq_coords  # noqa: E402
from .mixing import StartConvention, sampler_input, swap_lowfreq  # noqa: E402
from .preset import Preset, PresetError, load_preset, save_preset  # noqa: E402
from .sampling import IncompatiblePresetError, LeakSampler  # noqa: E402

__all__ = [
    "IncompatiblePresetError", "LeakSampler", "Preset", "PresetError", "StartConvention",
    "__version__", "dct2", "idct2", "load_preset", "lowfreq_coords", "sampler_input",
    "save_preset", "swap_lowfreq",
]
