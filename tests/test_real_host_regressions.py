"""Regressions found by the real-host suite (tests/integration, A1111 v1.10.1), guarded here
without a WebUI.

Each test loads ``scripts/signal_leak_bias.py`` against small fake host modules built in this
file (plain objects, installed with monkeypatch for the test only), reproduces the host
behaviour the real WebUI showed, and checks the extension copes:

- ``--nowebui``: the API builds the scripts, and the X/Y/Z script's ``ui()`` copies the axis
  list into ``current_axis_options`` (which ``run()`` indexes), *before* ``on_before_ui``,
  where the extension adds its axes. Our axes were missing from that copy, so an API request
  naming one failed with ``IndexError: list index out of range``.
- ``POST /signal-leak/v1/fit`` is an ``async`` route; it ran the whole fit on the server's
  event loop, so every other request (``/sdapi/v1/progress``, ``/sdapi/v1/interrupt``)
  waited until the fit ended and the fit could not be interrupted.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "signal_leak_bias.py"
OUR_AXES = ["[Signal Leak] Preset", "[Signal Leak] Strength", "[Signal Leak] LF mode",
            "[Signal Leak] Channel 0 mean", "[Signal Leak] Channel 1 mean",
            "[Signal Leak] Channel 2 mean", "[Signal Leak] Channel 3 mean",
            "[Signal Leak] Leak seed",
            *[f"[Signal Leak] Channel {c} {g} gradient" for c in range(4)
              for g in ("left-right", "top-bottom")]]


# --------------------------------------------------------------------------- fake host


def _module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


class _Script:
    """The host's ``scripts.Script`` base, reduced to what the extension touches."""

    is_img2img = False
    infotext_fields = None
    paste_field_names = None

    def __init__(self) -> None:
        pass

    def elem_id(self, item: str) -> str:
        return f"script_{item}"


class _Callbacks:
    def __init__(self) -> None:
        self.ui_settings: list = []
        self.before_ui: list = []
        self.app_started: list = []


