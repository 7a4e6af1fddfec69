"""The preset list shown in the UI, the API and X/Y/Z: the extension's ``stats/`` folder
first, then the user folder (Settings, default ``models/signal_leak``)."""

from __future__ import annotations

import html
from pathlib import Path

from slb.generation import LeakPlan, plan_generation
from slb.host import ModelFacts
from slb.library import PresetLibrary, resolve_name
from slb.preset import Preset, PresetError
from slb.settings import MANUAL, LeakSettings, choice_name, mark_refused

from .host import Host

EXTENSION_DIR = Path(__file__).resolve().parents[1]
NATURAL = "natural"  # alias: natural-<family of the loaded model>


class Presets:
    """The library for the current folders, rebuilt when the user folder setting changes."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._library: PresetLibrary | None = None

    def library(self) -> PresetLibrary:
        folders = [EXTENSION_DIR / "stats", self.host.user_presets_dir()]
        if self._library is None or self._library.folders != folders:
            self._library = PresetLibrary(folders)
        return self._library

    def choices(self) -> list[str]:
        """``manual``, the ``natural`` alias (it follows the loaded model's family), then
        every usable preset."""
        names = [e.name for e in self.library().usable()]
        return [MANUAL, NATURAL, *(n for n in names if n != NATURAL)]

    def problem(self, name: str, facts: ModelFacts | None = None) -> str:
        """Why preset ``name`` would not be applied to the loaded model, or ``""``."""
        if name in (MANUAL, ""):
            return ""
        facts = facts if facts is not None else self.host.model_facts(self.host.sd_model())
        if not facts.loaded:
            return ""  # nothing to check against before the host loads its model
        return self.plan(LeakSettings(enabled=True, preset=name), facts).reason

    def dropdown_choices(self) -> list[str]:
        """The dropdown's entries: presets the loaded model would refuse are marked (Gradio
        3.41's dropdown shows its values, so the mark is part of the value; the settings
        parser strips it, see ``slb.settings.choice_name``)."""
        try:
            facts = self.host.model_facts(self.host.sd_model())
        except Exception:  # no model loaded yet: nothing to check against
            return self.choices()
        return [mark_refused(name) if name != NATURAL and self.problem(name, facts)
                else name for name in self.choices()]

    def find(self, name: str, family: str) -> Preset:
        """The preset ``name`` means for ``family`` (``X`` -> ``X-<family>`` when it exists);
        :class:`PresetError` says how to get a missing natural-image preset."""
        try:
            return self.library().get(name, family)
        except PresetError:
            if name == NATURAL:
                raise PresetError(f"there is no preset natural-{family} yet: use 'Get the "
                                  "natural-image preset' in the Fit panel (or POST "
                                  "/signal-leak/v1/fit with natural: true)") from None
            raise

    def plan(self, settings: LeakSettings, facts: ModelFacts) -> LeakPlan:
        """The plan for the model ``facts`` describe, with the user's family setting
        (DESIGN 7.7); a model with no leak to correct (flow matching) gets none."""
        plan = plan_generation(settings, lambda name: self.find(name, facts.family),
                               model_channels=facts.latent_channels, model_family=facts.family,
                               allow_other_families=self.host.allow_other_families())
        if not plan.reason and facts.reason:
            return LeakPlan(plan.settings, plan.preset, facts.reason)
        return plan

    def summary(self, name: str) -> str:
        """HTML: the chosen preset's summary line, then any unusable files with their reason."""
        entries = self.library().entries()  # one scan of the folders for both parts
        lines = []
        name = choice_name(name or "")  # a marked dropdown entry means the preset itself
        if name == NATURAL:
            family = self.host.model_facts(self.host.sd_model()).family
            name = resolve_name(entries, NATURAL, family)
            if name == NATURAL and not any(e.name == NATURAL for e in entries):
                lines.append(f"<b>natural</b>: no natural-image preset for {family} yet: use "
                             "<i>Get the natural-image preset</i> in the Fit panel below.")
                name = ""
        if name and name != MANUAL:
            entry = next((e for e in entries if e.name == name and e.usable), None)
            if entry is not None:
                lines.append(f"<b>{html.escape(name)}</b>: "
                             f"{html.escape(entry.preset.summary())}")
                problem = self.problem(name)
                if problem:
                    lines.append(f"<span style='color:var(--error-text-color,#c00)'>\u26a0 not "
                                 f"applied to this model: {html.escape(problem)}</span>")
            else:
                lines.append(f"<span style='color:var(--error-text-color,#c00)'>no usable "
                             f"preset named {html.escape(name)}</span>")
        elif not lines:
            lines.append("Manual: the leak is the fixed channel means below (0 where not set).")
        for entry in (e for e in entries if not e.usable):
            lines.append(f"<span style='opacity:.75'>unusable: {html.escape(entry.path.name)}: "
                         f"{html.escape(entry.reason)}</span>")
        return "<br>".join(lines)
