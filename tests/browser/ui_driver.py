"""Driving a WebUI's Gradio UI the way a user does (not a test module).

Two UIs: A1111's (and reForge's, Classic's) Gradio 3.41, and Forge's and Neo's Gradio 4.40.
Element ids: the host's own (``txt2img_generate``, ``html_info_txt2img``, ...) and ours,
``script_<tab>_signal_leak_bias_<name>`` (``script.elem_id``). Where the two differ:

- an HTML component's text is in a ``.prose`` div inside the block that has the id (Gradio 3
  puts the id on that div too, Gradio 4 only on the block): read as ``#id .prose``;
- a dropdown entry names its value in ``data-value`` (3) or ``aria-label`` (4);
- Gradio 4 keeps hidden status trackers (with old timings) on the page, so "busy" means a
  *visible* progress element there.
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np
from PIL import Image

OURS = re.compile(r"signal[_ -]?leak|\bslb\b", re.IGNORECASE)
LONG = 120_000  # ms: generous for a 2-core machine
SCREENSHOT_LIMIT = 150_000  # bytes per README screenshot


def prefix(tab: str) -> str:
    return f"script_{tab}_signal_leak_bias_"


class UIPage:
    """One loaded WebUI page; records its console messages into ``log``."""

    def __init__(self, page, base_url: str, log: list[dict]) -> None:  # noqa: ANN001
        self.page = page
        self.base_url = base_url
        self.log = log
        page.set_default_timeout(LONG)
        page.on("console", lambda m: log.append(
            {"kind": m.type, "text": m.text, "where": _where(m)}))
        page.on("pageerror", lambda e: log.append(
            {"kind": "pageerror", "text": f"{e}\n{getattr(e, 'stack', '') or ''}", "where": ""}))
        page.on("requestfailed", lambda r: log.append(
            {"kind": "requestfailed", "text": f"{r.url}: {r.failure}", "where": r.url}))

    # ------------------------------------------------------------------ navigation

    def load(self, with_extension: bool = True) -> UIPage:
        """Open the page; wait until our accordion is set up in both tabs (or, without
        ``with_extension``, until the host's own UI is)."""
        started = time.monotonic()
        self.page.goto(self.base_url + "/", wait_until="domcontentloaded")
        self.page.wait_for_function("() => window.gradio_config && window.gradio_config.version")
        self.gradio = self.page.evaluate("() => String(window.gradio_config.version)")
        self.gradio4 = self.gradio.startswith("4")
        if with_extension:
            # the host's inputAccordion.js adds the header checkbox once the UI is set up
            self.page.wait_for_selector(f"#{prefix('txt2img')}enabled-visible-checkbox",
                                        state="attached")
            self.page.wait_for_selector(f"#{prefix('img2img')}enabled-visible-checkbox",
                                        state="attached")
        else:
            self.page.wait_for_selector("#txt2img_generate", state="visible")
        self.load_seconds = time.monotonic() - started
        return self

    def tab(self, name: str) -> None:
        """Switch to a top-level tab by its label (``txt2img``, ``img2img``, ``PNG Info``;
        Forge writes ``Txt2img``, ``Img2img``)."""
        self._tab_button("#tabs", name).click()
        tab_id = {"PNG Info": "pnginfo", "Extensions": "extensions"}.get(name, name)
        self.page.wait_for_selector(f"#tab_{tab_id}", state="visible")

    def _tab_button(self, tabs: str, label: str):  # noqa: ANN202
        """The button of the ``tabs`` block's tab labelled ``label`` (any case)."""
        return self.page.locator(f"{tabs} > .tab-nav button", has_text=re.compile(
            rf"^\s*{re.escape(label)}\s*$", re.IGNORECASE))

    # ------------------------------------------------------------------ Extensions tab

    def extensions_tab(self, name: str):  # noqa: ANN201
        """Open Extensions, then its sub-tab ``name`` ("Installed", "Install from URL")."""
        self.tab("Extensions")
        self._tab_button("#tabs_extensions", name).click()
        return self.page.locator("#tabs_extensions > .tabitem:visible")

    def install_from_url(self, url: str) -> str:
        """Extensions > Install from URL > Install, as a user does; returns the result the
        host shows under the button."""
        panel = self.extensions_tab("Install from URL")
        panel.get_by_label("URL for extension's git repository").fill(url)
        panel.get_by_role("button", name="Install", exact=True).click()
        self.page.wait_for_function(
            "() => { const el = document.querySelector('#extension_install_result');"
            " return el && /Installed into|Error|error/.test(el.innerText); }", timeout=LONG)
        return self.html("extension_install_result")

    def installed_row(self, name: str):  # noqa: ANN201
        """The extension's row in the Installed table."""
        return self.page.locator("#extensions tr", has=self.page.locator(
            f"input[name='enable_{name}']"))

    def check_for_updates(self, name: str) -> str:
        """Installed > Check for updates; waits until the extension's row offers an update
        and returns the row's text."""
        panel = self.extensions_tab("Installed")
        panel.get_by_role("button", name="Check for updates").click()
        self.page.wait_for_selector(f"#extensions input[name='update_{name}']", timeout=LONG)
        return self.installed_row(name).inner_text()

    def apply_and_restart(self) -> str:
        """Installed > "Apply and restart UI" (or "Apply and quit", the label of a host
        started without a restarting wrapper); returns the label clicked."""
        panel = self.extensions_tab("Installed")
        self.page.locator("#extensions").first.wait_for(state="attached")
        button = panel.get_by_role("button", name=re.compile(r"^Apply and (restart UI|quit)$"))
        label = button.inner_text().strip()
        button.click()
        return label

    # ------------------------------------------------------------------ our accordion

    def el(self, tab: str, name: str):  # noqa: ANN201
        return self.page.locator(f"#{prefix(tab)}{name}")

    def accordion(self, tab: str):  # noqa: ANN201
        return self.el(tab, "enabled")

    def header_checkbox(self, tab: str):  # noqa: ANN201
        return self.el(tab, "enabled-visible-checkbox")

    def open_accordion(self, tab: str) -> None:
        """Open the accordion by its header (the host links opening and switching on)."""
        if not self.header_checkbox(tab).is_checked():
            self.accordion(tab).locator("> .label-wrap").click()
        self.page.wait_for_function(
            "id => document.getElementById(id).checked",
            arg=f"{prefix(tab)}enabled-visible-checkbox")
        self.el(tab, "preset").wait_for(state="visible")

    def sub_accordion(self, tab: str, label: str):  # noqa: ANN201
        """One of our sub-accordions ("Preview", "Fit a preset", "Low-frequency ...")."""
        header = self.accordion(tab).locator(".gradio-accordion > .label-wrap",
                                             has_text=re.compile(rf"^\s*{re.escape(label)}"))
        return header.locator("xpath=..")

    def open_sub_accordion(self, tab: str, label: str):  # noqa: ANN201
        block = self.sub_accordion(tab, label)
        header = block.locator("> .label-wrap")
        if "open" not in (header.get_attribute("class") or ""):
            header.click()
        return block

    def html(self, element_id: str) -> str:
        """The text of a Gradio HTML component (its inner ``.prose`` div)."""
        return self.page.locator(f"#{element_id} .prose").first.inner_text()

    def wait_html(self, element_id: str, starts: str = "", contains: str = "") -> None:
        """Wait until an HTML component's text starts with / contains the given text."""
        self.page.wait_for_function(
            "([id, starts, contains]) => { const el = document.querySelector("
            "'#' + id + ' .prose'); return el && el.innerText.startsWith(starts)"
            " && el.innerText.includes(contains); }",
            arg=[element_id, starts, contains])

    def summary(self, tab: str) -> str:
        return self.html(f"{prefix(tab)}summary")

    def refresh_presets(self, tab: str) -> None:
        self.el(tab, "refresh").click()
        self.wait_idle()

    def pick_preset(self, tab: str, name: str) -> None:
        """Open the accordion, refresh the preset list and choose ``name``, as a user who
        just added the file does."""
        self.open_accordion(tab)
        self.refresh_presets(tab)
        self.choose(self.el(tab, "preset"), name)

    def preview_leak(self, tab: str):  # noqa: ANN201
        """*Preview* > *Preview leak*; returns the Preview block and the drawn image's pixels."""
        block = self.open_sub_accordion(tab, "Preview")
        self.el(tab, "preview").click()
        image = block.locator(".gradio-image img")
        image.wait_for(state="visible")
        self.page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                    arg=image.element_handle())
        self.wait_idle()
        return block, self.image(image.get_attribute("src"))

    def dropdown_choices(self, element) -> list[str]:  # noqa: ANN001
        """The entries a user sees when opening a Gradio dropdown."""
        element.locator("input").click()
        items = element.locator("ul.options li")
        items.first.wait_for(state="visible")
        values = [li.get_attribute("data-value") or li.get_attribute("aria-label")
                  for li in items.all()]
        element.locator("input").press("Escape")
        self.page.locator("body").click(position={"x": 1, "y": 1})
        return values

    def choose(self, element, value: str) -> None:  # noqa: ANN001
        """Pick ``value`` in a Gradio dropdown by clicking its entry."""
        element.locator("input").click()
        quoted = json.dumps(value, ensure_ascii=False)
        element.locator(f"ul.options li[data-value={quoted}], "
                        f"ul.options li[aria-label={quoted}]").first.click()
        self.page.wait_for_function(
            "([el, v]) => el.querySelector('input').value === v",
            arg=[element.element_handle(), value])

    def preset_value(self, tab: str) -> str:
        return self.el(tab, "preset").locator("input").input_value()

    def set_number(self, element, value: object) -> None:  # noqa: ANN001
        """A slider's or number box's value, typed in as a user does."""
        box = element.locator("input[type=number]")
        if box.count() == 0:
            box = element.locator("input")
        box.first.fill(str(value))
        box.first.press("Tab")

    def number(self, element) -> float:  # noqa: ANN001
        box = element.locator("input[type=number]")
        if box.count() == 0:
            box = element.locator("input")
        return float(box.first.input_value())

    def radio(self, tab: str, name: str, value: str) -> None:
        self.el(tab, name).locator(f"input[type=radio][value='{value}']").check()

    def radio_value(self, tab: str, name: str) -> str | None:
        for box in self.el(tab, name).locator("input[type=radio]").all():
            if box.is_checked():
                return box.get_attribute("value")
        return None

    def checkbox(self, tab: str, name: str):  # noqa: ANN201
        return self.el(tab, name).locator("input[type=checkbox]")

    # ------------------------------------------------------------------ generating

    def wait_idle(self) -> None:
        """Wait until no Gradio event of the page is pending (a pending event's status
        tracker shows a progress text or an ETA bar)."""
        self.page.wait_for_timeout(200)
        if not self.gradio4:
            self.page.wait_for_function(
                "() => !document.querySelector('.progress-text, .eta-bar, .progress-bar')")
            return
        self.page.wait_for_function(
            "() => !Array.from(document.querySelectorAll("
            "'.progress-text, .eta-bar, .progress-bar, .progressDiv'))"
            ".some(el => el.getClientRects().length > 0)")

    def gallery_src(self, tab: str) -> str | None:
        img = self.page.locator(f"#{tab}_gallery img")
        return img.first.get_attribute("src") if img.count() else None

    def generate(self, tab: str = "txt2img", timeout: int = LONG) -> tuple[np.ndarray, str]:
        """Click Generate; wait (up to ``timeout`` ms) for the new image; return its pixels
        and the info text shown under the gallery."""
        before = self.gallery_src(tab)
        self.page.locator(f"#{tab}_generate").click()
        self.page.wait_for_function(
            "([sel, old]) => { const i = document.querySelector(sel);"
            " return i && i.getAttribute('src') && i.getAttribute('src') !== old; }",
            arg=[f"#{tab}_gallery img", before], timeout=timeout)
        self.wait_html(f"html_info_{tab}", contains="Steps:")
        self.wait_idle()
        return self.image(self.gallery_src(tab)), self.html(f"html_info_{tab}")

    def image(self, src: str) -> np.ndarray:
        """The pixels of an image the page shows (a /file= URL or a data: URL)."""
        if src.startswith("data:"):
            import base64

            data = base64.b64decode(src.split(",", 1)[1])
        else:
            response = self.page.request.get(src)
            assert response.ok, f"GET {src}: HTTP {response.status}"
            data = response.body()
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB")).astype(np.int16)


