"""The ``/signal-leak/v1/`` routes' logic (DESIGN 7.6), host-independent.

Request bodies are plain JSON objects validated here, with unknown keys rejected, so the
routes behave the same whatever pydantic/FastAPI version the host ships. Errors are
:class:`ApiError` with an HTTP status and a ``detail`` message.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .generation import plan_generation, resolve_reference
from .library import PresetLibrary
from .limits import FIT_SIZE_RANGE, MAX_BATCH, MAX_COMPONENTS, fit_size_problem, shape_problem
from .lowfreq import format_key, reference_hash
from .preset import PresetError, validate_name
from .sampling import IncompatiblePresetError, LeakSampler
from .settings import MANUAL, SettingsError, settings_from_dict, short_repr

FIT_KEYS = {"folder", "name", "kind", "n_components", "resolution", "crop", "recursive",
            "overwrite", "batch_size", "natural"}
SETTINGS_KEYS = ("preset", "strength", "lf", "means", "seed", "components", "colour",
                 "reference_image")
SAMPLE_KEYS = {*SETTINGS_KEYS, "shape", "format"}
CROP_RE = re.compile(r"center|random:-?[0-9]{1,18}")


class ApiError(Exception):
    """An error for the HTTP client: ``status`` (4xx) and ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _check_keys(body: object, allowed: set[str], what: str) -> Mapping[str, object]:
    if not isinstance(body, Mapping):
        raise ApiError(422, f"{what} expects a JSON object")
    unknown = sorted(set(map(str, body)) - allowed)
    if unknown:
        raise ApiError(422, f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: "
                       f"{', '.join(sorted(allowed))}")
    return body


def presets_payload(library: PresetLibrary) -> list[dict]:
    """``GET presets``: every preset file, usable or not, with the reason."""
    return [entry.info() for entry in library.entries()]


@dataclass(frozen=True)
class FitRequest:
    folder: str
    name: str
    kind: str = "dct+pixel"
    n_components: int = 3
    resolution: int | None = None  # None: the model's native size
    crop: str = "center"
    recursive: bool = False
    overwrite: bool = False
    batch_size: int | None = None  # None: chosen from the device (fitting.auto_batch_size)
    natural: bool = False  # the one-click natural-image preset: name natural-<family>


def _int(body: Mapping[str, object], key: str, default: int | None, lo: int, hi: int
         ) -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
        raise ApiError(422, f"{key} must be an integer, got {short_repr(value)}")
    if not lo <= int(value) <= hi:
        raise ApiError(422, f"{key} must lie in {lo}..{hi}, got {value}")
    return int(value)


def _bool(body: Mapping[str, object], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ApiError(422, f"{key} must be true or false, got {value!r}")
    return value


def parse_fit_request(body: object) -> FitRequest:
    """Validate a ``POST fit`` body: ``folder`` and ``name`` are required, unless
    ``natural`` is true (the natural-image preset: its source defaults to the Settings URL
    and its name to ``natural-<family>``, both filled in by the host glue)."""
    b = _check_keys(body, FIT_KEYS, "fit")
    natural = _bool(b, "natural")
    for key in ("folder", "name"):
        if key in b and not isinstance(b[key], str):
            raise ApiError(422, f"'{key}' must be a string")
        if not natural and not b.get(key):
            raise ApiError(422, f"'{key}' is required (a string)")
    if b.get("name"):
        try:
            validate_name(str(b["name"]))
        except PresetError as exc:
            raise ApiError(422, str(exc)) from None
    kind = b.get("kind", "dct+pixel")
    if kind not in ("pixel", "dct+pixel"):
        raise ApiError(422, f"kind must be 'pixel' or 'dct+pixel', got {kind!r}")
    crop = b.get("crop", "center")
    if not isinstance(crop, str) or not CROP_RE.fullmatch(crop):
        raise ApiError(422, f"crop must be 'center' or 'random:<seed>', got {short_repr(crop)}")
    if "\0" in str(b.get("folder", "")):
        raise ApiError(422, "folder must not contain NUL characters")
    resolution = _int(b, "resolution", None, *FIT_SIZE_RANGE)
    if resolution is not None and fit_size_problem(resolution):
        raise ApiError(422, "resolution: " + fit_size_problem(resolution))
    return FitRequest(folder=str(b.get("folder", "")), name=str(b.get("name", "")),
                      kind=str(kind),
                      n_components=_int(b, "n_components", 3, 1, MAX_COMPONENTS) or 3,
                      resolution=resolution, crop=crop, recursive=_bool(b, "recursive"),
                      overwrite=_bool(b, "overwrite"),
                      batch_size=_int(b, "batch_size", None, 1, MAX_BATCH), natural=natural)


def sample_payload(body: object, library: PresetLibrary, model_family: str = "sd1",
                   encode_reference: Callable[[object, int, int], torch.Tensor] | None = None
                   ) -> dict:
    """``POST sample``: a leak as base64 ``.npy`` (float32 ``(C,H,W)``) or a preview PNG.

    Takes the generation's LF controls too: ``components``, ``colour`` (resolved for
    ``model_family``) and ``reference_image``, which ``encode_reference(image, width,
    height)`` turns into a latent (the host's VAE); without it a reference is refused.
    """
    b = _check_keys(body, SAMPLE_KEYS, "sample")
    fmt = b.get("format", "npy")
    if fmt not in ("npy", "png"):
        raise ApiError(422, f"format must be 'npy' or 'png', got {fmt!r}")
    shape = b.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise ApiError(422, "shape must be [C, H, W] with positive integers")
    if shape_problem(tuple(shape)):
        raise ApiError(422, shape_problem(tuple(shape)))
    try:
        settings = settings_from_dict({k: v for k, v in b.items() if k in SETTINGS_KEYS})
    except SettingsError as exc:
        raise ApiError(422, str(exc)) from None
    if settings.reference is not None and encode_reference is None:
        raise ApiError(422, "reference_image needs the WebUI's loaded VAE")
    seed = settings.seed if settings.seed >= 0 else 0
    try:
        plan = plan_generation(settings,
                               lambda name: library.get(name, model_family),
                               model_channels=shape[0], model_family=model_family,
                               allow_other_families=True)
        if plan.reason:
            raise ApiError(404 if "no preset" in plan.reason else 422, plan.reason)
        if settings.reference is not None:
            latent = encode_reference(settings.reference, shape[2] * 8, shape[1] * 8)
            plan = resolve_reference(plan, latent, reference_hash(settings.reference))
        s = plan.settings
        sampler = LeakSampler(plan.preset, shape, lf_mode=s.lf, means=s.means,
                              components=s.components)
    except (IncompatiblePresetError, ValueError) as exc:
        raise ApiError(422, str(exc)) from None
    leak = sampler.draw([seed])[0] * settings.strength
    buf = io.BytesIO()
    preset = plan.preset
    if fmt == "npy":
        np.save(buf, leak.numpy().astype(np.float32))
    else:
        from .preview import preview_image

        if shape[0] != 4:
            raise ApiError(422, "a PNG preview needs a 4-channel latent; use format 'npy'")
        family = preset.model_family if preset is not None else model_family
        preview_image([leak], family, scale=4).save(buf, format="PNG")
    answer = {"data": base64.b64encode(buf.getvalue()).decode("ascii"), "format": fmt,
              "shape": list(shape), "preset": MANUAL if preset is None else settings.preset,
              "seed": seed, "means": {str(c): m for c, m in sorted(s.means.items())},
              "components": {format_key(k): a for k, a in sorted(s.components.items())}}
    if plan.predicted_colour:
        answer["predicted_colour"] = plan.predicted_colour
    return answer
