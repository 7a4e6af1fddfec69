"""X/Y/Z plot axes (DESIGN 7.5): an axis value overrides the UI for its cell only, and
switches the extension on for that cell (the overrides live on the per-cell copy of ``p``)."""

from __future__ import annotations

from modules import scripts

from slb.lowfreq import GRADIENT_NAMES
from slb.settings import GRADIENT_ARGS, MAX_CHANNELS

from .presets import Presets

XYZ_PREFIX = "[Signal Leak] "


def _setter(field: str, channel: int | None = None):  # noqa: ANN202
    def apply(p, x, xs) -> None:  # noqa: ANN001
        overrides = dict(getattr(p, "_slb_xyz", None) or {})
        overrides["enabled"] = True
        if channel is not None and field == "means":
            overrides["means"] = {**overrides.get("means", {}), channel: float(x)}
        elif channel is not None:  # a gradient: field is "lr" or "tb"
            key = (channel, *GRADIENT_ARGS[field])
            overrides["components"] = {**overrides.get("components", {}), key: float(x)}
        elif field == "seed":
            overrides["seed"] = int(x)
        elif field == "strength":
            overrides["strength"] = float(x)
        else:
            overrides[field] = x
        p._slb_xyz = overrides  # a new dict per cell: copies of p must not share it

    return apply


def _axes(xyz, presets: Presets) -> list:  # noqa: ANN001
    return [
        xyz.AxisOption(XYZ_PREFIX + "Preset", str, _setter("preset"), choices=presets.choices),
        xyz.AxisOption(XYZ_PREFIX + "Strength", float, _setter("strength")),
        xyz.AxisOption(XYZ_PREFIX + "LF mode", str, _setter("lf"),
                       choices=lambda: ["sampled", "zero"]),
        *[xyz.AxisOption(f"{XYZ_PREFIX}Channel {c} mean", float, _setter("means", c))
          for c in range(MAX_CHANNELS)],
        xyz.AxisOption(XYZ_PREFIX + "Leak seed", int, _setter("seed")),
        *[xyz.AxisOption(f"{XYZ_PREFIX}Channel {c} {GRADIENT_NAMES[uv]}", float,
                         _setter(name, c))
          for c in range(MAX_CHANNELS) for name, uv in GRADIENT_ARGS.items()],
    ]


def register(presets: Presets) -> None:
    """``on_before_ui`` callback: add our axes to the X/Y/Z script, once. The script is the
    one the host registered from its ``xyz_grid.py``, whatever its class is called (``Script``
    in A1111, Forge and Neo; ``XYZ`` in Forge Classic's extensions-builtin/xyz)."""
    found = next((d for d in scripts.scripts_data
                  if d.script_class.__module__ == "xyz_grid.py"), None)
    if found is None:
        return
    xyz, xyz_class = found.module, found.script_class
    ours = [o for o in xyz.axis_options if getattr(o, "label", "").startswith(XYZ_PREFIX)]
    if not ours:
        ours = _axes(xyz, presets)
        xyz.axis_options.extend(ours)
    # With --nowebui the API builds the scripts (X/Y/Z's ui() snapshots axis_options into
    # current_axis_options, which run() indexes) before on_before_ui runs: add our axes to
    # those snapshots too. Appended last, so the host's axis indices do not move.
    for runner in (getattr(scripts, "scripts_txt2img", None),
                   getattr(scripts, "scripts_img2img", None)):
        for script in getattr(runner, "scripts", None) or []:
            current = getattr(script, "current_axis_options", None)
            if isinstance(script, xyz_class) and isinstance(current, list):
                current.extend(o for o in ours if o not in current)
