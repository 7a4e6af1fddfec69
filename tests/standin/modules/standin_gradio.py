"""Stand-in helper: the gradio the stand-in builds UI with -- the real one when importable
(A1111 pins 3.41.2), else the test-only ``headless_gradio``. On real gradio it adds, once,
what A1111's ``modules/gradio_extensons.py`` (17-21) adds to every component: a ``tooltip=``
keyword kept as ``webui_tooltip`` (headless_gradio does the same itself)."""

import importlib
import sys


def gradio():
    mod = sys.modules.get("gradio")
    if mod is None:
        try:
            mod = importlib.import_module("gradio")
        except ImportError:
            mod = importlib.import_module("headless_gradio")
    io_cls = getattr(getattr(mod, "components", None), "IOComponent", None)
    if not is_headless(mod) and io_cls is not None and "_standin_init" not in vars(io_cls):
        plain_init = io_cls.__init__

        def init_taking_tooltip(self, *args, tooltip=None, **kwargs):
            self.webui_tooltip = tooltip
            plain_init(self, *args, **kwargs)

        io_cls.__init__ = io_cls._standin_init = init_taking_tooltip
    return mod


def is_headless(mod=None):
    return bool(getattr(mod if mod is not None else gradio(), "HEADLESS", False))
