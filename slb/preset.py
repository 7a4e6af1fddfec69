"""The preset file: one ``<name>.safetensors`` per preset (DESIGN section 4).

Loading validates everything and never unpickles: the file is parsed as safetensors bytes.
Saving is atomic (temporary file in the same folder, then a rename) and refuses unsafe names.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch

from . import __version__
from .dct import Coord
from .files import ExistsError, FileRefused, atomic_write, open_regular_file

SLB_FORMAT = 1
KINDS = ("pixel", "dct+pixel")
MODEL_FAMILIES = ("sd1", "sd2", "sdxl", "unknown")
ENCODE_MODES = ("mean", "sample")
TENSOR_KEYS = {
    "pixel": ("mean", "var"),
    "dct+pixel": ("lf_mean", "lf_cov", "lf_coords", "hf_mean", "hf_var"),
}
REQUIRED_METADATA = (
    "slb_format", "kind", "n_components", "latent_shape", "image_size", "images", "skipped",
    "source", "model_family", "vae", "scale_factor", "created", "slb_version", "crop", "encode",
)
PRESET_SUFFIX = ".safetensors"
MAX_NAME_LENGTH = 64
_NAME_RE = re.compile(r"[A-Za-z0-9 _.\-]+")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                     *(f"lpt{i}" for i in range(1, 10))}
_CROP_RE = re.compile(r"center|random:-?\d+")
# Relative tolerance for the covariance symmetry check (float32 round-off is far below this).
_SYMMETRY_RTOL = 1e-5
# Per dimension, relative to the largest eigenvalue: a little above float32's epsilon.
_PSD_RTOL = 2.4e-7
# Limits on what a preset scan reads, checked from the file's type and header first.
MAX_PRESET_BYTES = 256 * 2**20
MAX_HEADER_BYTES = 2**20
_ST_DTYPES = {"F32": torch.float32, "I64": torch.int64}
MAX_LATENT_SIDE = 1024  # 8192 px images, 1024 channels: beyond any model in use
MAX_COMPONENTS = 1024


class PresetError(ValueError):
    """A preset that cannot be used; the message names the file and the reason."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe preset name, else raise :class:`PresetError`.

    Allowed: letters, digits, space, ``_``, ``-``, ``.``; not starting with ``.``; at most 64
    characters; no leading/trailing space or trailing dot (both vanish on Windows) and no
    Windows device name. A name is never interpreted as a path.
    """
    if not isinstance(name, str) or not name:
        raise PresetError("preset name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise PresetError(f"preset name is {len(name)} characters long; at most "
                          f"{MAX_NAME_LENGTH} are allowed")
    if not _NAME_RE.fullmatch(name):
        bad = sorted({ch for ch in name if not _NAME_RE.fullmatch(ch)})
        raise PresetError(f"preset name {name!r} contains {''.join(bad)!r}: only letters, digits, "
                          "space, '_', '-' and '.' are allowed")
    if name.startswith("."):
        raise PresetError(f"preset name {name!r} must not start with '.'")
    if name != name.strip() or name.endswith("."):
        raise PresetError(f"preset name {name!r} must not start or end with a space or end "
                          "with '.'")
    if name.split(".")[0].strip().lower() in _WINDOWS_RESERVED:
        raise PresetError(f"preset name {name!r} is a reserved device name on Windows")
    return name


def _parse_ints(text: str, count: int, key: str) -> tuple[int, ...]:
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != count:
        raise PresetError(f"metadata {key}={text!r} must have {count} comma-separated integers")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise PresetError(f"metadata {key}={text!r} must hold integers") from None
    if any(v <= 0 for v in values):
        raise PresetError(f"metadata {key}={text!r} must be positive")
    return values


def _int_meta(meta: dict[str, str], key: str, minimum: int = 0) -> int:
    try:
        value = int(meta[key])
    except ValueError:
        raise PresetError(f"metadata {key}={meta[key]!r} is not an integer") from None
    if value < minimum:
        raise PresetError(f"metadata {key}={value} must be at least {minimum}")
    return value


def _validate_metadata(meta: dict[str, str], kind: str) -> tuple[int, int, int, int]:
    """Check every metadata entry; return ``(C, h, w, n_components)``."""
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise PresetError(f"missing metadata key(s): {', '.join(missing)}")
    fmt = _int_meta(meta, "slb_format", 1)
    if fmt > SLB_FORMAT:
        raise PresetError(f"slb_format {fmt} is newer than this version understands "
                          f"({SLB_FORMAT}); update the extension")
    if meta["kind"] not in KINDS or meta["kind"] != kind:
        raise PresetError(f"metadata kind={meta['kind']!r} is not one of {KINDS}")
    if meta["model_family"] not in MODEL_FAMILIES:
        raise PresetError(f"metadata model_family={meta['model_family']!r} is not one of "
                          f"{MODEL_FAMILIES}")
    if meta["encode"] not in ENCODE_MODES:
        raise PresetError(f"metadata encode={meta['encode']!r} is not one of {ENCODE_MODES}")
    if not _CROP_RE.fullmatch(meta["crop"]):
        raise PresetError(f"metadata crop={meta['crop']!r} is not 'center' or "
                          "'random:<seed>'")
    if any(sep in meta["source"] for sep in ("/", "\\")):
        raise PresetError("metadata source must be a folder base name, not a path")
    try:
        scale = float(meta["scale_factor"])
    except ValueError:
        raise PresetError(f"metadata scale_factor={meta['scale_factor']!r} is not a "
                          "number") from None
    if not math.isfinite(scale) or scale <= 0:
        raise PresetError(f"metadata scale_factor={scale} must be positive")
    try:
        _dt.datetime.fromisoformat(meta["created"].replace("Z", "+00:00"))
    except ValueError:
        raise PresetError(f"metadata created={meta['created']!r} is not ISO 8601") from None
    _int_meta(meta, "images")
    _int_meta(meta, "skipped")
    c, h, w = _parse_ints(meta["latent_shape"], 3, "latent_shape")
    if max(c, h, w) > MAX_LATENT_SIDE:
        raise PresetError(f"metadata latent_shape={meta['latent_shape']!r} is too large "
                          f"(at most {MAX_LATENT_SIDE} per axis)")
    _parse_ints(meta["image_size"], 2, "image_size")
    n = _int_meta(meta, "n_components")
    if kind == "pixel" and n != 0:
        raise PresetError(f"a pixel preset must have n_components=0, not {n}")
    if kind == "dct+pixel" and not 1 <= n <= min(h * w, MAX_COMPONENTS):
        raise PresetError(f"n_components={n} is out of range for a {h}x{w} latent "
                          f"(1..{min(h * w, MAX_COMPONENTS)})")
    return c, h, w, n


def expected_tensors(meta: dict[str, str], kind: str
                     ) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The tensors a preset with this metadata must hold: name -> (shape, dtype).

    Validates the metadata first (:class:`PresetError` names the problem).
    """
    c, h, w, n = _validate_metadata(meta, kind)
    f32 = torch.float32
    if kind == "pixel":
        return {"mean": ((c, h, w), f32), "var": ((c, h, w), f32)}
    return {"lf_mean": ((n * c,), f32), "lf_cov": ((n * c, n * c), f32),
            "lf_coords": ((n, 2), torch.int64), "hf_mean": ((c, h, w), f32),
            "hf_var": ((c, h, w), f32)}