def save_screenshot(locator, path: Path) -> int:  # noqa: ANN001
    """A PNG of one element, cropped to it; palette-reduced when it would be large.
    Returns its size in bytes."""
    raw = locator.screenshot(animations="disabled")
    data = raw
    if len(data) > SCREENSHOT_LIMIT:
        with Image.open(io.BytesIO(raw)) as image:
            for colours in (256, 128, 64):
                out = io.BytesIO()
                image.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT).save(
                    out, format="PNG", optimize=True)
                data = out.getvalue()
                if len(data) <= SCREENSHOT_LIMIT:
                    break
    path.write_bytes(data)
    return len(data)


def hide_paths(block, data_dir: Path, folder: Path, shown_as: str) -> None:  # noqa: ANN001
    """Before a screenshot: no path of the machine the suite ran on in ``block`` (the image
    folder's box reads ``shown_as``, the data dir is cut from texts). Display only: the
    page's values are not changed."""
    block.evaluate("""(el, [dataDir, folder, shownAs]) => {
        for (const box of el.querySelectorAll('textarea'))
            if (box.value === folder) box.value = shownAs;
        const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
        while (walker.nextNode())
            walker.currentNode.nodeValue = walker.currentNode.nodeValue.split(dataDir).join('');
    }""", [str(data_dir) + "/", str(folder), shown_as])


def _where(message) -> str:  # noqa: ANN001
    try:
        location = message.location
        return f"{location.get('url', '')}:{location.get('lineNumber', '')}"
    except Exception:  # noqa: BLE001 - informative only
        return ""


def mentions_ours(entry: dict) -> bool:
    return bool(OURS.search(entry.get("text", "")) or OURS.search(entry.get("where", "")))
