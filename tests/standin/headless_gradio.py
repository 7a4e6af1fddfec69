"""A headless imitation of the part of gradio 3.41 an extension's ``ui()`` uses (tests only).

The stand-in builds its UI with it when gradio is not installed; ``fixtures.
install_headless_gradio()`` makes ``import gradio`` return it. Components keep their
constructor arguments as attributes (``value``, ``label``, ``minimum``, ``choices``...) and
record listeners in ``.events``; layouts used as context managers collect ``children``; like
A1111's patched gradio, ``tooltip=`` is kept as ``webui_tooltip``. Nothing is rendered.
"""

import types

HEADLESS = True
__version__ = "0.0.0-headless"
_open_layouts = []
messages = []  # ("warning" | "info", text) from gr.Warning / gr.Info


def update(**changes):
    return {"__type__": "update", **changes}


class Error(Exception):
    pass


def Warning(message=""):  # noqa: A001, N802 - gradio's names
    messages.append(("warning", message))


def Info(message=""):  # noqa: N802
    messages.append(("info", message))


class Block:
    POSITIONAL, EMPTY, DEFAULTS = ("value",), None, {}

    def __init__(self, *given, **kwargs):
        if len(given) > len(self.POSITIONAL):
            raise TypeError(f"{type(self).__name__}: too many positional arguments")
        params = {"label": None, "elem_id": None, "visible": True, "elem_classes": [],
                  **self.DEFAULTS, **dict(zip(self.POSITIONAL, given, strict=False)), **kwargs}
        classes = params.pop("elem_classes") or []
        self.elem_classes = [classes] if isinstance(classes, str) else list(classes)
        self.webui_tooltip = params.pop("tooltip", None)
        render = params.pop("render", True)
        vars(self).update(params, events=[], children=[])
        self.parent = _open_layouts[-1] if render and _open_layouts else None
        if self.parent is not None:
            self.parent.children.append(self)
        if "value" in self.POSITIONAL:
            value = getattr(self, "value", None)
            value = value() if callable(value) else value
            self.value = self.empty_value() if value is None else value

    def empty_value(self):
        return self.EMPTY

    def get_block_name(self):
        return type(self).__name__.lower()

    update = staticmethod(update)


def _listen(event):
    def register(self, fn=None, inputs=None, outputs=None, **spec):
        listener = types.SimpleNamespace(block=self, event=event, spec={
            "fn": fn, "inputs": inputs, "outputs": outputs, **spec})
        listener.then = listener.success = register.__get__(self)
        self.events.append(listener)
        return listener

    return register


for _event in ("change", "input", "click", "release", "upload", "select", "submit", "blur",
               "focus", "clear", "edit", "load"):
    setattr(Block, _event, _listen(_event))


class Layout(Block):
    POSITIONAL = ()

    def __enter__(self):
        _open_layouts.append(self)
        return self

    def __exit__(self, *exc):
        _open_layouts.remove(self)


class Blocks(Layout):
    def queue(self, *args, **kwargs):
        return self

    def launch(self, *args, **kwargs):
        pass


class Slider(Block):
    POSITIONAL, DEFAULTS = ("minimum", "maximum", "value", "step", "label"), {
        "minimum": 0, "maximum": 100, "step": None}

    def empty_value(self):
        return self.minimum


# name: (base, positional arguments, value when None is given, other defaults)
_KINDS = {
    "Row": (Layout, (), None, {}), "Group": (Layout, (), None, {}),
    "Box": (Layout, (), None, {}), "Form": (Layout, (), None, {}),
    "Tabs": (Layout, (), None, {}), "Tab": (Layout, ("label",), None, {}),
    "Column": (Layout, ("scale", "min_width"), None, {"scale": 1, "min_width": 320}),
    "Accordion": (Layout, ("label",), None, {"open": True}),
    "Checkbox": (Block, ("value", "label"), False, {}),
    "Number": (Block, ("value", "label"), None, {}),
    "Textbox": (Block, ("value", "lines", "max_lines", "placeholder", "label"), "",
                {"lines": 1}),
    "Dropdown": (Block, ("choices", "value", "type"), None, {"choices": None, "type": "value"}),
    "Radio": (Block, ("choices", "value", "type", "label"), None, {"choices": None}),
    "CheckboxGroup": (Block, ("choices", "value", "type", "label"), [], {"choices": None}),
    "Button": (Block, ("value", "variant"), "Run", {"variant": "secondary"}),
    "HTML": (Block, ("value", "label"), "", {}), "Markdown": (Block, ("value",), "", {}),
}
for _name, (_base, _positional, _empty, _defaults) in _KINDS.items():
    globals()[_name] = type(_name, (_base,), {"POSITIONAL": _positional, "EMPTY": _empty,
                                              "DEFAULTS": _defaults})
for _name in ("JSON", "Label", "Image", "Gallery", "File", "ColorPicker", "Dataframe", "Code",
              "State"):
    globals()[_name] = type(_name, (Block,), {})
TabItem = Tab  # noqa: F821 - made in the loop above


class Progress:
    """``gr.Progress``: each reported fraction lands in ``.reports``."""

    def __init__(self, track_tqdm=False):
        self.track_tqdm, self.reports = track_tqdm, []

    def __call__(self, progress, desc=None, total=None, unit="steps"):
        self.reports.append((progress, desc))

    def tqdm(self, iterable, desc=None, total=None, unit="steps"):
        return iterable


components = types.SimpleNamespace(Component=Block, IOComponent=Block, Form=Form)  # noqa: F821
