"""Infotext (DESIGN 7.4): the generation-parameter keys we write, and reading them back.

Keys: ``Signal leak`` (preset name or ``manual``; with ``(not applied: reason)`` appended when
the leak was not used, and then no other key), ``Signal leak hash``, ``Signal leak strength``,
``Signal leak LF`` (only when ``zero``), ``Signal leak means`` (``0:1.5,2:-0.5``, only when
any are fixed) and ``Signal leak seed`` (only when fixed). Pasting restores every control;
the enable toggle follows the presence of ``Signal leak``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .lowfreq import LowFreqError, format_components, parse_components
from .settings import (
    GRADIENT_ARGS,
    MANUAL,
    MAX_CHANNELS,
    LeakSettings,
    SettingsError,
    format_means,
    parse_means,
)

KEY = "Signal leak"
KEY_HASH = "Signal leak hash"
KEY_STRENGTH = "Signal leak strength"
KEY_LF = "Signal leak LF"
KEY_MEANS = "Signal leak means"
KEY_SEED = "Signal leak seed"
KEY_COMPONENTS = "Signal leak components"
KEY_COLOUR = "Signal leak colour"
KEY_REFERENCE = "Signal leak reference"
ALL_KEYS = (KEY, KEY_HASH, KEY_STRENGTH, KEY_LF, KEY_MEANS, KEY_SEED, KEY_COMPONENTS,
            KEY_COLOUR, KEY_REFERENCE)
NOT_APPLIED = " (not applied: "


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 6)


def infotext_entries(settings: LeakSettings, preset_hash: str = "", reason: str = "",
                     reference_hash: str = "") -> dict[str, object]:
    """The keys for one generation (without the ones that take their default)."""
    name = "manual" if settings.is_manual else settings.preset
    if reason:  # DESIGN 7.4: hash, strength and the rest only describe an applied leak
        return {KEY: f"{name}{NOT_APPLIED}{reason})"}
    out: dict[str, object] = {KEY: name}
    if preset_hash and not settings.is_manual:
        out[KEY_HASH] = preset_hash
    out[KEY_STRENGTH] = _num(settings.strength)
    if settings.lf != "sampled":
        out[KEY_LF] = settings.lf
    if settings.means:
        out[KEY_MEANS] = format_means(settings.means)
    if settings.seed >= 0:
        out[KEY_SEED] = settings.seed
    if settings.components:
        out[KEY_COMPONENTS] = format_components(settings.components)
    if settings.colour:
        out[KEY_COLOUR] = settings.colour
    if reference_hash:  # informative: the reference's values are in means/components
        out[KEY_REFERENCE] = reference_hash
    return out


def remove_entries(params: dict) -> None:
    """Drop our keys (X/Y/Z cells share one dict, so stale keys must go)."""
    for key in ALL_KEYS:
        params.pop(key, None)


def preset_from_entry(value: str) -> str:
    """The preset name in a ``Signal leak`` value (``manual`` -> the manual choice)."""
    text = str(value).strip()
    if text.startswith("not applied:"):  # settings that could not be read: no name
        return MANUAL
    name = text.split(NOT_APPLIED, 1)[0].strip()
    return MANUAL if name in ("manual", "") else name


def settings_from_infotext(params: Mapping[str, object]) -> LeakSettings | None:
    """The settings an infotext describes, or None when it has no ``Signal leak`` key.

    Malformed values fall back to the defaults rather than failing the paste.
    """
    if KEY not in params:
        return None
    defaults = LeakSettings()
    try:
        strength = float(params.get(KEY_STRENGTH, defaults.strength))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        strength = defaults.strength
    lf = str(params.get(KEY_LF, "sampled"))
    try:
        means = {c: v for c, v in parse_means(str(params.get(KEY_MEANS, ""))).items()
                 if c < MAX_CHANNELS}
    except SettingsError:
        means = {}
    try:
        seed = int(float(params.get(KEY_SEED, -1)))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        seed = -1
    try:
        components = {k: v for k, v in parse_components(str(params.get(KEY_COMPONENTS, "")))
                      .items() if k[0] < MAX_CHANNELS and k[1:] != (0, 0)}
    except LowFreqError:
        components = {}
    colour = str(params.get(KEY_COLOUR, "") or "")
    try:
        return LeakSettings(enabled=True, preset=preset_from_entry(str(params[KEY])),
                            strength=strength, lf=lf, means=means, seed=seed,
                            components=components, colour=colour)
    except SettingsError:
        return LeakSettings(enabled=True, preset=preset_from_entry(str(params[KEY])))


def paste_value(params: Mapping[str, object], arg_name: str) -> object:
    """The value for the control named ``arg_name`` (see ``settings.ARG_NAMES``) when pasting.

    ``enabled`` is False when the infotext has no ``Signal leak`` key; every other control is
    left unchanged (None) then. A channel's mean slider is left unchanged when not fixed.
    """
    settings = settings_from_infotext(params)
    if settings is None:
        return False if arg_name == "enabled" else None
    if arg_name.startswith("fix_mean_"):
        return int(arg_name.rsplit("_", 1)[1]) in settings.means
    if arg_name.startswith("mean_"):
        return settings.means.get(int(arg_name.rsplit("_", 1)[1]))
    for name, (u, v) in GRADIENT_ARGS.items():
        if arg_name.startswith(f"fix_{name}_"):
            return (int(arg_name.rsplit("_", 1)[1]), u, v) in settings.components
        if arg_name.startswith(f"{name}_"):
            return settings.components.get((int(arg_name.rsplit("_", 1)[1]), u, v))
    if arg_name == "fix_colour":
        return bool(settings.colour)
    if arg_name == "colour":
        return settings.colour or None
    if arg_name == "reference":
        return None  # the reference's values are restored as means and components
    return getattr(settings, arg_name)