@dataclass
class Preset:
    """Statistics of clean latents plus their metadata (all strings, as stored)."""

    kind: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    name: str = ""
    path: Path | None = None
    sha256: str = ""
    _coords: list[Coord] | None = field(default=None, repr=False)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def create(cls, kind: str, tensors: dict[str, torch.Tensor], *, image_size: tuple[int, int],
               images: int, skipped: int = 0, source: str = "", model_family: str = "unknown",
               vae: str = "unknown", scale_factor: float = 0.18215, crop: str = "center",
               encode: str = "mean", description: str = "", name: str = "") -> Preset:
        """Build a preset from fitted tensors, filling the bookkeeping metadata."""
        if kind not in KINDS:
            raise PresetError(f"unknown preset kind {kind!r}; expected one of {KINDS}")
        ref = tensors["mean"] if kind == "pixel" else tensors["hf_mean"]
        n = 0 if kind == "pixel" else int(tensors["lf_coords"].shape[0])
        meta = {
            "slb_format": str(SLB_FORMAT),
            "kind": kind,
            "n_components": str(n),
            "latent_shape": ",".join(str(s) for s in ref.shape),
            "image_size": f"{image_size[0]},{image_size[1]}",
            "images": str(int(images)),
            "skipped": str(int(skipped)),
            "source": os.path.basename(os.path.normpath(source)) if source else "",
            "model_family": model_family,
            "vae": vae or "unknown",
            "scale_factor": repr(float(scale_factor)),
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "slb_version": __version__,
            "crop": crop,
            "encode": encode,
        }
        if description:
            meta["description"] = description
        stored = {k: (v.detach().to("cpu", torch.int64) if k == "lf_coords"
                      else v.detach().to("cpu", torch.float32)).contiguous()
                  for k, v in tensors.items()}
        preset = cls(kind=kind, tensors=stored, metadata=meta, name=name)
        preset.validate()
        return preset

    # --- views --------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return _parse_ints(self.metadata["latent_shape"], 3, "latent_shape")  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return self.latent_shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        return _parse_ints(self.metadata["image_size"], 2, "image_size")  # type: ignore[return-value]

    @property
    def n_components(self) -> int:
        return int(self.metadata["n_components"])

    @property
    def model_family(self) -> str:
        return self.metadata.get("model_family", "unknown")

    @property
    def images(self) -> int:
        return int(self.metadata.get("images", "0"))

    @property
    def coords(self) -> list[Coord]:
        """The LF pairs ``(u, v)`` (empty for ``pixel`` presets)."""
        if self._coords is None:
            lf = self.tensors.get("lf_coords")
            self._coords = [] if lf is None else [(int(u), int(v)) for u, v in lf.tolist()]
        return self._coords

    @property
    def short_hash(self) -> str:
        """First 10 hex digits of the file's sha256 (``""`` for an unsaved preset)."""
        return self.sha256[:10]

    def summary(self) -> str:
        """One line: kind, n, latent and image size, images, model family."""
        c, h, w = self.latent_shape
        ih, iw = self.image_size
        n = f", n={self.n_components}" if self.kind == "dct+pixel" else ""
        family = "family unknown" if self.model_family == "unknown" else self.model_family
        return (f"{self.kind}{n}, latent {c}x{h}x{w} ({iw}x{ih} px), {self.images} images, "
                f"{family}")

    # --- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`PresetError` naming the first problem found."""
        expected = expected_tensors(self.metadata, self.kind)
        missing = [k for k in expected if k not in self.tensors]
        if missing:
            raise PresetError(f"missing tensor(s) for a {self.kind} preset: {', '.join(missing)}")
        extra = sorted(set(self.tensors) - set(expected))
        if extra:
            raise PresetError(f"unexpected tensor(s) for a {self.kind} preset: {', '.join(extra)}")
        for key, (shape, want) in expected.items():
            t = self.tensors[key]
            if tuple(t.shape) != shape:
                raise PresetError(f"tensor {key} has shape {tuple(t.shape)}, expected {shape} "
                                  f"from the metadata")
            if t.dtype != want:
                raise PresetError(f"tensor {key} has dtype {t.dtype}, expected {want}")
            if want == torch.float32 and not bool(torch.isfinite(t).all()):
                raise PresetError(f"tensor {key} contains NaN or infinite values")
        for key in ("var", "hf_var"):
            if key in self.tensors and bool((self.tensors[key] < 0).any()):
                raise PresetError(f"tensor {key} has negative variances")
        if self.kind == "dct+pixel":
            _, h, w = self.latent_shape
            self._validate_lf(self.n_components, h, w)
        self._coords = None

    def _validate_lf(self, n: int, h: int, w: int) -> None:
        coords = self.tensors["lf_coords"]
        if bool((coords < 0).any()) or bool((coords[:, 0] >= h).any()) or bool(
                (coords[:, 1] >= w).any()):
            raise PresetError(f"tensor lf_coords has pairs outside the {h}x{w} latent")
        if len({tuple(p) for p in coords.tolist()}) != n:
            raise PresetError("tensor lf_coords repeats a frequency pair")
        if [0, 0] not in coords.tolist():
            raise PresetError("tensor lf_coords lacks the DC pair (0, 0)")
        cov = self.tensors["lf_cov"].double()
        scale = float(cov.abs().max()) or 1.0
        asym = float((cov - cov.T).abs().max())
        if asym > _SYMMETRY_RTOL * scale:
            raise PresetError(f"tensor lf_cov is not symmetric (max |C - C^T| = {asym:.3g})")
        if bool((torch.diagonal(cov) < 0).any()):
            raise PresetError("tensor lf_cov has negative variances on its diagonal")
        # A covariance is positive semi-definite. Eigenvalues below zero by more than float32
        # storage round-off (at most ~dim * eps * the largest eigenvalue) mean the file is
        # not a covariance: sampling would have to change it silently.
        evals = torch.linalg.eigvalsh((cov + cov.T) / 2)
        top = float(evals.abs().max()) if evals.numel() else 0.0
        lowest = float(evals.min()) if evals.numel() else 0.0
        if lowest < -_PSD_RTOL * cov.shape[0] * top:
            raise PresetError(f"tensor lf_cov is not positive semi-definite (eigenvalue "
                              f"{lowest:.3g}, largest {top:.3g}); it is not a covariance")


