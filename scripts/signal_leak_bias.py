"""Signal Leak Bias: the AlwaysOnScript (AUTOMATIC1111 WebUI and Forge).

This file only connects the host's hooks to the glue package ``signal_leak_webui`` beside
this folder (UI, hooks, X/Y/Z, routes, fitting, host adapter); the maths is in ``slb``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from modules import script_callbacks, scripts

# A1111 puts the extension folder on sys.path only while this file is imported, so every
# part of the glue and the library is imported now, never lazily. The glue package is
# re-imported on each load (the host's "Reload UI" runs this file again), so no state
# survives from an earlier load.
EXTENSION_DIR = Path(__file__).resolve().parents[1]
_PACKAGE = "signal_leak_webui"
for _name in [n for n in sys.modules if n == _PACKAGE or n.startswith(_PACKAGE + ".")]:
    del sys.modules[_name]
_added_path = str(EXTENSION_DIR) not in sys.path
if _added_path:
    sys.path.insert(0, str(EXTENSION_DIR))
try:
    from signal_leak_webui import fit_panel, hooks, options, routes, ui, xyz
    from signal_leak_webui.host import detect
    from signal_leak_webui.presets import Presets
finally:
    if _added_path:
        sys.path.remove(str(EXTENSION_DIR))

HOST = detect()
PRESETS = Presets(HOST)
HOOKS = hooks.LeakHooks(PRESETS)
TITLE = options.TITLE


class SignalLeakBiasScript(scripts.Script):
    sorting_priority = 15  # Forge's UI order

    def __init__(self) -> None:
        super().__init__()
        self._host_components: dict[str, object] = {}

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> object:
        return scripts.AlwaysVisible

    def after_component(self, component: object, **kwargs: object) -> None:
        # the seed and size fields of this tab, for the Preview button
        elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
        tab = "img2img" if self.is_img2img else "txt2img"
        for key in ("seed", "width", "height"):
            if elem_id == f"{tab}_{key}":
                self._host_components[key] = component

    def ui(self, is_img2img: bool) -> list:
        return ui.build(self, HOOKS, self._host_components)

    def process(self, p, *args) -> None:  # noqa: ANN001
        HOOKS.process(p, args)

    def process_before_every_sampling(self, p, *args, **kwargs) -> None:  # noqa: ANN001
        HOOKS.before_sampling(p, self.is_img2img, kwargs)

    def postprocess(self, p, processed, *args) -> None:  # noqa: ANN001
        HOOKS.postprocess(p)


script_callbacks.on_ui_settings(options.register)
script_callbacks.on_before_ui(lambda: xyz.register(PRESETS))
script_callbacks.on_app_started(lambda _demo, app: routes.register(PRESETS, app))

__all__ = ["HOOKS", "HOST", "PRESETS", "SignalLeakBiasScript", "fit_panel", "routes", "ui", "xyz"]
