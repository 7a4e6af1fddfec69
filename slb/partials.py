"""Partial fits: the raw float64 accumulators of one shard, written to a file so shards fitted
on several machines merge into exactly the fit over their union (DESIGN 3.3).

A partial carries a random ``fit_id`` and the shard's preset metadata (source, VAE, scale
factor, model family, crop, encode mode, image size, skipped count). Loading checks
everything before use: a garbage, truncated or tampered file is a clear error, never a
traceback. Merging refuses the same shard twice (same ``fit_id`` or same bytes) and shards
whose metadata disagree (another VAE, size or model family).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch

from .files import FileRefused, atomic_write, printable, read_regular_file
from .fitting import FitAccumulator
from .preset import (
    KINDS,
    MAX_COMPONENTS,
    MAX_HEADER_BYTES,
    MAX_LATENT_SIDE,
    MODEL_FAMILIES,
    Preset,
    header_metadata,
    parse_header,
)

FORMAT = "slb-partial-1"
MAX_PARTIAL_BYTES = 1024 * 2**20
# Metadata that must agree between shards; ``source`` and ``skipped`` are combined instead.
SHARED_KEYS = ("image_size", "vae", "scale_factor", "model_family", "crop", "encode")


class PartialFitError(ValueError):
    """A partial-fit file that cannot be written, read or merged."""


@dataclass
class PartialFit:
    """One shard's accumulator, its metadata and the sha256 of its file."""

    accumulator: FitAccumulator
    metadata: dict[str, str] = field(default_factory=dict)
    sha256: str = ""


def partial_bytes(acc: FitAccumulator, metadata: dict[str, object] | None = None) -> bytes:
    """The file content of a partial fit (a new ``fit_id`` each call)."""
    if acc.count < 1:
        raise PartialFitError("a partial fit needs at least one image")
    if acc.kind == "pixel":
        parts = {"pixel.mean": acc.pixel.mean, "pixel.m2": acc.pixel.m2}
    else:
        parts = {"lf.mean": acc.lf.mean, "lf.c2": acc.lf.c2, "hf.mean": acc.hf.mean,
                 "hf.m2": acc.hf.m2,
                 "coords": torch.tensor(acc.coords, dtype=torch.int64).reshape(-1, 2)}
    meta = {k: str(v) for k, v in (metadata or {}).items() if v is not None}
    meta.update({"format": FORMAT, "kind": acc.kind, "count": str(acc.count),
                 "latent_shape": ",".join(map(str, acc.latent_shape)),
                 "fit_id": uuid.uuid4().hex})
    return safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in parts.items()},
                                  metadata=meta)


def save_partial(acc: FitAccumulator, path: str | os.PathLike,
                 metadata: dict[str, object] | None = None, overwrite: bool = False) -> Path:
    """Write a partial fit atomically; an existing file is kept unless ``overwrite``."""
    try:
        return atomic_write(path, partial_bytes(acc, metadata), overwrite=overwrite)
    except FileRefused as exc:
        raise PartialFitError(str(exc)) from None
    except OSError as exc:
        raise PartialFitError(f"cannot write {printable(path)}: {exc.strerror or exc}"
                              ) from None


def _tensor(parts: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], name: str
            ) -> torch.Tensor:
    t = parts.get(key)
    if t is None:
        raise PartialFitError(f"{name}: tensor {key} is missing")
    if tuple(t.shape) != shape or t.dtype != torch.float64:
        raise PartialFitError(f"{name}: tensor {key} is {t.dtype} {tuple(t.shape)}, expected "
                              f"float64 {shape}")
    if not bool(torch.isfinite(t).all()):
        raise PartialFitError(f"{name}: tensor {key} contains NaN or infinite values")
    return t


