"""The user's leak settings, and every way they arrive: UI/API positional arguments, the API's
dict form, infotext text, and the ``0:1.5,2:-0.5`` notation for fixed channel means.

The positional order is the extension's UI order and the documented API order
(:data:`ARG_NAMES`). Everything here is plain parsing, host-independent and tested on its own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from .lowfreq import Component, LowFreqError, decode_reference, parse_colour, parse_key
from .sampling import LF_MODES, MAX_SEED

MANUAL = "manual (no preset)"
MAX_CHANNELS = 4  # UI controls exist for the 4 latent channels of SD 1.x/2.x/XL
MEAN_RANGE = (-3.0, 3.0)
STRENGTH_RANGE = (0.0, 2.0)
# Positional order = UI order = documented API order. The gradient controls, the colour
# target and the reference image were added after "seed", so older positional calls (13
# values) keep working.
ARG_NAMES: tuple[str, ...] = (
    "enabled", "preset", "strength", "lf",
    *(name for c in range(MAX_CHANNELS) for name in (f"fix_mean_{c}", f"mean_{c}")),
    "seed",
    *(name for c in range(MAX_CHANNELS)
      for name in (f"fix_lr_{c}", f"lr_{c}", f"fix_tb_{c}", f"tb_{c}")),
    "fix_colour", "colour", "reference",
)
GRADIENT_ARGS = {"lr": (0, 1), "tb": (1, 0)}  # left-right (0,1) and top-bottom (1,0)
DICT_KEYS = ("enabled", "preset", "strength", "lf", "means", "seed", "components", "colour",
             "reference_image")
_CHANNEL_RE = re.compile(r"\s*[0-9]{1,3}\s*")  # ASCII digits only: "²".isdigit() is true


def channel_key(key: object) -> int | None:
    """A channel number from an int or a string of ASCII digits; None for anything else."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key
    if isinstance(key, str) and _CHANNEL_RE.fullmatch(key):
        return int(key)
    return None


class SettingsError(ValueError):
    """Settings that cannot be used; the message says which and why."""


def parse_means(text: str) -> dict[int, float]:
    """``"0:1.5,2:-0.5"`` -> ``{0: 1.5, 2: -0.5}``; empty text gives ``{}``."""
    out: dict[int, float] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        ch, sep, val = part.partition(":")
        channel = channel_key(ch)
        if not sep or channel is None:
            raise SettingsError(f"fixed means must look like '0:1.5,2:-0.5', got {text!r}")
        try:
            value = float(val)
        except ValueError:
            raise SettingsError(f"mean {val!r} for channel {channel} is not a number") from None
        if not math.isfinite(value):
            raise SettingsError(f"mean for channel {channel} must be a finite number, got {val!r}")
        out[channel] = value
    return out


def format_means(means: Mapping[int, float]) -> str:
    """``{0: 1.5, 2: -0.5}`` -> ``"0:1.5,2:-0.5"`` (sorted, shortest exact float text)."""
    return ",".join(f"{c}:{_fmt(v)}" for c, v in sorted(means.items()))