class FakeHost:
    """Fake ``modules`` (and ``gradio``/``fastapi``) for loading the script."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self.callbacks = _Callbacks()
        cb = self.callbacks
        self.scripts = _module(
            "modules.scripts", Script=_Script, AlwaysVisible=object(), scripts_data=[],
            scripts_txt2img=types.SimpleNamespace(scripts=[]),
            scripts_img2img=types.SimpleNamespace(scripts=[]))
        self.shared = _module(
            "modules.shared", opts=types.SimpleNamespace(data={}),
            cmd_opts=types.SimpleNamespace(api=False, nowebui=True),
            state=types.SimpleNamespace(interrupted=False),
            sd_model=None)
        submodules = {
            "call_queue": _module("modules.call_queue", queue_lock=threading.Lock(),
                                  wrap_gradio_gpu_call=lambda fn, extra_outputs=None: fn),
            "devices": _module("modules.devices", device="cpu", dtype_vae=None,
                               torch_gc=lambda: None),
            "paths": _module("modules.paths", models_path=str(tmp_path / "models")),
            "script_callbacks": _module(
                "modules.script_callbacks", on_ui_settings=cb.ui_settings.append,
                on_before_ui=cb.before_ui.append, on_app_started=cb.app_started.append),
            "scripts": self.scripts,
            "sd_samplers_kdiffusion": _module("modules.sd_samplers_kdiffusion",
                                              KDiffusionSampler=type("KD", (), {})),
            "sd_samplers_timesteps": _module("modules.sd_samplers_timesteps",
                                             CompVisSampler=type("TS", (), {})),
            "shared": self.shared,
            "ui_components": _module("modules.ui_components", InputAccordion=object,
                                     ToolButton=object),
            "infotext_utils": _module("modules.infotext_utils", PasteField=tuple),
        }
        package = _module("modules", **submodules)
        monkeypatch.setitem(sys.modules, "modules", package)
        for name, module in submodules.items():
            monkeypatch.setitem(sys.modules, f"modules.{name}", module)

        class HTTPException(Exception):  # noqa: N818 - FastAPI's name
            def __init__(self, status_code: int, detail: str = "") -> None:
                super().__init__(detail)
                self.status_code, self.detail = status_code, detail

        async def run_in_threadpool(func, *args, **kwargs):  # what FastAPI's does
            return await asyncio.to_thread(func, *args, **kwargs)

        monkeypatch.setitem(sys.modules, "gradio", _module("gradio", Progress=lambda: None))
        monkeypatch.setitem(sys.modules, "fastapi", _module(
            "fastapi", HTTPException=HTTPException, Request=type("Request", (), {})))
        monkeypatch.setitem(sys.modules, "fastapi.concurrency", _module(
            "fastapi.concurrency", run_in_threadpool=run_in_threadpool))

    def load(self) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location("slb_regression_extension", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


@pytest.fixture
def fake_host(monkeypatch, tmp_path) -> FakeHost:
    return FakeHost(monkeypatch, tmp_path)


# --------------------------------------------------------------------------- X/Y/Z


class _AxisOption:
    is_img2img = None

    def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0,  # noqa: A002
                 choices=None, prepare=None) -> None:
        self.label, self.type, self.apply, self.choices = label, type, apply, choices


class _AxisOptionImg2Img(_AxisOption):
    is_img2img = True


class _AxisOptionTxt2Img(_AxisOption):
    is_img2img = False


def make_xyz_module(class_name: str = "Script") -> types.ModuleType:
    """The parts of A1111's scripts/xyz_grid.py the extension uses: ``AxisOption``, the
    module-level ``axis_options`` and a script class whose ``ui()`` snapshots the list for
    its tab into ``current_axis_options``. ``class_name``: ``Script`` (A1111, Forge, Neo) or
    ``XYZ`` (Forge Classic's extensions-builtin/xyz/scripts/xyz_grid.py, which has no
    ``Script``)."""
    xyz = _module("xyz_grid.py", AxisOption=_AxisOption)
    xyz.axis_options = [_AxisOption("Nothing", str, None), _AxisOption("Seed", int, None),
                        _AxisOptionTxt2Img("Hires steps", int, None),
                        _AxisOptionImg2Img("Image CFG Scale", float, None)]

    class Script(_Script):
        def ui(self, is_img2img: bool) -> list:
            self.current_axis_options = [x for x in xyz.axis_options
                                         if type(x) is _AxisOption or x.is_img2img == is_img2img]
            return []

    Script.__module__ = "xyz_grid.py"
    Script.__name__ = Script.__qualname__ = class_name
    setattr(xyz, class_name, Script)
    xyz.script_class = Script  # for the tests; the extension finds it in scripts_data
    return xyz


def _xyz_scripts(fake_host: FakeHost, xyz: types.ModuleType) -> tuple:
    fake_host.scripts.scripts_data.append(types.SimpleNamespace(script_class=xyz.script_class,
                                                                module=xyz))
    txt, img = xyz.script_class(), xyz.script_class()
    txt.is_img2img, img.is_img2img = False, True
    fake_host.scripts.scripts_txt2img.scripts = [_Script(), txt]
    fake_host.scripts.scripts_img2img.scripts = [_Script(), img]
    return txt, img


@pytest.mark.parametrize("class_name", ["Script", "XYZ"])
def test_xyz_axes_reach_xyz_scripts_built_before_on_before_ui(fake_host, class_name):
    """--nowebui order: the scripts' ``ui()`` runs (API start), then ``on_before_ui``; with
    the X/Y/Z class named as in A1111 and as in Forge Classic."""
    xyz = make_xyz_module(class_name)
    ext = fake_host.load()
    txt, img = _xyz_scripts(fake_host, xyz)
    txt.ui(False)
    img.ui(True)
    host_txt = [o.label for o in txt.current_axis_options]
    host_img = [o.label for o in img.current_axis_options]
    assert host_txt == ["Nothing", "Seed", "Hires steps"]

    for callback in fake_host.callbacks.before_ui:
        callback()
    assert [o.label for o in txt.current_axis_options] == host_txt + OUR_AXES
    assert [o.label for o in img.current_axis_options] == host_img + OUR_AXES

    # the index an API request uses (host axes first, ours after) selects our axis
    axis = txt.current_axis_options[len(host_txt) + OUR_AXES.index("[Signal Leak] Strength")]
    p = types.SimpleNamespace()
    axis.apply(p, 0.5, [0.5])
    assert p._slb_xyz == {"enabled": True, "strength": 0.5}

    # on_before_ui again (a UI reload): nothing is added twice
    for callback in fake_host.callbacks.before_ui:
        callback()
    assert [o.label for o in txt.current_axis_options] == host_txt + OUR_AXES
    assert [o.label for o in xyz.axis_options].count("[Signal Leak] Strength") == 1
    assert ext.xyz.XYZ_PREFIX == "[Signal Leak] "


@pytest.mark.parametrize("class_name", ["Script", "XYZ"])
def test_xyz_axes_in_the_ui_order_appear_once(fake_host, class_name):
    """UI order: ``on_before_ui`` first, then the scripts' ``ui()`` reads the full list."""
    xyz = make_xyz_module(class_name)
    fake_host.load()
    txt, _ = _xyz_scripts(fake_host, xyz)
    for callback in fake_host.callbacks.before_ui:
        callback()
    txt.ui(False)
    for callback in fake_host.callbacks.before_ui:
        callback()
    labels = [o.label for o in txt.current_axis_options]
    assert labels == ["Nothing", "Seed", "Hires steps", *OUR_AXES]


