"""Procedural outdoor scenes: training data whose statistics are known.

Each scene is a sky and a ground split by a horizon, both vertical gradients, a light source
(sun or moon with a glow), a few shapes (hills, discs, boxes), a colour cast and an
exposure set by the time of day, from night to noon. The spread of per-image brightness and
colour is set to be about as wide as photographs have (coco128 at 128 px: brightness mean
0.43, spread 0.12; channel means spread 0.12 to 0.15), see ``demo/README.md``.

Everything is drawn from one seed, image by image, so a scene depends only on the seed and
its index. ``style="dark"`` draws from the same generator with the time of day restricted to
night and dusk: the "style" subset of the paper's experiments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

STYLES = ("all", "dark")

# Sky colours (top, at the horizon) at night, dawn or dusk, and noon, linear RGB in [0, 1].
_SKY = {
    "night": ((0.02, 0.03, 0.10), (0.08, 0.08, 0.20)),
    "dusk": ((0.20, 0.22, 0.45), (0.95, 0.55, 0.30)),
    "noon": ((0.25, 0.50, 0.90), (0.75, 0.85, 0.98)),
}
# Ground colours: grass, soil, sand, rock, snow, water.
_GROUND = np.array([(0.25, 0.45, 0.15), (0.40, 0.28, 0.18), (0.80, 0.70, 0.50),
                    (0.45, 0.45, 0.45), (0.92, 0.93, 0.97), (0.15, 0.30, 0.45)])


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return a + (b - a) * t


def _sky_colours(day: float) -> tuple[np.ndarray, np.ndarray]:
    """Sky (top, horizon) for a time of day in [0, 1]: 0 night, 0.35 dusk, 1 noon."""
    night, dusk, noon = (np.array(_SKY[k]) for k in ("night", "dusk", "noon"))
    if day < 0.35:
        pair = _mix(night, dusk, day / 0.35)
    else:
        pair = _mix(dusk, noon, (day - 0.35) / 0.65)
    return pair[0], pair[1]


def scene(rng: np.random.Generator, size: int = 128, style: str = "all") -> np.ndarray:
    """One scene as float32 (size, size, 3) in [0, 1]."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    day = rng.uniform(0.0, 0.3) if style == "dark" else rng.beta(1.3, 1.1)
    horizon = rng.uniform(0.3, 0.75)

    top, low = _sky_colours(day)
    top = top * rng.uniform(0.8, 1.2, 3)
    t = np.clip(y / horizon, 0, 1)[..., None] ** rng.uniform(0.6, 1.6)
    image = top + (low - top) * t

    ground = _GROUND[rng.integers(len(_GROUND))] * rng.uniform(0.7, 1.2, 3)
    ground_light = 0.15 + 0.85 * day ** 0.7
    g = np.clip((y - horizon) / max(1 - horizon, 1e-3), 0, 1)[..., None]
    shade = rng.uniform(0.5, 1.1)  # darker (or lighter) towards the bottom
    ground_img = ground * ground_light * (1 + (shade - 1) * g)
    below = (y >= horizon)[..., None]
    image = np.where(below, ground_img, image)

    # hills: smooth bumps on the horizon, a darker version of the ground colour
    for _ in range(rng.integers(0, 3)):
        cx, width, height = rng.uniform(0, 1), rng.uniform(0.1, 0.5), rng.uniform(0.03, 0.25)
        bump = horizon - height * np.exp(-((x - cx) / width) ** 2)
        hill = (y >= bump) & (y < horizon)
        colour = ground * ground_light * rng.uniform(0.4, 0.9)
        image = np.where(hill[..., None], colour, image)

    # the light source: a disc and a glow, brighter by day; at night a pale moon
    sx, sy = rng.uniform(0.05, 0.95), rng.uniform(0.05, max(horizon - 0.05, 0.1))
    radius = rng.uniform(0.03, 0.08)
    dist = np.hypot(x - sx, y - sy)
    light = np.array((1.0, 0.95, 0.8)) if day > 0.3 else np.array((0.85, 0.88, 1.0))
    glow = np.exp(-dist / rng.uniform(0.08, 0.3))[..., None] * (0.15 + 0.5 * day)
    sky_mask = (~below) * 1.0
    image = image + light * glow * sky_mask
    image = np.where(((dist < radius) & (y < horizon))[..., None], light, image)

    # shapes in front: discs and boxes with a random colour, lit by the time of day
    for _ in range(rng.integers(0, 5)):
        colour = rng.uniform(0.05, 0.95, 3) * (0.2 + 0.8 * day)
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0.2, 1), rng.uniform(0.03, 0.15)
        if rng.random() < 0.5:
            inside = np.hypot(x - cx, y - cy) < r
        else:
            inside = (np.abs(x - cx) < r) & (np.abs(y - cy) < r * rng.uniform(0.5, 2))
        image = np.where(inside[..., None], colour, image)

    # colour cast (white balance) and exposure, then the display curve
    image = image * np.exp(rng.normal(0, 0.12, 3))
    image = image * np.exp(rng.normal(-0.1, 0.2))
    image = np.clip(image, 0, 1) ** (1 / 1.25)
    return image.astype(np.float32)


def scenes(n: int, seed: int, size: int = 128, style: str = "all") -> np.ndarray:
    """``n`` scenes as uint8 (n, size, size, 3); scene ``i`` depends only on seed and i."""
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        out[i] = np.round(scene(rng, size, style) * 255).astype(np.uint8)
    return out


def brightness_and_colour(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: mean brightness and each channel's mean, in [0, 1]."""
    means = images.reshape(len(images), -1, 3).astype(np.float64).mean(1) / 255
    return means.mean(1), means


def main() -> None:
    parser = argparse.ArgumentParser(description="Write procedural scenes as PNG files.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("-n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--style", choices=STYLES, default="all")
    args = parser.parse_args()
    from PIL import Image

    args.out_dir.mkdir(parents=True, exist_ok=True)
    images = scenes(args.n, args.seed, args.size, args.style)
    for i, image in enumerate(images):
        Image.fromarray(image).save(args.out_dir / f"scene-{i:05d}.png")
    bright, colour = brightness_and_colour(images)
    print(f"{args.n} scenes in {args.out_dir}: brightness mean {bright.mean():.3f} "
          f"spread {bright.std():.3f}; channel means {np.round(colour.mean(0), 3)} "
          f"spreads {np.round(colour.std(0), 3)}")


if __name__ == "__main__":
    main()
