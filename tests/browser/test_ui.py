"""The extension's UI in a real AUTOMATIC1111 v1.10.1, checked the way a user would.

Run with ``pytest -m browser tests/browser`` (see README.md here). The tests run in file
order; the last one checks the console messages of all pages opened before it.
"""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from slb_webui import MANUAL, infotexts, txt2img_request, with_leak
from ui_driver import LONG, hide_paths, mentions_ours, prefix, save_screenshot

TABS = ("txt2img", "img2img")
REFUSED = "⚠ {} (not for this model)"


def _differ(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or bool(np.any(a != b))


# --------------------------------------------------------------------------- 1


def test_accordion_in_both_tabs(ui, screenshots):
    """The accordion is in txt2img and img2img, closed and off; opening it switches it on
    and shows every control with its default."""
    for tab in TABS:
        if tab != "txt2img":
            ui.tab(tab)
        accordion = ui.accordion(tab)
        assert accordion.is_visible(), f"no Signal Leak Bias accordion in {tab}"
        assert "Signal Leak Bias" in accordion.locator("> .label-wrap").inner_text()
        assert not ui.header_checkbox(tab).is_checked(), f"{tab}: on before the user asked"
        ui.open_accordion(tab)
        # the host's hidden Gradio checkbox (what the generation reads) follows the header
        ui.page.wait_for_function(
            "id => document.querySelector('#' + id + ' input').checked",
            arg=f"{prefix(tab)}enabled-checkbox")
        for name in ("preset", "refresh", "summary", "strength", "lf", "seed", "lowfreq",
                     *(f"{kind}_{c}" for c in range(4) for kind in ("fix_mean", "mean"))):
            assert ui.el(tab, name).first.is_visible(), f"{tab}: control {name} not shown"
        assert ui.preset_value(tab) == MANUAL
        assert ui.summary(tab).startswith("Manual:")
        assert ui.number(ui.el(tab, "strength")) == 1.0
        assert ui.radio_value(tab, "lf") == "sampled"
        assert ui.number(ui.el(tab, "seed")) == -1
        assert [ui.checkbox(tab, f"fix_mean_{c}").is_checked() for c in range(4)] == [False] * 4
        for label in ("Low-frequency controls", "Preview", "Fit a preset"):
            assert ui.sub_accordion(tab, label).is_visible(), f"{tab}: no {label!r} section"
        assert ui.el(tab, "preview").count() == 1
    ui.tab("txt2img")
    ui.refresh_presets("txt2img")
    ui.choose(ui.el("txt2img", "preset"), "test-sd1")
    ui.wait_html(f"{prefix('txt2img')}summary", starts="test-sd1:")
    size = save_screenshot(ui.accordion("txt2img"), screenshots / "tiny_ui_accordion.png")
    print(f"[browser] page loaded in {ui.load_seconds:.1f} s; tiny_ui_accordion.png {size} bytes")


# --------------------------------------------------------------------------- 2


def test_switching_on_changes_image_and_infotext(ui, presets):
    """Off: the host's image, no infotext key. On with a fixed channel-0 mean, then with a
    preset: another image, and the info text under the gallery says what was applied.
    Switched off again by the header checkbox: the first image again."""
    tab = "txt2img"
    plain, info = ui.generate(tab)
    assert "Seed: 1234" in info and "Size: 64x64" in info, info
    assert "Signal leak" not in info, info

    ui.open_accordion(tab)
    ui.checkbox(tab, "fix_mean_0").check()
    ui.set_number(ui.el(tab, "mean_0"), 1.5)
    manual, info = ui.generate(tab)
    assert "Signal leak: manual," in info and 'Signal leak means: "0:1.5"' in info, info
    assert _differ(manual, plain), "a fixed channel-0 mean did not change the image"

    ui.checkbox(tab, "fix_mean_0").uncheck()
    ui.pick_preset(tab, "test-sd1")
    preset, info = ui.generate(tab)
    assert "Signal leak: test-sd1," in info, info
    assert f"Signal leak hash: {presets['test-sd1']}" in info, info
    assert "Signal leak means" not in info, info
    assert _differ(preset, plain) and _differ(preset, manual)

    ui.header_checkbox(tab).click()  # switch off, as a user does, without closing
    ui.page.wait_for_function(
        "id => !document.querySelector('#' + id + ' input').checked",
        arg=f"{prefix(tab)}enabled-checkbox")
    again, info = ui.generate(tab)
    assert "Signal leak" not in info, info
    assert not _differ(again, plain), "switched off, the image is not the host's own"


# --------------------------------------------------------------------------- 3


def test_preset_dropdown_lists_presets_and_refreshes(ui, webui_server, presets):
    """The dropdown lists the usable presets (refused ones marked), the summary lists the
    broken file with its reason, and a preset file added later appears on refresh."""
    tab = "txt2img"
    ui.open_accordion(tab)
    ui.refresh_presets(tab)
    choices = ui.dropdown_choices(ui.el(tab, "preset"))
    assert choices[:2] == [MANUAL, "natural"], choices
    for expected in ("test-sd1", REFUSED.format("test-sdxl"), REFUSED.format("test-3ch")):
        assert expected in choices, f"{expected!r} not in {choices}"
    assert not any("test-broken" in c for c in choices), choices
    assert "unusable: test-broken.safetensors" in ui.summary(tab), ui.summary(tab)

    added = webui_server.presets_dir / "test-added.safetensors"
    shutil.copyfile(webui_server.presets_dir / "test-sd1.safetensors", added)
    try:
        assert "test-added" not in ui.dropdown_choices(ui.el(tab, "preset"))
        ui.refresh_presets(tab)
        assert "test-added" in ui.dropdown_choices(ui.el(tab, "preset"))
        ui.choose(ui.el(tab, "preset"), "test-added")
        ui.wait_html(f"{prefix(tab)}summary", starts="test-added:")
    finally:
        added.unlink(missing_ok=True)
    # img2img has its own dropdown and refresh button
    ui.tab("img2img")
    ui.open_accordion("img2img")
    ui.refresh_presets("img2img")
    choices = ui.dropdown_choices(ui.el("img2img", "preset"))
    assert "test-sd1" in choices and REFUSED.format("test-sdxl") in choices, choices


# --------------------------------------------------------------------------- 4


def test_incompatible_presets_are_marked_before_generating(ui):
    """Refused presets are marked in the dropdown, and choosing one says why in the summary
    (before any generation); a generation with it says "not applied" in the infotext."""
    tab = "txt2img"
    ui.open_accordion(tab)
    ui.refresh_presets(tab)
    problems = []
    for name, why in (("test-sdxl", "sdxl"), ("test-3ch", "channel")):
        entry = REFUSED.format(name)
        ui.choose(ui.el(tab, "preset"), entry)
        ui.wait_idle()
        summary = ui.summary(tab)
        if "not applied to this model:" not in summary or why not in summary:
            problems.append(f"choosing {entry!r}: the summary reads {summary!r}; expected "
                            f"'not applied to this model: ...' with the reason ({why!r})")
        _, info = ui.generate(tab)
        # the host quotes a value with commas or colons
        if not re.search(rf'Signal leak: "?{re.escape(name)} \(not applied: .*{why}', info):
            problems.append(f"generating with {entry!r}: infotext {info!r}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- 5


def test_preview_draws_an_image(ui, screenshots):
    tab = "txt2img"
    ui.pick_preset(tab, "test-sd1")
    block, pixels = ui.preview_leak(tab)
    assert pixels.shape[1] >= 3 * pixels.shape[0] * 0.9, f"not three tiles: {pixels.shape}"
    assert pixels.std() > 1, "the preview is flat"
    note = block.locator(".prose").last.inner_text()
    assert "seed 1234" in note and "the leak" in note, note
    size = save_screenshot(block, screenshots / "tiny_ui_preview.png")
    print(f"[browser] tiny_ui_preview.png {size} bytes")


# --------------------------------------------------------------------------- 6


@pytest.fixture(scope="module")
def image_folder(webui_server, tmp_path_factory) -> Path:
    """52 generated 64x64 PNGs (4 images, 12 more copies of each)."""
    folder = tmp_path_factory.mktemp("fit-images")
    answer = webui_server.post("/sdapi/v1/txt2img", txt2img_request(batch_size=4, seed=10))
    for index, data in enumerate(answer["images"]):
        (folder / f"image{index}.png").write_bytes(base64.b64decode(data))
        for copy in range(12):
            (folder / f"copy{copy:02d}-{index}.png").write_bytes(base64.b64decode(data))
    return folder


def test_fit_panel_progress_stop_and_fit(ui, webui_server, image_folder, screenshots):
    tab = "txt2img"
    ui.open_accordion(tab)
    fit = ui.open_sub_accordion(tab, "Fit a preset")
    fit.get_by_label("Image folder").fill(str(image_folder))
    fit.get_by_label("Preset name").fill("ui-stopped")
    fit.get_by_label("Resolution").fill("512")  # 52 encodes at 512 px: several seconds
    ui.set_number(fit.locator(".gradio-slider", has_text="Batch size"), 1)
    fit.get_by_role("button", name="Fit", exact=True).click()
    bar = fit.locator(".progress-bar")
    bar.wait_for(state="visible", timeout=60_000)
    ui.page.wait_for_function("el => /\\d+\\/\\d+ images/.test(el.innerText)",
                              arg=fit.element_handle())
    progress = fit.locator(".progress-text").first.inner_text()
    fit.get_by_role("button", name="Stop", exact=True).click()
    ui.page.wait_for_function("el => el.innerText.includes('Stopped: nothing was saved.')",
                              arg=fit.element_handle(), timeout=LONG)
    ui.wait_idle()
    saved = sorted(p.name for p in webui_server.presets_dir.iterdir())
    assert not any(name.startswith("ui-stopped") for name in saved), saved
    print(f"[browser] fit progress seen: {progress!r}")

    fit.get_by_label("Preset name").fill("ui-fitted")
    fit.get_by_label("Resolution").fill("64")
    ui.set_number(fit.locator(".gradio-slider", has_text="Batch size"), 0)
    fit.get_by_role("button", name="Fit", exact=True).click()
    ui.page.wait_for_function("el => el.innerText.includes('Fitted ')",
                              arg=fit.element_handle(), timeout=LONG)
    ui.wait_idle()
    result = fit.inner_text()
    assert re.search(r"Fitted 52 images in [\d.]+ s, 0 skipped; saved to .*ui-fitted", result), \
        result
    assert (webui_server.presets_dir / "ui-fitted.safetensors").is_file()
    assert ui.preset_value(tab) == "ui-fitted"
    ui.wait_html(f"{prefix(tab)}summary", starts="ui-fitted:")
    hide_paths(fit, webui_server.data_dir, image_folder, "~/pictures/my-style")
    size = save_screenshot(fit, screenshots / "tiny_ui_fit_panel.png")
    print(f"[browser] tiny_ui_fit_panel.png {size} bytes")
    _, info = ui.generate(tab)
    assert "Signal leak: ui-fitted," in info, info


# --------------------------------------------------------------------------- 7


def test_png_info_send_to_txt2img_restores_our_controls(ui, webui_server, presets,
                                                        tmp_path):
    leak = {"preset": "test-sd1", "strength": 1.35, "lf": "zero", "means": {"0": 0.75},
            "seed": 4242, "components": {"0:0,1": 0.5}}
    answer = webui_server.post("/sdapi/v1/txt2img",
                               with_leak(txt2img_request(negative_prompt="", steps=3), leak))
    text = infotexts(answer)[0]
    assert "Signal leak: test-sd1," in text, text
    png = tmp_path / "leak.png"
    png.write_bytes(base64.b64decode(answer["images"][0]))

    ui.tab("PNG Info")
    ui.page.locator("#pnginfo_image input[type=file]").set_input_files(str(png))
    ui.page.wait_for_function("() => document.querySelector('#tab_pnginfo').innerText"
                              ".includes('Signal leak strength: 1.35')")
    ui.page.locator("#tab_pnginfo #txt2img_tab").click()
    ui.page.wait_for_selector("#tab_txt2img", state="visible")
    tab = "txt2img"
    ui.page.wait_for_function("id => document.getElementById(id).checked",
                              arg=f"{prefix(tab)}enabled-visible-checkbox")
    ui.wait_idle()
    got = {
        "enabled": ui.header_checkbox(tab).is_checked(),
        "preset": ui.preset_value(tab),
        "strength": ui.number(ui.el(tab, "strength")),
        "lf": ui.radio_value(tab, "lf"),
        "fix_mean_0": ui.checkbox(tab, "fix_mean_0").is_checked(),
        "mean_0": ui.number(ui.el(tab, "mean_0")),
        "fix_mean_1": ui.checkbox(tab, "fix_mean_1").is_checked(),
        "seed": ui.number(ui.el(tab, "seed")),
        "fix_lr_0": ui.checkbox(tab, "fix_lr_0").is_checked(),
        "lr_0": ui.number(ui.el(tab, "lr_0")),
        "fix_tb_0": ui.checkbox(tab, "fix_tb_0").is_checked(),
    }
    assert got == {"enabled": True, "preset": "test-sd1", "strength": 1.35, "lf": "zero",
                   "fix_mean_0": True, "mean_0": 0.75, "fix_mean_1": False, "seed": 4242,
                   "fix_lr_0": True, "lr_0": 0.5, "fix_tb_0": False}, got
    # the pasted settings generate the same leak again
    _, info = ui.generate(tab)
    ours = re.findall(r"Signal leak[^:]*: [^,]+", text)
    assert re.findall(r"Signal leak[^:]*: [^,]+", info) == ours, (info, text)


# --------------------------------------------------------------------------- 8


def test_xyz_plot_offers_our_axes_and_draws_a_grid(ui, screenshots):
    tab = "txt2img"
    script = ui.page.locator(f"#{tab}_script_container #script_list")
    # "X/Y/Z plot" in A1111, Forge, Neo and reForge; "X/Y/Z Plot" in Forge Classic
    title = next(c for c in ui.dropdown_choices(script) if c.casefold() == "x/y/z plot")
    ui.choose(script, title)
    x_type = ui.page.locator(f"#script_{tab}_xyz_plot_x_type")
    x_type.wait_for(state="visible")
    axes = [a for a in ui.dropdown_choices(x_type) if a.startswith("[Signal Leak]")]
    for wanted in ("[Signal Leak] Preset", "[Signal Leak] Strength", "[Signal Leak] LF mode",
                   "[Signal Leak] Channel 0 mean", "[Signal Leak] Leak seed",
                   "[Signal Leak] Channel 0 left-right gradient"):
        assert wanted in axes, f"{wanted!r} not offered: {axes}"
    ui.choose(x_type, "[Signal Leak] Channel 0 mean")
    ui.page.locator(f"#script_{tab}_xyz_plot_x_values textarea, "
                    f"#script_{tab}_xyz_plot_x_values input").first.fill("-2, 0, 2")
    grid, info = ui.generate(tab)
    assert "Signal leak means" in info, info
    height, width, _ = grid.shape
    assert width == 3 * 64 and height > 64, f"not a 3-cell grid: {grid.shape}"
    cells = [grid[-64:, i * 64:(i + 1) * 64] for i in range(3)]
    assert _differ(cells[0], cells[1]) and _differ(cells[1], cells[2]), \
        "the grid's cells are equal: the channel-0 mean axis changed nothing"
    size = save_screenshot(ui.page.locator(f"#{tab}_gallery"), screenshots / "tiny_ui_xyz_grid.png")
    print(f"[browser] tiny_ui_xyz_grid.png {size} bytes; grid {width}x{height}")


# --------------------------------------------------------------------------- 9


def test_no_console_errors_from_the_extension(console_log, webui_server):
    """Runs last: console errors and page errors of every page above that mention the
    extension fail; everything else is listed. The server log must hold no traceback
    through the extension's code."""
    errors = [e for e in console_log if e["kind"] in ("error", "pageerror")]
    ours = [e for e in errors if mentions_ours(e)]
    others = [e for e in console_log if e not in ours and e["kind"] in
              ("error", "pageerror", "warning", "requestfailed")]
    seen = {}
    for entry in others:
        key = (entry["kind"], entry["text"][:300], entry["where"])
        seen[key] = seen.get(key, 0) + 1
    for (kind, text, where), count in seen.items():
        print(f"[browser] console {kind} (x{count}, not ours): {text} {where}")
    assert not ours, "console errors from the extension:\n" + "\n".join(
        f"{e['kind']}: {e['text']} ({e['where']})" for e in ours)

    log = webui_server.log_text()
    blocks = re.split(r"(?=Traceback \(most recent call last\))", log)[1:]
    ours_server = [b[:3000] for b in blocks
                   if re.search(r"signal_leak_webui|[/\\]slb[/\\]|signal_leak_bias\.py",
                                b.split("\n\n")[0])]
    ours_server += re.findall(r"\*\*\* Error.*(?:signal.leak|Signal Leak).*", log)
    assert not ours_server, "server errors from the extension:\n" + "\n".join(ours_server)