def _fmt(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class LeakSettings:
    """What one generation asks for."""

    enabled: bool = False
    preset: str = MANUAL
    strength: float = 1.0
    lf: str = "sampled"
    means: dict[int, float] = field(default_factory=dict)
    seed: int = -1
    components: dict[Component, float] = field(default_factory=dict)  # non-DC, fixed
    colour: str = ""  # "#rrggbb": free channel means from the family's linear RGB map
    reference: object = None  # a PIL image: its LF components become fixed values

    def __post_init__(self) -> None:
        if self.lf not in LF_MODES:
            raise SettingsError(f"lf must be one of {LF_MODES}, not {self.lf!r}")
        if not (math.isfinite(self.strength) and STRENGTH_RANGE[0] <= self.strength
                <= STRENGTH_RANGE[1]):
            raise SettingsError(f"strength must lie in {STRENGTH_RANGE[0]}..{STRENGTH_RANGE[1]},"
                                f" got {self.strength}")
        for ch, val in self.means.items():
            if not 0 <= ch < MAX_CHANNELS:
                raise SettingsError(f"channel {ch} has no mean control (0..{MAX_CHANNELS - 1})")
            if not (math.isfinite(val) and MEAN_RANGE[0] <= val <= MEAN_RANGE[1]):
                raise SettingsError(f"mean for channel {ch} must lie in {MEAN_RANGE[0]}.."
                                    f"{MEAN_RANGE[1]}, got {val}")
        for (ch, u, v), val in self.components.items():
            if not 0 <= ch < MAX_CHANNELS:
                raise SettingsError(f"component {ch}:{u},{v}: channel {ch} is out of range "
                                    f"(0..{MAX_CHANNELS - 1})")
            if (u, v) == (0, 0):
                raise SettingsError(f"component {ch}:0,0 is channel {ch}'s mean: set it as a "
                                    "mean")
            if not (math.isfinite(val) and MEAN_RANGE[0] <= val <= MEAN_RANGE[1]):
                raise SettingsError(f"component {ch}:{u},{v} must lie in {MEAN_RANGE[0]}.."
                                    f"{MEAN_RANGE[1]}, got {val}")
        if self.colour:
            try:
                parse_colour(self.colour)
            except LowFreqError as exc:
                raise SettingsError(str(exc)) from None
        if not isinstance(self.preset, str) or not self.preset:
            raise SettingsError("preset must be a preset name or 'manual'")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not (
                -1 <= self.seed <= MAX_SEED):
            raise SettingsError(f"leak seed must be -1 (use each image's seed) or 0..{MAX_SEED}, "
                                f"got {self.seed}")

    @property
    def is_manual(self) -> bool:
        return self.preset in (MANUAL, "manual", "")

    def with_overrides(self, overrides: Mapping[str, object]) -> LeakSettings:
        """A copy with some fields replaced (X/Y/Z cells); ``means`` entries merge."""
        changes = dict(overrides)
        for key in ("means", "components"):
            if key in changes:
                changes[key] = {**getattr(self, key), **changes[key]}  # type: ignore[dict-item]
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_args(self) -> list[object]:
        """The positional argument list (UI order)."""
        args: list[object] = [self.enabled, self.preset, self.strength, self.lf]
        for c in range(MAX_CHANNELS):
            args += [c in self.means, self.means.get(c, 0.0)]
        args.append(self.seed)
        for c in range(MAX_CHANNELS):
            for u, v in GRADIENT_ARGS.values():
                args += [(c, u, v) in self.components, self.components.get((c, u, v), 0.0)]
        return [*args, bool(self.colour), self.colour or "#808080", self.reference]


def _as_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise SettingsError(f"{name} must be true or false, got {value!r}")


def _as_float(value: object, name: str) -> float:
    if isinstance(value, bool):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise SettingsError(f"{name} must be a number, got {short_repr(value)}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{name} must be a finite number, got {short_repr(value)}")
    return number


def short_repr(value: object) -> str:
    """``repr`` cut to a readable length (a 400-digit integer stays one short line)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"


def _as_seed(value: object) -> int:
    if isinstance(value, bool):
        raise SettingsError(f"seed must be an integer, got {value!r}")
    if isinstance(value, int):  # exact: large seeds must not pass through a float
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        number = int(value)
    else:
        as_float = _as_float(value, "seed")
        if as_float != int(as_float):
            raise SettingsError(f"seed must be an integer, got {short_repr(value)}")
        number = int(as_float)
    if not -1 <= number <= MAX_SEED:
        raise SettingsError(f"seed must be -1 or 0..{MAX_SEED}, got {short_repr(value)}")
    return number


REFUSED_MARK = ("\u26a0 ", " (not for this model)")


def mark_refused(name: str) -> str:
    """A dropdown entry for a preset the loaded model would refuse."""
    return f"{REFUSED_MARK[0]}{name}{REFUSED_MARK[1]}"


def choice_name(value: str) -> str:
    """The preset name of a dropdown entry (see :func:`mark_refused`)."""
    head, tail = REFUSED_MARK
    if value.startswith(head) and value.endswith(tail):
        return value[len(head):-len(tail)]
    return value


def _as_preset(value: object) -> str:
    if value is None:
        return MANUAL
    if not isinstance(value, str):
        raise SettingsError(f"preset must be a name (string), got {value!r}")
    value = choice_name(value)
    return MANUAL if value.strip().lower() in ("", "manual", MANUAL) else value


def _components(value: object) -> tuple[dict[int, float], dict[Component, float]]:
    """The dict form's ``components`` (``{"0:0,1": 0.5}``): DC entries become means."""
    if not isinstance(value, Mapping):
        raise SettingsError("components must be an object like {\"0:0,1\": 0.5}")
    means: dict[int, float] = {}
    out: dict[Component, float] = {}
    for key, val in value.items():
        try:
            comp = parse_key(key)
        except LowFreqError as exc:
            raise SettingsError(str(exc)) from None
        number = _as_float(val, f"components[{short_repr(key)}]")
        if comp[1:] == (0, 0):
            means[comp[0]] = number
        else:
            out[comp] = number
    return means, out


def _colour(value: object) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise SettingsError(f"colour must be '#rrggbb', got {short_repr(value)}")
    try:
        parse_colour(value)
    except LowFreqError as exc:
        raise SettingsError(str(exc)) from None
    return value.strip()


def _reference(value: object) -> object:
    if value is None or value == "":
        return None
    try:
        return decode_reference(value)
    except LowFreqError as exc:
        raise SettingsError(str(exc)) from None


def settings_from_dict(data: Mapping[str, object]) -> LeakSettings:
    """The API's dict form; unknown keys are rejected; omitted keys take the UI defaults
    (``enabled`` defaults to true here)."""
    unknown = sorted(set(map(str, data)) - set(DICT_KEYS))
    if unknown:
        raise SettingsError(f"unknown key(s) {', '.join(map(repr, unknown))} in the Signal Leak "
                            f"Bias arguments; allowed: {', '.join(DICT_KEYS)}")
    means_in = data.get("means") or {}
    if not isinstance(means_in, Mapping):
        raise SettingsError("means must be an object like {\"0\": 1.5, \"2\": -0.5}")
    means: dict[int, float] = {}
    for key, val in means_in.items():
        channel = channel_key(key)
        if channel is None:
            raise SettingsError(f"means key {short_repr(key)} must be a channel number (0..3)")
        means[channel] = _as_float(val, f"means[{key}]")
    dc, components = _components(data.get("components") or {})
    return LeakSettings(
        enabled=_as_bool(data.get("enabled", True), "enabled"),
        preset=_as_preset(data.get("preset")),
        strength=_as_float(data.get("strength", 1.0), "strength"),
        lf=str(data.get("lf", "sampled")),
        means={**dc, **means},
        seed=_as_seed(data.get("seed", -1)),
        components=components,
        colour=_colour(data.get("colour")),
        reference=_reference(data.get("reference_image")),
    )


def settings_from_args(args: Sequence[object]) -> LeakSettings:
    """The script's positional arguments (UI order), or a single dict (the API's dict form).

    Missing trailing arguments take the UI defaults, as the WebUI API does.
    """
    if args and isinstance(args[0], Mapping):
        return settings_from_dict(args[0])  # type: ignore[arg-type]
    if len(args) > len(ARG_NAMES):
        raise SettingsError(f"Signal Leak Bias takes {len(ARG_NAMES)} arguments "
                            f"({', '.join(ARG_NAMES)}); got {len(args)}")
    values = dict(zip(ARG_NAMES, LeakSettings().to_args(), strict=True))
    values.update({k: v for k, v in zip(ARG_NAMES, args, strict=False) if v is not None})
    means = {c: _as_float(values[f"mean_{c}"], f"mean_{c}") for c in range(MAX_CHANNELS)
             if _as_bool(values[f"fix_mean_{c}"], f"fix_mean_{c}")}
    components = {(c, *uv): _as_float(values[f"{name}_{c}"], f"{name}_{c}")
                  for c in range(MAX_CHANNELS) for name, uv in GRADIENT_ARGS.items()
                  if _as_bool(values[f"fix_{name}_{c}"], f"fix_{name}_{c}")}
    return LeakSettings(
        enabled=_as_bool(values["enabled"], "enabled"),
        preset=_as_preset(values["preset"]),
        strength=_as_float(values["strength"], "strength"),
        lf=str(values["lf"]),
        means=means,
        seed=_as_seed(values["seed"]),
        components=components,  # type: ignore[arg-type]
        colour=_colour(values["colour"]) if _as_bool(values["fix_colour"], "fix_colour") else "",
        reference=_reference(values["reference"]),
    )
