"""The list of presets across folders: usable ones, and broken ones with their reason.

Folders are scanned in order (the extension's ``stats/`` first, then the user folder); a
name that appears twice is served from the first folder and the later file is listed as
unusable. Files are parsed once and re-read only when their size or mtime changes. A broken
file never breaks the list, and a scan never blocks or reads much: FIFOs, devices and folders
named like presets are listed as unusable without being opened for reading, and a file's
header (declared tensors and sizes) is checked before its data is read (``read_preset_file``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .preset import PRESET_SUFFIX, Preset, PresetError, load_preset


@dataclass(frozen=True)
class PresetEntry:
    """One file in the list: its preset when usable, else the reason it is not."""

    name: str
    path: Path
    preset: Preset | None
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.preset is not None

    def info(self) -> dict:
        """The JSON-able summary the API's ``GET presets`` returns."""
        p = self.preset
        return {
            "name": self.name,
            "kind": p.kind if p else None,
            "n_components": p.n_components if p else None,
            "latent_shape": list(p.latent_shape) if p else None,
            "image_size": list(p.image_size) if p else None,
            "model_family": p.model_family if p else None,
            "hash": p.short_hash if p else None,
            "usable": self.usable,
            "reason": self.reason,
        }


class PresetLibrary:
    """Presets found in a list of folders (missing folders are simply empty)."""

    def __init__(self, folders: list[str | os.PathLike]) -> None:
        self.folders = [Path(f) for f in folders]
        self._cache: dict[Path, tuple[tuple[int, ...], PresetEntry]] = {}
        self._lock = threading.Lock()

    def entries(self) -> list[PresetEntry]:
        """All preset files, usable or not, in folder order then name order."""
        out: list[PresetEntry] = []
        seen: dict[str, Path] = {}
        with self._lock:
            for folder in self.folders:
                if not folder.is_dir():
                    continue
                files = sorted(p for p in folder.iterdir()
                               if p.name.endswith(PRESET_SUFFIX) and not p.name.startswith("."))
                for path in files:
                    entry = self._load(path)
                    if entry.name in seen:
                        entry = PresetEntry(entry.name, path, None,
                                            f"duplicate name: {seen[entry.name]} is used")
                    else:
                        seen[entry.name] = path
                    out.append(entry)
        return out

    def _load(self, path: Path) -> PresetEntry:
        name = path.name[:-len(PRESET_SUFFIX)]
        try:
            st = path.stat()
        except OSError as exc:
            return PresetEntry(name, path, None, f"cannot read: {exc.strerror or exc}")
        key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            entry = PresetEntry(name, path, load_preset(path))
        except PresetError as exc:
            reason = str(exc)
            prefix = f"{path.name}: "
            entry = PresetEntry(name, path, None, reason[len(prefix):]
                                if reason.startswith(prefix) else reason)
        self._cache[path] = (key, entry)
        return entry

    def usable(self) -> list[PresetEntry]:
        return [e for e in self.entries() if e.usable]

    def broken(self) -> list[PresetEntry]:
        return [e for e in self.entries() if not e.usable]

    def resolve(self, name: str, family: str) -> str:
        """The file name a preset name means for a model of ``family`` (see
        :func:`resolve_name`)."""
        return resolve_name(self.entries(), name, family)

    def get(self, name: str, family: str | None = None) -> Preset:
        """The usable preset called ``name`` (with ``family``: the one it means for that
        family, :func:`resolve_name`, from the same scan); :class:`PresetError` says why
        not otherwise."""
        entries = self.entries()
        if family is not None:
            name = resolve_name(entries, name, family)
        for entry in entries:
            if entry.name == name:
                if entry.preset is None:
                    raise PresetError(f"preset {name!r} is unusable: {entry.reason}")
                return entry.preset
        raise PresetError(f"no preset named {name!r} in {', '.join(map(str, self.folders))}")


def resolve_name(entries: list[PresetEntry], name: str, family: str) -> str:
    """``X-<family>`` when ``entries`` hold that preset (``natural`` -> ``natural-sdxl`` on
    an SDXL model), else ``X``."""
    specific = f"{name}-{family}"
    return specific if any(e.name == specific for e in entries) else name
