"""Stand-in for A1111 ``modules/script_callbacks.py``: callback registrars and invokers.

``on_<event>(callback, *, name=None)`` (456-600) appends ``ScriptCallback(script, callback,
name)`` (121-146; names made unique per file and event). Invokers call every callback and
report a failure without stopping (253-400); ``before_ui_callback`` runs them in REVERSE
registration order (394-399). No metadata.ini or user ordering (149-186).
"""

import inspect
import os
from dataclasses import dataclass
from typing import Any

from modules import errors

EVENTS = ("app_started", "model_loaded", "ui_tabs", "ui_train_tabs", "ui_settings",
          "before_image_saved", "image_saved", "extra_noise", "cfg_denoiser", "cfg_denoised",
          "cfg_after_cfg", "before_component", "after_component", "image_grid",
          "infotext_pasted", "script_unloaded", "before_ui", "on_reload", "list_optimizers",
          "list_unets", "before_token_counter")
callback_map = {f"callbacks_{event}": [] for event in EVENTS}


@dataclass
class ScriptCallback:
    script: str
    callback: Any
    name: str = "unnamed"


def _caller_file():
    return next((f.filename for f in inspect.stack()[1:] if f.filename != __file__), "unknown")


def add_callback(callbacks, fun, *, name=None, category="unknown", filename=None):
    filename = filename or _caller_file()
    folder = os.path.basename(os.path.dirname(os.path.dirname(filename)))
    base = f"{folder}/{os.path.basename(filename)}/{category}" + (f"/{name}" if name else "")
    taken, unique, n = {c.name for c in callbacks}, base, 0
    while unique in taken:
        n += 1
        unique = f"{base}-{n}"
    callbacks.append(ScriptCallback(filename, fun, unique))


def _registrar(event):
    def register(callback, *, name=None):
        add_callback(callback_map[f"callbacks_{event}"], callback, name=name, category=event)

    return register


# on_app_started, on_ui_settings, on_before_ui, on_infotext_pasted, ... (on_reload's
# registrar is called on_before_reload in A1111)
for _event in EVENTS:
    globals()["on_before_reload" if _event == "on_reload" else f"on_{_event}"] = \
        _registrar(_event)


def clear_callbacks():
    for entries in callback_map.values():
        entries.clear()


def _fire(event, *args, reverse=False):
    entries = list(callback_map[f"callbacks_{event}"])
    results = []
    for entry in entries[::-1] if reverse else entries:
        try:
            results.append(entry.callback(*args))
        except Exception:
            errors.report(f"Error executing callback {event}_callback for {entry.script}",
                          exc_info=True)
    return results


def _invoker(event, reverse=False):
    return lambda *args: _fire(event, *args, reverse=reverse) and None


app_started_callback = _invoker("app_started")  # (demo, app)
model_loaded_callback = _invoker("model_loaded")  # (sd_model)
ui_settings_callback = _invoker("ui_settings")
before_ui_callback = _invoker("before_ui", reverse=True)  # last registered runs first
infotext_pasted_callback = _invoker("infotext_pasted")  # (infotext, params)
script_unloaded_callback = _invoker("script_unloaded")


