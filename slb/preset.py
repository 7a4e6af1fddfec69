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
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch

from . import __version__
from .dct import Coord

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
        return (f"{self.kind}{n}, latent {c}x{h}x{w} ({iw}x{ih} px), {self.images} images, "
                f"{self.model_family}")

    # --- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`PresetError` naming the first problem found."""
        meta = self.metadata
        missing = [k for k in REQUIRED_METADATA if k not in meta]
        if missing:
            raise PresetError(f"missing metadata key(s): {', '.join(missing)}")
        fmt = _int_meta(meta, "slb_format", 1)
        if fmt > SLB_FORMAT:
            raise PresetError(f"slb_format {fmt} is newer than this version understands "
                              f"({SLB_FORMAT}); update the extension")
        if meta["kind"] not in KINDS or meta["kind"] != self.kind:
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
        _parse_ints(meta["image_size"], 2, "image_size")
        n = _int_meta(meta, "n_components")

        expected = TENSOR_KEYS[self.kind]
        missing = [k for k in expected if k not in self.tensors]
        if missing:
            raise PresetError(f"missing tensor(s) for a {self.kind} preset: {', '.join(missing)}")
        extra = sorted(set(self.tensors) - set(expected))
        if extra:
            raise PresetError(f"unexpected tensor(s) for a {self.kind} preset: {', '.join(extra)}")

        if self.kind == "pixel":
            if n != 0:
                raise PresetError(f"a pixel preset must have n_components=0, not {n}")
            shapes = {"mean": (c, h, w), "var": (c, h, w)}
        else:
            if n < 1 or n > h * w:
                raise PresetError(f"n_components={n} is out of range for a {h}x{w} latent")
            shapes = {"lf_mean": (n * c,), "lf_cov": (n * c, n * c), "lf_coords": (n, 2),
                      "hf_mean": (c, h, w), "hf_var": (c, h, w)}
        for key, shape in shapes.items():
            t = self.tensors[key]
            if tuple(t.shape) != shape:
                raise PresetError(f"tensor {key} has shape {tuple(t.shape)}, expected {shape} "
                                  f"from the metadata")
            want = torch.int64 if key == "lf_coords" else torch.float32
            if t.dtype != want:
                raise PresetError(f"tensor {key} has dtype {t.dtype}, expected {want}")
            if want == torch.float32 and not bool(torch.isfinite(t).all()):
                raise PresetError(f"tensor {key} contains NaN or infinite values")
        for key in ("var", "hf_var"):
            if key in self.tensors and bool((self.tensors[key] < 0).any()):
                raise PresetError(f"tensor {key} has negative variances")
        if self.kind == "dct+pixel":
            self._validate_lf(n, h, w)
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


# --- reading ----------------------------------------------------------------------------

def _read_header_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise PresetError("file is too short to be a safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8 or length > 100_000_000:
        raise PresetError("file is not a valid safetensors file (bad header length)")
    try:
        header = json.loads(data[8:8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PresetError("file is not a valid safetensors file (unreadable header)") from None
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if not isinstance(meta, dict):
        raise PresetError("safetensors metadata is not a string map")
    return {str(k): str(v) for k, v in meta.items()}


def preset_from_bytes(data: bytes, name: str = "") -> Preset:
    """Parse and validate preset bytes (safetensors), raising :class:`PresetError`."""
    meta = _read_header_metadata(data)
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise PresetError(f"file is not a valid safetensors file ({exc})") from None
    kind = meta.get("kind", "")
    if kind not in KINDS:
        raise PresetError(f"metadata kind={kind!r} is missing or not one of {KINDS}"
                          if kind else "missing metadata key(s): kind")
    preset = Preset(kind=kind, tensors=tensors, metadata=meta, name=name,
                    sha256=hashlib.sha256(data).hexdigest())
    preset.validate()
    return preset


def load_preset(path: str | os.PathLike) -> Preset:
    """Load and validate a preset file; errors name the file and the reason."""
    path = Path(path)
    name = path.name[:-len(PRESET_SUFFIX)] if path.name.endswith(PRESET_SUFFIX) else path.stem
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PresetError(f"{path.name}: cannot read ({exc.strerror or exc})") from None
    try:
        preset = preset_from_bytes(data, name=name)
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
                          "or allow overwriting")
    data = preset_to_bytes(preset)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=PRESET_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # fails if the name appeared meanwhile: never clobber
            except FileExistsError:
                raise PresetError(f"preset {name!r} already exists in {folder}") from None
            except OSError:
                os.replace(tmp, target)  # file systems without hard links
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    preset.name, preset.path = name, target
    preset.sha256 = hashlib.sha256(data).hexdigest()
    return target
