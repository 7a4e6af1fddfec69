"""Browser suite: the extension's UI in a real WebUI (AUTOMATIC1111, or a Forge-family host
the real-host suite is set to), driven by Playwright with the system's Chromium (opt-in;
see README.md here).

The WebUI is started by the real-host suite's fixture code (tests/integration/conftest.py:
same tiny models, same temporary --data-dir layout, same offline flags) but with its UI
(``--api`` instead of ``--nowebui``). Every test here is a ``browser`` test: the project's
pytest config deselects them unless ``-m browser`` is given; when the WebUI, Playwright or
Chromium is missing they are reported as skipped with the reason.

Environment (besides the real-host suite's SLB_WEBUI_DIR, SLB_WEBUI_PYTHON, ...):
  SLB_CHROMIUM             Chromium/Chrome executable (default: chromium, chromium-browser,
                           google-chrome or google-chrome-stable on PATH). Playwright's own
                           browser downloads are never used.
  SLB_BROWSER_SCREENSHOTS  folder for the screenshots (default: the test run's temporary
                           folder; point it at docs/ to refresh the README's, which
                           test_trained_model_ui.py takes on the demo model).
  SLB_BROWSER_HEADFUL      set to 1 to watch the browser (needs a display).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
INTEGRATION = HERE.parent / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))

from slb_webui import FORGE, HOST, HOST_NAMES, HOSTS, mark_opt_in_suite  # noqa: E402


def _load_integration_conftest():  # noqa: ANN202
    """The real-host suite's conftest as a plain module (its fixtures and server start are
    reused; pytest does not register its hooks for this folder)."""
    name = "slb_integration_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, INTEGRATION / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


host_suite = _load_integration_conftest()
WebUI = host_suite.WebUI
# the real-host suite's fixtures, by name: `presets` then uses this folder's `webui_server`
webui_setup = host_suite.webui_setup
presets = host_suite.presets

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The UI starts where a user would not wait long: small images and few steps (ui-config.json
# defaults of the temporary data dir; the host reads them at start).
UI_DEFAULTS = {}
for _tab in ("txt2img", "img2img"):
    UI_DEFAULTS.update({
        f"{_tab}/Width/value": 64,
        f"{_tab}/Height/value": 64,
        f"{_tab}/Prompt/value": "a photo of a cat",
        f"customscript/sampler.py/{_tab}/Sampling steps/value": 3,
        f"customscript/sampler.py/{_tab}/Sampling method/value": "Euler",
        # Forge Neo's labels
        f"customscript/sampler.py/{_tab}/Sampling Steps/value": 3,
        f"customscript/sampler.py/{_tab}/Sampling Method/value": "Euler",
        f"customscript/seed.py/{_tab}/Seed/value": 1234,
    })


# Forge and Neo set the txt2img/img2img size, steps, sampler and CFG from settings of the UI
# preset ("sd", "xl", ...) when the page loads (Forge modules_forge/main_entry.py:340-362,
# Neo modules_forge/main_entry.py:453-500), over ui-config.json: the same defaults for "sd".
FORGE_UI_SETTINGS = {"forge_preset": "sd"}
for _tab in ("t2i", "i2i"):
    FORGE_UI_SETTINGS.update({f"sd_{_tab}_width": 64, f"sd_{_tab}_height": 64,
                              f"sd_{_tab}_step": 3, f"sd_{_tab}_sampler": "Euler",
                              f"sd_{_tab}_cfg": 7})


def chromium_path() -> str | None:
    explicit = os.environ.get("SLB_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def skip_reason() -> str | None:
    """Why the browser suite cannot run here, or None."""
    if HOST is None:
        return ("browser suite not configured: set SLB_WEBUI_DIR to an AUTOMATIC1111 v1.10.1 "
                "checkout (and SLB_WEBUI_PYTHON); see tests/browser/README.md")
    if importlib.util.find_spec("playwright") is None:
        return ("browser suite needs the playwright package in the test environment "
                "(pip install playwright; its browser download is not needed)")
    if chromium_path() is None:
        wanted = os.environ.get("SLB_CHROMIUM") or " / ".join(CHROMIUM_NAMES)
        return f"browser suite needs a Chromium executable: {wanted} not found (SLB_CHROMIUM)"
    return None


SKIP_REASON = skip_reason()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_opt_in_suite(config, items, HERE, "browser", SKIP_REASON)


def pytest_report_header(config: pytest.Config) -> str:
    if SKIP_REASON is not None:
        return f"browser suite: skipped ({SKIP_REASON})"
    return (f"browser suite: chromium={chromium_path()} {HOST_NAMES[HOST]} "
            f"{HOSTS[HOST]}={os.environ[HOSTS[HOST]]}")


# --------------------------------------------------------------------------- fixtures


def prepare_ui(setup, defaults: dict | None = None) -> tuple[str, ...]:  # noqa: ANN001
    """Writes the UI defaults (``UI_DEFAULTS`` unless given) into ``setup``'s data dir;
    returns the extra start flags."""
    config = setup.data_dir / "ui-config.json"
    config.write_text(json.dumps(UI_DEFAULTS if defaults is None else defaults, indent=2))
    if FORGE:
        settings_file = setup.data_dir / "config.json"
        settings = json.loads(settings_file.read_text())
        settings_file.write_text(json.dumps({**settings, **FORGE_UI_SETTINGS}, indent=2))
    # The host serves its own scripts (script.js, javascript/*.js) and the extensions' with
    # Gradio's file route, which in Gradio 4 answers 403 outside the allowed paths: by
    # default only the data dir, which in a normal install holds the WebUI and its
    # extensions. The suite's data dir is elsewhere, so allow both folders as they are.
    return ("--gradio-allowed-path", str(setup.webui_dir),
            "--gradio-allowed-path", str(setup.extension_dir.resolve()))


@pytest.fixture(scope="session")
def browser_suite() -> object:
    """What a test module needs from here: ``host_suite`` (the real-host suite's conftest)
    and ``prepare_ui``."""
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def webui_server(webui_setup) -> Iterator[WebUI]:  # noqa: ANN001
    """The WebUI with its UI and API (``--api``), on a free 127.0.0.1 port."""
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    allowed = prepare_ui(webui_setup)
    with host_suite.start_server(webui_setup, ui=True, extra_flags=allowed) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """System Chromium through Playwright (never a downloaded browser)."""
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    from playwright.sync_api import sync_playwright

    headful = os.environ.get("SLB_BROWSER_HEADFUL") == "1"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(),
                                             headless=not headful, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the README screenshots go (SLB_BROWSER_SCREENSHOTS, else a temporary folder)."""
    folder = os.environ.get("SLB_BROWSER_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def console_log() -> list[dict]:
    """Every console message, page error and failed request of the session's pages."""
    return []


@pytest.fixture
def ui(browser, webui_server, presets, console_log):  # noqa: ANN001, ANN201
    """A freshly loaded WebUI page (its own browser context), with the test presets
    written. The presets are written after the UI was built, so a page lists them only
    after the preset refresh button is clicked, as for a user who adds a file."""
    from ui_driver import UIPage

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        yield UIPage(page, webui_server.base_url, console_log).load()
    finally:
        context.close()
