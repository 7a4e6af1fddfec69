"""Low-frequency control: fixed DCT components of the leak, read from text, from a reference
latent, or from a target colour (DESIGN 5, "Fixed LF components").

A component is ``(channel, u, v)`` with ``u`` the vertical and ``v`` the horizontal
frequency; its value is the amplitude ``a`` of the pattern
``a * cos(pi (2y+1) u / 2H) cos(pi (2x+1) v / 2W)`` in latent units, the same at any size
(the DC term ``(c, 0, 0)`` is the channel's mean). ``(c, 0, 1)`` with ``a > 0`` is brighter
on the left for channel 0, ``(c, 1, 0)`` brighter at the top.

Text form (API ``components`` keys, infotext, CLI): ``"c:u,v"`` for a component and
``"0:0,1=0.5;1:1,0=-0.3"`` for a set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch

from .dct import lf_coefficients, lowfreq_basis
from .preview import linear_rgb_table
from .sampling import amplitude_scale

Component = tuple[int, int, int]
GRADIENTS = ((0, 1), (1, 0))  # left-right and top-bottom: the first gradients of each channel
GRADIENT_NAMES = {(0, 1): "left-right gradient", (1, 0): "top-bottom gradient"}
_KEY_RE = re.compile(r"\s*([0-9]{1,3})\s*:\s*([0-9]{1,3})\s*,\s*([0-9]{1,3})\s*")


class LowFreqError(ValueError):
    """A component, colour or reference that cannot be used; the message says why."""


def parse_key(key: object) -> Component:
    """``"0:0,1"`` (or a 3-sequence of ints) -> ``(0, 0, 1)``."""
    if isinstance(key, (tuple, list)) and len(key) == 3 and all(
            isinstance(k, int) and not isinstance(k, bool) for k in key):
        return int(key[0]), int(key[1]), int(key[2])
    match = _KEY_RE.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        text = repr(key) if len(repr(key)) <= 40 else repr(key)[:37] + "..."
        raise LowFreqError(f"component {text} must look like 'channel:u,v', e.g. '0:0,1'")
    return int(match[1]), int(match[2]), int(match[3])


def format_key(component: Component) -> str:
    c, u, v = component
    return f"{c}:{u},{v}"


def _num(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def format_components(components: Mapping[Component, float]) -> str:
    """``{(0,0,1): 0.5}`` -> ``"0:0,1=0.5"`` (sorted; ``;`` between components)."""
    return ";".join(f"{format_key(k)}={_num(v)}" for k, v in sorted(components.items()))


def parse_components(text: str) -> dict[Component, float]:
    """The inverse of :func:`format_components`; empty text gives ``{}``."""
    out: dict[Component, float] = {}
    for part in str(text).split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise LowFreqError(f"components must look like '0:0,1=0.5;1:1,0=-0.3', got "
                               f"{part.strip()!r}")
        try:
            number = float(value)
        except ValueError:
            raise LowFreqError(f"component {key.strip()} has no number: {value.strip()!r}"
                               ) from None
        if not math.isfinite(number):
            raise LowFreqError(f"component {key.strip()} must be a finite number")
        out[parse_key(key)] = number
    return out


# --- reading components from a latent -------------------------------------------------------

def amplitudes(latent: torch.Tensor, components: Sequence[Component]) -> dict[Component, float]:
    """The amplitudes of ``components`` in ``latent`` ``(C, H, W)``: the values that make a
    leak carry exactly those components of this latent (a reference image's look)."""
    c, h, w = latent.shape
    pairs = sorted({(u, v) for _, u, v in components})
    basis = lowfreq_basis(pairs, h, w, dtype=torch.float64)
    z = lf_coefficients(latent.double().cpu(), basis)  # (n, C)
    return {(ch, u, v): float(z[pairs.index((u, v)), ch]) * amplitude_scale(u, v, h, w)
            for ch, u, v in components}


def reference_components(latent: torch.Tensor, coords: Sequence[tuple[int, int]] | None
                         ) -> dict[Component, float]:
    """The fixed values a reference latent gives: its components on ``coords`` (a preset's
    LF set), or on the DC term and the first gradients (manual mode), for every channel."""
    pairs = list(coords) if coords else [(0, 0), *GRADIENTS]
    _, h, w = latent.shape
    pairs = [(u, v) for u, v in pairs if u < h and v < w]
    return amplitudes(latent, [(c, u, v) for c in range(latent.shape[0]) for u, v in pairs])


# --- colour target -------------------------------------------------------------------------------

def parse_colour(text: str) -> tuple[float, float, float]:
    """``"#aa6633"`` (or ``"aa6633"``, ``"#a63"``) -> RGB in [-1, 1] (``x / 127.5 - 1``)."""
    raw = str(text).strip().lstrip("#")
    if len(raw) == 3:
        raw = "".join(ch * 2 for ch in raw)
    if not re.fullmatch(r"[0-9a-fA-F]{6}", raw):
        raise LowFreqError(f"colour must be '#rrggbb', got {str(text)[:20]!r}")
    return tuple(int(raw[i:i + 2], 16) / 127.5 - 1.0 for i in (0, 2, 4))  # type: ignore[return-value]


def format_colour(rgb: Sequence[float]) -> str:
    values = [max(0, min(255, round((float(x) + 1.0) * 127.5))) for x in rgb]
    return "#" + "".join(f"{v:02x}" for v in values)


def colour_means(colour: str, family: str, fixed: Mapping[int, float] | None = None,
                 channels: int = 4) -> tuple[dict[int, float], str]:
    """Channel means whose colour under the family's linear latent-to-RGB map is ``colour``.

    Channels in ``fixed`` keep their value; the others take the least-norm solution of
    ``T^T m = rgb`` (3 equations, up to 4 unknowns). Returns the means of the free channels
    and the colour they predict (``#rrggbb``, clamped) — approximate: the linear map is the
    host's cheap preview, not the VAE decoder.
    """
    table = torch.tensor(linear_rgb_table(family), dtype=torch.float64)[:channels]  # (C, 3)
    target = torch.tensor(parse_colour(colour), dtype=torch.float64)
    fixed = dict(fixed or {})
    known = torch.zeros(channels, dtype=torch.float64)
    for ch, value in fixed.items():
        if 0 <= ch < channels:
            known[ch] = value
    free = [ch for ch in range(channels) if ch not in fixed]
    if not free:
        return {}, format_colour(table.T @ known)
    rhs = target - table.T @ known
    solution = torch.linalg.pinv(table[free].T) @ rhs
    means = {ch: float(solution[i]) for i, ch in enumerate(free)}
    for ch, value in means.items():
        known[ch] = value
    return means, format_colour((table.T @ known).clamp(-1, 1))


# --- a reference image from the API or the UI ---------------------------------------------------

MAX_REFERENCE_BYTES = 32 * 2**20
MAX_REFERENCE_PIXELS = 4096 * 4096


def decode_reference(value: object) -> object:
    """A reference image from a PIL image (the UI) or base64 PNG/JPEG text (the API,
    optionally a ``data:image/...;base64,`` URL), as an RGB PIL image. Size-capped."""
    import base64
    import binascii
    import io

    from PIL import Image

    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        if len(text) > MAX_REFERENCE_BYTES * 4 // 3 + 4:
            raise LowFreqError(f"reference_image is over {MAX_REFERENCE_BYTES // 2**20} MiB")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise LowFreqError("reference_image must be a base64-encoded PNG or JPEG") from None
        try:
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > MAX_REFERENCE_PIXELS:
                raise LowFreqError(f"reference_image is {image.width}x{image.height}; at most "
                                   f"{MAX_REFERENCE_PIXELS} pixels")
            image.load()
        except LowFreqError:
            raise
        except Exception as exc:  # Pillow's many decoder errors
            raise LowFreqError(f"reference_image is not a readable image ({exc})") from None
    else:
        raise LowFreqError("reference_image must be a base64-encoded PNG or JPEG")
    if image.width * image.height > MAX_REFERENCE_PIXELS:
        raise LowFreqError(f"reference image is {image.width}x{image.height}; at most "
                           f"{MAX_REFERENCE_PIXELS} pixels")
    return image.convert("RGB")


def reference_pixels(image: object, width: int, height: int) -> torch.Tensor:
    """A reference image as the VAE's input for a ``width`` x ``height`` generation: cropped
    to that aspect ratio, resized, a ``(1, 3, height, width)`` batch in [-1, 1]."""
    from PIL import Image, ImageOps

    from .images import to_tensor

    fitted = ImageOps.fit(image, (int(width), int(height)), Image.Resampling.BILINEAR)
    return to_tensor(fitted)[None]


def reference_hash(image: object) -> str:
    """First 10 hex of the sha256 of the image's RGB pixels and size (cache key, infotext)."""
    import hashlib

    digest = hashlib.sha256(f"{image.width}x{image.height}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:10]
