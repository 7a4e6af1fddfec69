"""A quick look at a latent without a VAE: a fixed linear map from latent channels to RGB.

The coefficients are the widely used least-squares fits for the SD 1.x/2.x and SDXL latent
spaces (the same numbers the WebUI's "cheap approximation" uses). Good enough to see
brightness and colour of a leak; not a decoder.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# Rows: latent channels 0..3; columns: R, G, B.
_SD1_TO_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173),
               (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
_SDXL_TO_RGB = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250),
                (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088))


def linear_rgb_table(model_family: str = "sd1") -> tuple[tuple[float, float, float], ...]:
    """The ``(C=4, 3)`` linear latent-to-RGB map of a family (RGB in [-1, 1])."""
    return _SDXL_TO_RGB if model_family == "sdxl" else _SD1_TO_RGB


def latent_to_rgb(latent: torch.Tensor, model_family: str = "sd1") -> np.ndarray:
    """``(4, h, w)`` latent -> ``(h, w, 3)`` uint8 image by the linear approximation."""
    if latent.ndim != 3 or latent.shape[0] != 4:
        raise ValueError(f"the preview needs a 4-channel latent (4, h, w), got "
                         f"{tuple(latent.shape)}")
    table = torch.tensor(linear_rgb_table(model_family), dtype=torch.float32)
    rgb = torch.einsum("chw,ck->hwk", latent.float().cpu(), table)
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def preview_image(latents: list[torch.Tensor], model_family: str = "sd1", scale: int = 4,
                  gap: int = 4) -> Image.Image:
    """Latents side by side as one RGB image, each enlarged ``scale`` times (nearest)."""
    return side_by_side([latent_to_rgb(t, model_family) for t in latents], scale, gap)


def side_by_side(arrays: list[np.ndarray], scale: int | None = None, gap: int = 8
                 ) -> Image.Image:
    """``(h, w, 3)`` uint8 images in a row on white, enlarged ``scale`` times (nearest;
    default: to about 256 px high)."""
    tiles = [Image.fromarray(a) for a in arrays]
    if scale is None:
        scale = max(1, 256 // max(tiles[0].height, 1))
    tiles = [t.resize((t.width * scale, t.height * scale), Image.NEAREST) for t in tiles]
    width = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    out = Image.new("RGB", (width, max(t.height for t in tiles)), (255, 255, 255))
    x = 0
    for t in tiles:
        out.paste(t, (x, 0))
        x += t.width + gap
    return out
