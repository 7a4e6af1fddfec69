"""Shared fixtures: the coco128 images, a fixed random-weight encoder, small presets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the stand-in WebUI's fixtures (fresh_host, fresh_host_factory), for the extension tests
from standin.fixtures import fresh_host, fresh_host_factory  # noqa: E402, F401

from slb.fitting import FitAccumulator  # noqa: E402
from tests.encoders import TinyEncoder, make_encoder  # noqa: E402, F401


def _find_coco128() -> Path:
    """The shared natural-image set: $SLB_COCO128, else ../shared/data/coco128 beside the
    checkout, else the workplace's /work/shared copy."""
    candidates = [os.environ.get("SLB_COCO128"), ROOT.parent / "shared" / "data" / "coco128",
                  Path("/work/shared/data/coco128")]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return ROOT.parent / "shared" / "data" / "coco128"


COCO128 = _find_coco128()


@pytest.fixture(scope="session")
def coco128() -> Path:
    if not COCO128.is_dir():
        pytest.fail(f"the coco128 test images are missing at {COCO128} (set SLB_COCO128)")
    return COCO128


def photo_folder(coco128: Path, folder: Path, count: int, broken: str = "") -> Path:
    """``count`` real photos copied into ``folder``, plus an unreadable file named ``broken``."""
    import shutil

    from slb.images import list_image_files

    folder.mkdir(parents=True, exist_ok=True)
    for f in list_image_files(coco128)[:count]:
        shutil.copy(f, folder / f.name)
    if broken:
        (folder / broken).write_bytes(b"\xff\xd8 not an image")
    return folder


@pytest.fixture(scope="session")
def encoder() -> TinyEncoder:
    return make_encoder()


def synthetic_latents(n: int, shape: tuple[int, int, int] = (4, 16, 16), seed: int = 0
                      ) -> torch.Tensor:
    """Latent-like samples: strong per-channel means and a smooth gradient, plus detail."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = shape
    base = torch.randn(n, c, 1, 1, generator=gen) * 0.9 + torch.tensor(
        [0.5, -0.3, 0.2, -0.6])[:c].view(1, c, 1, 1)
    ramp = torch.linspace(-1, 1, h).view(1, 1, h, 1) * torch.randn(n, c, 1, 1, generator=gen)
    return base + 0.5 * ramp + 0.4 * torch.randn(n, c, h, w, generator=gen)


def make_preset(kind: str = "dct+pixel", n: int = 3, shape: tuple[int, int, int] = (4, 16, 16),
                count: int = 400, seed: int = 0, **meta):
    acc = FitAccumulator(kind, shape, n)
    acc.update(synthetic_latents(count, shape, seed))
    meta.setdefault("image_size", (shape[1] * 8, shape[2] * 8))
    return acc.to_preset(**meta)


@pytest.fixture
def dct_preset():
    return make_preset("dct+pixel", 6)


@pytest.fixture
def pixel_preset():
    return make_preset("pixel")
