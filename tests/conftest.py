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


class TinyEncoder(torch.nn.Module):
    """A fixed random-weight conv encoder: 8x downsampling, 4 output channels.

    Stands in for a VAE encoder; its weights come from a fixed seed, so latents are repeatable.
    """

    def __init__(self, seed: int = 1234) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.convs = torch.nn.ModuleList([
            torch.nn.Conv2d(3, 8, 4, stride=2, padding=1),
            torch.nn.Conv2d(8, 8, 4, stride=2, padding=1),
            torch.nn.Conv2d(8, 4, 4, stride=2, padding=1),
        ])
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = torch.tanh(x)
        return x * 2.0


def make_encoder(device: torch.device | str = "cpu") -> TinyEncoder:
    """Factory for ``python -m slb fit --encoder tests.conftest:make_encoder``."""
    return TinyEncoder().to(device).eval()


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
