"""The extension's UI on the trained demo model (demo/), in a real AUTOMATIC1111 v1.10.1.

The rest of the browser suite runs on the tiny random-weight model, whose images are noise;
here the WebUI starts on ``scenes.safetensors`` at the size it was trained for (128 px, 20
Euler steps, CFG 1, the training prompt), so what the UI does shows in real pictures. These
tests take the README's UI screenshots (``ui_accordion.png``, ``ui_fit_panel.png``,
``ui_preview.png``, ``ui_xyz_grid.png``) and check, through the UI alone, what a user sees:
a preset fitted in the Fit panel on scene pictures changes the images, and the X/Y/Z grid
over channel 0's mean runs from bright to dark.

A1111 only, like tests/integration/test_trained_model.py: the demo model has the tiny text
encoder, which Forge-family hosts replace by full-size CLIP. Run in file order.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from slb_webui import FORGE
from ui_driver import LONG, UIPage, hide_paths, prefix, save_screenshot

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.skipif(FORGE, reason="the demo model is built for A1111's ldm config loader "
                       "(Forge-family hosts build full-size CLIP)"),
    pytest.mark.skipif(not (REPO / "demo" / "model" / "SHA256SUMS").is_file(),
                       reason="no trained demo weights committed (python -m demo.train)"),
]
SIZE, BATCH, FIT_IMAGES = 128, 4, 256
MEANS = (-1.0, -0.5, 0.0, 0.5, 1.0)  # the X/Y/Z plot's channel-0 means
SEEDS = (1, 2, 3)  # its rows
# Neighbouring pixels of the demo model's pictures differ by 1-3 levels of 255 on average;
# the tiny random model's, which are coloured noise, by about 16.
SMOOTH = 6.0
TAB = "txt2img"


def demo_defaults() -> dict:
    """ui-config.json values: what the demo model was trained for and measured with."""
    values = {}
    for tab in ("txt2img", "img2img"):
        values.update({
            f"{tab}/Width/value": SIZE,
            f"{tab}/Height/value": SIZE,
            f"{tab}/Prompt/value": "a landscape",
            f"{tab}/Negative prompt/value": "",
            f"{tab}/CFG Scale/value": 1.0,
            f"{tab}/Batch size/value": BATCH,
            f"customscript/sampler.py/{tab}/Sampling steps/value": 20,
            f"customscript/sampler.py/{tab}/Sampling method/value": "Euler",
            f"customscript/seed.py/{tab}/Seed/value": 1234,
        })
    return values


@pytest.fixture(scope="module")
def demo_server(browser_suite, webui_setup, tmp_path_factory):  # noqa: ANN001, ANN201
    """A second A1111 with its UI, on the demo model, with the demo defaults."""
    setup = webui_setup.another(tmp_path_factory.mktemp("demo-ui"))
    done = subprocess.run([setup.python, "-m", "demo.install_model", str(setup.model_dir)],
                          cwd=REPO, env=setup.env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    settings_file = setup.data_dir / "config.json"
    settings = json.loads(settings_file.read_text())
    settings_file.write_text(json.dumps({**settings,
                                         "sd_model_checkpoint": "scenes.safetensors"}))
    flags = browser_suite.prepare_ui(setup, demo_defaults())
    with browser_suite.host_suite.start_server(setup, ui=True, expect="scenes",
                                               extra_flags=flags) as server:
        yield server


@pytest.fixture
def page(browser, demo_server, console_log) -> Iterator[UIPage]:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield UIPage(context.new_page(), demo_server.base_url, console_log).load()
    finally:
        context.close()


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory) -> Path:  # noqa: ANN001
    """The training distribution's pictures, as a user's folder of PNGs."""
    from demo.measure import write_pngs
    from demo.scenes import scenes

    return write_pngs(scenes(FIT_IMAGES, seed=12, size=SIZE), tmp_path_factory.mktemp("scenes"))


def roughness(image: np.ndarray) -> float:
    """Mean absolute difference of horizontally neighbouring pixels, in levels of 255."""
    return float(np.abs(np.diff(image.astype(np.float64), axis=1)).mean())


def gallery(page: UIPage) -> list[np.ndarray]:
    """The images the gallery offers (the grid first, as A1111 shows it)."""
    sources = []
    for img in page.page.locator(f"#{TAB}_gallery img").all():
        src = img.get_attribute("src")
        if src and src not in sources:
            sources.append(src)
    return [page.image(src) for src in sources]


# --------------------------------------------------------------------------- 1


def test_fit_a_preset_from_scene_pictures(page, demo_server, scene_folder, screenshots):
    """The Fit panel on 256 pictures of the training distribution, with the demo model's
    VAE: the preset is saved, selected and summarised. Screenshot ``ui_fit_panel.png``."""
    page.open_accordion(TAB)
    fit = page.open_sub_accordion(TAB, "Fit a preset")
    fit.get_by_label("Image folder").fill(str(scene_folder))
    fit.get_by_label("Preset name").fill("landscapes")
    fit.get_by_label("Resolution").fill(str(SIZE))
    fit.get_by_role("button", name="Fit", exact=True).click()
    page.page.wait_for_function("el => el.innerText.includes('Fitted ')",
                                arg=fit.element_handle(), timeout=LONG)
    page.wait_idle()
    result = fit.inner_text()
    assert f"Fitted {FIT_IMAGES} images" in result and "0 skipped" in result, result
    assert (demo_server.presets_dir / "landscapes.safetensors").is_file()
    assert page.preset_value(TAB) == "landscapes"
    page.wait_html(f"{prefix(TAB)}summary", starts="landscapes:")
    summary = page.summary(TAB)
    assert f"latent 4x16x16 ({SIZE}x{SIZE} px), {FIT_IMAGES} images, sd1" in summary, summary
    hide_paths(fit, demo_server.data_dir, scene_folder, "~/pictures/landscapes")
    size = save_screenshot(fit, screenshots / "ui_fit_panel.png")
    print(f"[browser] demo model: ui_fit_panel.png {size} bytes")


# --------------------------------------------------------------------------- 2


def test_the_fitted_preset_changes_the_pictures(page, screenshots):
    """Off: the host's own four pictures of seed 1234; on with the fitted preset: other
    pictures of the same seeds, scenes rather than noise, and the infotext says so.
    Screenshot ``ui_accordion.png``: the txt2img tab with the accordion and the gallery."""
    plain_grid, info = page.generate(TAB)
    assert "Signal leak" not in info and f"Size: {SIZE}x{SIZE}" in info, info
    plain = gallery(page)
    page.pick_preset(TAB, "landscapes")
    page.wait_html(f"{prefix(TAB)}summary", starts="landscapes:")
    leak_grid, info = page.generate(TAB)
    assert "Signal leak: landscapes," in info and "Seed: 1234" in info, info
    leak = gallery(page)
    assert len(plain) == len(leak) == BATCH + 1, (len(plain), len(leak))  # grid + images
    for before, after in zip(plain[1:], leak[1:], strict=True):
        assert before.shape == after.shape == (SIZE, SIZE, 3)
        assert np.abs(before - after).mean() > 2, "the preset did not change a picture"
        assert roughness(after) < SMOOTH, f"noise, not a scene: roughness {roughness(after)}"
    print(f"[browser] demo model: roughness plain "
          f"{[round(roughness(i), 2) for i in plain[1:]]}, with the preset "
          f"{[round(roughness(i), 2) for i in leak[1:]]}")
    size = save_screenshot(page.page.locator(f"#tab_{TAB}"), screenshots / "ui_accordion.png")
    print(f"[browser] demo model: ui_accordion.png {size} bytes")


# --------------------------------------------------------------------------- 3


def test_preview_of_the_fitted_preset(page, screenshots):
    page.pick_preset(TAB, "landscapes")
    block, pixels = page.preview_leak(TAB)
    assert pixels.shape[1] >= 3 * pixels.shape[0] * 0.9, f"not three tiles: {pixels.shape}"
    assert pixels.std() > 1, "the preview is flat"
    size = save_screenshot(block, screenshots / "ui_preview.png")
    print(f"[browser] demo model: ui_preview.png {size} bytes")


# --------------------------------------------------------------------------- 4


def test_xyz_grid_over_channel_0_runs_from_bright_to_dark(page, screenshots):
    """X: channel 0's mean from -1 to 1, Y: three seeds, with the fitted preset. In SD's
    latent space (and the demo model's) a lower channel-0 mean is a brighter picture
    (demo/measure.py, 256 images: 0.718 at -1 down to 0.314 at +1): each column is darker
    than the one before it. Screenshot ``ui_xyz_grid.png``."""
    page.pick_preset(TAB, "landscapes")
    page.set_number(page.page.locator(f"#{TAB}_batch_size"), 1)
    script = page.page.locator(f"#{TAB}_script_container #script_list")
    title = next(c for c in page.dropdown_choices(script) if c.casefold() == "x/y/z plot")
    page.choose(script, title)
    for axis, kind, values in (("x", "[Signal Leak] Channel 0 mean",
                                ", ".join(f"{m:g}" for m in MEANS)),
                               ("y", "Seed", ", ".join(str(s) for s in SEEDS))):
        page.choose(page.page.locator(f"#script_{TAB}_xyz_plot_{axis}_type"), kind)
        page.page.locator(f"#script_{TAB}_xyz_plot_{axis}_values textarea, "
                          f"#script_{TAB}_xyz_plot_{axis}_values input").first.fill(values)
    grid, info = page.generate(TAB, timeout=5 * LONG)  # 15 pictures
    assert "Signal leak: landscapes," in info and "Signal leak means" in info, info
    rows, cols = len(SEEDS), len(MEANS)
    height, width, _ = grid.shape
    assert width >= cols * SIZE and height >= rows * SIZE, f"grid {grid.shape}"
    # the cells fill the bottom right; the labels are above and to the left
    top, left = height - rows * SIZE, width - cols * SIZE
    brightness = np.array([[grid[top + r * SIZE:top + (r + 1) * SIZE,
                                 left + c * SIZE:left + (c + 1) * SIZE].mean() / 255
                            for c in range(cols)] for r in range(rows)])
    columns = brightness.mean(0)
    print(f"[browser] demo model: X/Y/Z brightness by channel-0 mean "
          f"{dict(zip(MEANS, np.round(columns, 3).tolist(), strict=True))}")
    assert np.all(np.diff(columns) < -0.01), f"not bright to dark: {columns}"
    assert columns[0] - columns[-1] > 0.15, f"too small a range: {columns}"
    size = save_screenshot(page.page.locator(f"#{TAB}_gallery"), screenshots / "ui_xyz_grid.png")
    print(f"[browser] demo model: ui_xyz_grid.png {size} bytes; grid {width}x{height}")