# --- reading ----------------------------------------------------------------------------

def parse_header(head: bytes, file_size: int) -> tuple[dict, int]:
    """The safetensors JSON header of a file of ``file_size`` bytes starting with ``head``
    (at least its first 8 bytes); returns the header and its length."""
    if file_size < 8 or len(head) < 8:
        raise PresetError("file is too short to be a safetensors file")
    (length,) = struct.unpack("<Q", head[:8])
    if length > file_size - 8 or length > MAX_HEADER_BYTES:
        raise PresetError("file is not a valid safetensors file (bad header length)")
    if len(head) < 8 + length:
        raise PresetError("file is not a valid safetensors file (truncated header)")
    try:
        header = json.loads(head[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise PresetError("file is not a valid safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise PresetError("file is not a valid safetensors file (header is not an object)")
    return header, length


def header_metadata(header: dict) -> dict[str, str]:
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise PresetError("safetensors metadata is not a string map")
    return {str(k): v for k, v in meta.items()}


def _check_declared_tensors(header: dict, meta: dict[str, str], data_bytes: int) -> str:
    """Check the tensors the header declares against what the metadata implies, before any
    tensor is read: names, dtypes, shapes, and byte ranges that tile the data exactly."""
    kind = meta.get("kind", "")
    if kind not in KINDS:
        raise PresetError(f"metadata kind={kind!r} is missing or not one of {KINDS}"
                          if kind else "missing metadata key(s): kind")
    expected = expected_tensors(meta, kind)
    declared = {k: v for k, v in header.items() if k != "__metadata__"}
    missing = [k for k in expected if k not in declared]
    if missing:
        raise PresetError(f"missing tensor(s) for a {kind} preset: {', '.join(missing)}")
    extra = sorted(set(declared) - set(expected))
    if extra:
        raise PresetError(f"unexpected tensor(s) for a {kind} preset: {', '.join(extra)}")
    spans = []
    for key, (shape, dtype) in expected.items():
        entry = declared[key]
        if not isinstance(entry, dict):
            raise PresetError(f"tensor {key} has an unreadable header entry")
        got_dtype = _ST_DTYPES.get(str(entry.get("dtype")))
        if got_dtype != dtype:
            raise PresetError(f"tensor {key} has dtype {entry.get('dtype')}, expected {dtype}")
        if entry.get("shape") != list(shape):
            raise PresetError(f"tensor {key} has shape {entry.get('shape')}, expected "
                              f"{shape} from the metadata")
        offsets = entry.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise PresetError(f"tensor {key} has no valid data offsets")
        if offsets[1] - offsets[0] != math.prod(shape) * (8 if dtype == torch.int64 else 4):
            raise PresetError(f"tensor {key} declares {offsets[1] - offsets[0]} bytes for "
                              f"shape {shape}")
        spans.append(tuple(offsets))
    position = 0
    for begin, finish in sorted(spans):
        if begin != position:
            raise PresetError("file is not a valid safetensors file (tensor data overlaps or "
                              "has gaps)")
        position = finish
    if position != data_bytes:
        raise PresetError(f"file is not a valid safetensors file ({data_bytes} data bytes, "
                          f"the header declares {position})")
    return kind


def preset_from_bytes(data: bytes, name: str = "") -> Preset:
    """Parse and validate preset bytes (safetensors), raising :class:`PresetError`."""
    header, length = parse_header(data[:8 + MAX_HEADER_BYTES], len(data))
    meta = header_metadata(header)
    kind = _check_declared_tensors(header, meta, len(data) - 8 - length)
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise PresetError(f"file is not a valid safetensors file ({exc})") from None
    preset = Preset(kind=kind, tensors=tensors, metadata=meta, name=name,
                    sha256=hashlib.sha256(data).hexdigest())
    preset.validate()
    return preset


def read_preset_file(path: str | os.PathLike, max_bytes: int = MAX_PRESET_BYTES) -> bytes:
    """The bytes of a preset file, refusing before reading anything large or odd.

    The file's type is checked without blocking (a FIFO or device is never read), its size
    is capped, and its header is parsed and checked against its metadata (declared tensor
    names, shapes, dtypes and sizes) before the tensor data is read.
    """
    try:
        with open_regular_file(path, max_bytes) as (fh, size):
            head = fh.read(8)
            if len(head) == 8:
                (length,) = struct.unpack("<Q", head)
                head += fh.read(min(length, MAX_HEADER_BYTES))
            header, length = parse_header(head, size)
            _check_declared_tensors(header, header_metadata(header), size - 8 - length)
            data = head + fh.read(size - len(head))
    except FileRefused as exc:
        raise PresetError(str(exc)) from None
    except OSError as exc:
        raise PresetError(f"cannot read it ({exc.strerror or exc})") from None
    if len(data) != size:
        raise PresetError("the file changed while it was read")
    return data


def load_preset(path: str | os.PathLike) -> Preset:
    """Load and validate a preset file; errors name the file and the reason."""
    path = Path(path)
    name = path.name[:-len(PRESET_SUFFIX)] if path.name.endswith(PRESET_SUFFIX) else path.stem
    try:
        preset = preset_from_bytes(read_preset_file(path), name=name)
    except PresetError as exc:
        raise PresetError(f"{path.name}: {exc}") from None
    preset.path = path
    return preset


# --- writing ----------------------------------------------------------------------------

def preset_to_bytes(preset: Preset) -> bytes:
    """Serialise a preset (validated first) to safetensors bytes."""
    preset.validate()
    tensors = {k: v.contiguous() for k, v in preset.tensors.items()}
    return safetensors.torch.save(tensors, metadata=dict(preset.metadata))


def save_preset(preset: Preset, folder: str | os.PathLike, name: str,
                overwrite: bool = False) -> Path:
    """Write ``<folder>/<name>.safetensors`` atomically and return its path.

    Refuses to replace an existing file unless ``overwrite``; a failed write leaves nothing
    behind. Updates ``preset.name``, ``.path`` and ``.sha256``.
    """
    validate_name(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}{PRESET_SUFFIX}"
    if target.exists() and not overwrite:
        raise PresetError(f"preset {name!r} already exists in {folder}; choose another name "
                          "or allow overwriting (--overwrite)")
    data = preset_to_bytes(preset)
    try:
        atomic_write(target, data, overwrite=overwrite)
    except ExistsError:
        raise PresetError(f"preset {name!r} already exists in {folder}; choose another name "
                          "or allow overwriting (--overwrite)") from None
    preset.name, preset.path = name, target
    preset.sha256 = hashlib.sha256(data).hexdigest()
    return target