# --------------------------------------------------------------------------- fit route


class _App:
    def __init__(self) -> None:
        self.routes: dict[str, object] = {}

    def add_api_route(self, path: str, endpoint: object, methods: list[str]) -> None:
        self.routes[path] = endpoint


class _Request:
    def __init__(self, body: object) -> None:
        self.body = body

    async def json(self) -> object:
        return self.body


def test_fit_route_runs_the_fit_off_the_event_loop(fake_host, monkeypatch, tmp_path):
    """While the fit works, the event loop must keep serving other requests: the fake fit
    waits for an event that only another coroutine on the loop sets."""
    ext = fake_host.load()
    app = _App()
    for callback in fake_host.callbacks.app_started:
        callback(None, app)
    post_fit = app.routes["/signal-leak/v1/fit"]

    loop_ran = threading.Event()
    fit_threads = []

    def fake_fit(presets, req):  # noqa: ANN202
        fit_threads.append(threading.get_ident())
        return {"name": req.name, "loop_kept_running": loop_ran.wait(timeout=2.0)}

    monkeypatch.setattr(ext.routes, "api_fit", fake_fit)

    async def other_request() -> None:
        await asyncio.sleep(0.01)
        loop_ran.set()

    async def main() -> tuple:
        answer, _ = await asyncio.gather(
            post_fit(_Request({"folder": str(tmp_path), "name": "x"})), other_request())
        return answer, threading.get_ident()

    answer, loop_thread = asyncio.run(main())
    assert answer == {"name": "x", "loop_kept_running": True}
    assert fit_threads and fit_threads[0] != loop_thread


def test_fit_route_errors_stay_http_errors(fake_host, tmp_path):
    """Validation still answers 422 before any work is handed to a thread."""
    ext = fake_host.load()
    app = _App()
    for callback in fake_host.callbacks.app_started:
        callback(None, app)
    post_fit = app.routes["/signal-leak/v1/fit"]
    with pytest.raises(ext.routes.HTTPException) as caught:
        asyncio.run(post_fit(_Request({"folder": str(tmp_path), "name": "x", "epochs": 1})))
    assert caught.value.status_code == 422
    assert "unknown key(s) 'epochs'" in caught.value.detail
