"""Import of statistics written by the paper's own code (DESIGN section 4, "Import").

That layout is a directory with ``stats.safetensors`` and ``statistic_type.txt`` (``pixel``
or ``dct+pixel``). It does not record its LF pairs: the paper's code takes the first ``n``
entries of numpy's unstable argsort of the radius grid, whose order of tied pairs depends on
the grid size, numpy's version and even the CPU's sort kernels. We reproduce that selection
with this machine's numpy, check the chosen *set* against the remainder mean (which has
exactly zero DCT content on the LF set by construction) and record the assumption about
the *order* in the preset's description. Users may hold such files; we never ship them.
"""

from __future__ import annotations

import os
from pathlib import Path

import safetensors
import torch

from .dct import Coord, dct2, lowfreq_coords, paper_lowfreq_coords
from .preset import Preset, PresetError

_PAPER_KEYS = {
    "pixel": ("mean_pixels", "var_pixels"),
    "dct+pixel": ("mean_lf_components", "cov_lf_components", "mean_hf_remainder",
                  "var_hf_remainder"),
}
# LF coefficients of the remainder mean are round-off (float32) relative to its other ones.
_ZERO_RTOL = 1e-4


def _column_major_ties(n: int, h: int, w: int) -> list[Coord]:
    cands = [(u, v) for u in range(min(h, n)) for v in range(min(w, n))]
    cands.sort(key=lambda c: (c[0] ** 2 + c[1] ** 2, c[1], c[0]))
    return cands[:n]


def _lf_residual(hf_mean: torch.Tensor, coords: list[Coord]) -> float:
    spec = dct2(hf_mean.double()).abs()
    ref = float(spec.max()) or 1.0
    return max(float(spec[:, u, v].max()) for u, v in coords) / ref


def infer_paper_coords(n: int, hf_mean: torch.Tensor) -> tuple[list[Coord], str]:
    """The LF pairs of a paper-layout ``dct+pixel`` file, and a note on how they were chosen."""
    h, w = hf_mean.shape[-2:]
    numpy_order = paper_lowfreq_coords(n, h, w)
    candidates = [("numpy's argsort on this machine", numpy_order),
                  ("row-major tie order", lowfreq_coords(n, h, w)),
                  ("column-major tie order", _column_major_ties(n, h, w))]
    for label, coords in candidates:
        if _lf_residual(hf_mean, coords) <= _ZERO_RTOL:
            note = (f"LF pairs assumed: the paper code's selection ({label}) at {h}x{w}; the set "
                    "was verified against the remainder mean, the order of tied pairs is an "
                    "assumption")
            return coords, note
    raise PresetError("the file's remainder mean does not match any LF selection of "
                      f"{n} components at {h}x{w}: it was not written by the paper's code, or "
                      "with another latent size")


def _read_paper_dir(folder: Path) -> tuple[str, dict[str, torch.Tensor]]:
    type_file, stats_file = folder / "statistic_type.txt", folder / "stats.safetensors"
    for f in (type_file, stats_file):
        if not f.is_file():
            raise PresetError(f"{folder.name}: missing {f.name} (expected the paper's layout: "
                              "stats.safetensors and statistic_type.txt)")
    kind = type_file.read_text(encoding="utf-8", errors="replace").strip()
    if kind not in _PAPER_KEYS:
        raise PresetError(f"{folder.name}: statistic_type.txt says {kind!r}; expected 'pixel' or "
                          "'dct+pixel'")
    try:
        with safetensors.safe_open(str(stats_file), framework="pt") as fh:
            keys = set(fh.keys())
            missing = [k for k in _PAPER_KEYS[kind] if k not in keys]
            if missing:
                raise PresetError(f"{folder.name}: stats.safetensors lacks {', '.join(missing)}")
            tensors = {k: fh.get_tensor(k).float() for k in _PAPER_KEYS[kind]}
    except PresetError:
        raise
    except Exception as exc:
        raise PresetError(f"{folder.name}: stats.safetensors is unreadable ({exc})") from None
    return kind, tensors


def import_paper_dir(folder: str | os.PathLike, *, model_family: str = "unknown",
                     vae: str = "unknown", scale_factor: float | None = None,
                     description: str = "") -> Preset:
    """Convert a paper-layout statistics directory into a validated :class:`Preset`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PresetError(f"{folder}: not a directory")
    kind, raw = _read_paper_dir(folder)
    if scale_factor is None:
        scale_factor = 0.13025 if model_family == "sdxl" else 0.18215
    notes = ["Imported from the paper's statistics layout; its image count (recorded as 0) and "
             "crop are unknown."]
    if kind == "pixel":
        mean, var = raw["mean_pixels"].squeeze(0), raw["var_pixels"].squeeze(0)
        if mean.ndim != 3:
            raise PresetError(f"{folder.name}: mean_pixels has shape {tuple(mean.shape)}; "
                              "expected (C, h, w)")
        tensors = {"mean": mean, "var": var}
        c, h, w = mean.shape
    else:
        hf_mean = raw["mean_hf_remainder"].squeeze(0)
        if hf_mean.ndim != 3:
            raise PresetError(f"{folder.name}: mean_hf_remainder has shape "
                              f"{tuple(hf_mean.shape)}; expected (C, h, w)")
        c, h, w = hf_mean.shape
        lf_mean = raw["mean_lf_components"].flatten()
        if lf_mean.numel() % c:
            raise PresetError(f"{folder.name}: {lf_mean.numel()} LF means do not divide into "
                              f"{c} channels")
        coords, note = infer_paper_coords(lf_mean.numel() // c, hf_mean)
        notes.append(note)
        tensors = {"lf_mean": lf_mean, "lf_cov": raw["cov_lf_components"],
                   "lf_coords": torch.tensor(coords, dtype=torch.int64),
                   "hf_mean": hf_mean, "hf_var": raw["var_hf_remainder"].squeeze(0)}
    if description:
        notes.insert(0, description)
    return Preset.create(kind, tensors, image_size=(h * 8, w * 8), images=0, skipped=0,
                         source=folder.name, model_family=model_family, vae=vae,
                         scale_factor=scale_factor, crop="center", encode="mean",
                         description=" ".join(notes))