def _parse_shape(text: str, name: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise PartialFitError(f"{name}: latent_shape {text!r} is not C,h,w") from None
    if not all(0 < v <= MAX_LATENT_SIDE for v in (c, h, w)):
        raise PartialFitError(f"{name}: latent_shape {text!r} is out of range")
    return c, h, w


def load_partial(path: str | os.PathLike) -> PartialFit:
    """Read and check a partial fit; :class:`PartialFitError` says what is wrong."""
    name = printable(Path(path).name)
    try:
        data = read_regular_file(path, MAX_PARTIAL_BYTES)
    except FileRefused as exc:
        raise PartialFitError(str(exc)) from None
    try:
        header, _ = parse_header(data[:8 + MAX_HEADER_BYTES], len(data))
        meta = header_metadata(header)
        parts = safetensors.torch.load(data)
    except Exception:  # PresetError, or safetensors' own error types for garbage
        raise PartialFitError(f"{name} is not a partial fit written by slb (unreadable "
                              "safetensors file)") from None
    if meta.get("format") != FORMAT:
        raise PartialFitError(f"{name} is not a partial fit written by slb")
    kind = meta.get("kind")
    if kind not in KINDS:
        raise PartialFitError(f"{name}: kind {kind!r} is not one of {KINDS}")
    shape = _parse_shape(meta.get("latent_shape", ""), name)
    try:
        count = int(meta.get("count", ""))
    except ValueError:
        raise PartialFitError(f"{name}: count {meta.get('count')!r} is not an integer") from None
    if count < 1:
        raise PartialFitError(f"{name}: count {count} must be at least 1")
    if meta.get("model_family", "unknown") not in MODEL_FAMILIES:
        raise PartialFitError(f"{name}: model_family {meta.get('model_family')!r} is not one "
                              f"of {MODEL_FAMILIES}")
    if kind == "pixel":
        acc = FitAccumulator("pixel", shape)
        acc.pixel.mean = _tensor(parts, "pixel.mean", shape, name)
        acc.pixel.m2 = _tensor(parts, "pixel.m2", shape, name)
        acc.pixel.count = count
        m2s = [acc.pixel.m2]
    else:
        coords_t = parts.get("coords")
        if coords_t is None or coords_t.dtype != torch.int64 or coords_t.ndim != 2 \
                or coords_t.shape[1] != 2 or not 1 <= coords_t.shape[0] <= MAX_COMPONENTS:
            raise PartialFitError(f"{name}: tensor coords is missing or malformed")
        coords = [(int(u), int(v)) for u, v in coords_t.tolist()]
        if any(not (0 <= u < shape[1] and 0 <= v < shape[2]) for u, v in coords) or \
                len(set(coords)) != len(coords):
            raise PartialFitError(f"{name}: tensor coords holds invalid frequency pairs")
        acc = FitAccumulator("dct+pixel", shape, coords=coords)
        dim = len(coords) * shape[0]
        acc.lf.mean = _tensor(parts, "lf.mean", (dim,), name)
        acc.lf.c2 = _tensor(parts, "lf.c2", (dim, dim), name)
        acc.hf.mean = _tensor(parts, "hf.mean", shape, name)
        acc.hf.m2 = _tensor(parts, "hf.m2", shape, name)
        acc.lf.count = acc.hf.count = count
        m2s = [acc.hf.m2, torch.diagonal(acc.lf.c2)]
    if any(bool((m2 < 0).any()) for m2 in m2s):
        raise PartialFitError(f"{name}: negative sums of squares (the file was altered)")
    return PartialFit(acc, meta, hashlib.sha256(data).hexdigest())


def merge_partials(paths: list[str | os.PathLike]) -> PartialFit:
    """Merge shards (exactly the fit over their union), refusing duplicates and shards whose
    metadata disagree; the result's metadata joins sources and sums skipped counts."""
    if not paths:
        raise PartialFitError("no partial fits given")
    loaded = [load_partial(p) for p in paths]
    seen: dict[str, str] = {}
    for path, part in zip(paths, loaded, strict=True):
        for key in (part.sha256, part.metadata.get("fit_id", "")):
            if key and key in seen:
                raise PartialFitError(f"{printable(path)} is the same shard as {seen[key]}: "
                                      "each partial fit may be merged once")
            if key:
                seen[key] = printable(path)
    first = loaded[0]
    merged = FitAccumulator(first.accumulator.kind, first.accumulator.latent_shape,
                            first.accumulator.n_components,
                            coords=first.accumulator.coords or None)
    for path, part in zip(paths, loaded, strict=True):
        for key in SHARED_KEYS:
            a, b = first.metadata.get(key), part.metadata.get(key)
            if a != b:
                raise PartialFitError(f"{printable(path)} has {key}={b!r} but "
                                      f"{printable(paths[0])} has {a!r}: shards must be fitted "
                                      "alike")
        try:
            merged.merge(part.accumulator)
        except ValueError as exc:
            raise PartialFitError(f"{printable(path)}: {exc}") from None
    meta = {k: first.metadata[k] for k in SHARED_KEYS if k in first.metadata}
    sources = sorted({p.metadata.get("source", "") for p in loaded} - {""})
    meta["source"] = "+".join(sources)[:200]
    meta["skipped"] = str(sum(int(p.metadata.get("skipped", "0") or 0) for p in loaded))
    return PartialFit(merged, meta)


def preset_from_partial(part: PartialFit, description: str = "",
                        model_family: str | None = None) -> Preset:
    """The preset of a (merged) partial fit, keeping its metadata."""
    meta = part.metadata
    acc = part.accumulator
    size = meta.get("image_size", "")
    try:
        h, w = (int(v) for v in size.split(","))
    except ValueError:
        h = w = int(size) if size.isdigit() else acc.latent_shape[1] * 8
    kwargs: dict[str, object] = {
        "image_size": (h, w), "skipped": int(meta.get("skipped", "0") or 0),
        "source": meta.get("source", ""), "vae": meta.get("vae", "unknown"),
        "model_family": model_family or meta.get("model_family", "unknown"),
        "crop": meta.get("crop", "center"), "encode": meta.get("encode", "mean"),
        "description": description,
    }
    if meta.get("scale_factor"):
        kwargs["scale_factor"] = float(meta["scale_factor"])
    return acc.to_preset(**kwargs)
