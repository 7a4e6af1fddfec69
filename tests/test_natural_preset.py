"""First run: the natural-image preset in one click (Fit panel button, fit route with
``natural: true``, CLI from a zip or URL) and the ``natural`` alias that follows the loaded
model's family. Everything is served from 127.0.0.1; nothing leaves the machine."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from standin.fixtures import start_with_extension

from slb.cli import main
from slb.images import list_image_files
from slb.library import PresetLibrary
from slb.preset import load_preset, save_preset
from tests.conftest import make_preset
from tests.test_download import Server, send

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "signal_leak_bias.py"
TITLE = "Signal Leak Bias"


@pytest.fixture
def coco_zip(coco128, tmp_path) -> Path:
    path = tmp_path / "coco-mini.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in list_image_files(coco128)[:6]:
            zf.write(p, f"coco128/images/train2017/{p.name}")
        zf.writestr("coco128/LICENSE", "text, not an image\n")
    return path


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def _temp_leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir()
            if p.name.startswith(("slb-extract-", ".download-"))}


# --- the alias ------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_a_name_resolves_to_its_family_variant(tmp_path, family):
    for name in ("natural-sd1", "natural-sdxl", "style"):
        save_preset(make_preset("pixel", shape=(4, 8, 8)), tmp_path, name)
    lib = PresetLibrary([tmp_path])
    want = {"sd1": "natural-sd1", "sd2": "natural", "sdxl": "natural-sdxl"}[family]
    assert lib.resolve("natural", family) == want
    assert lib.resolve("style", family) == "style"  # no style-<family>: the name itself


@pytest.fixture
def webui(fresh_host):
    start_with_extension(fresh_host, SCRIPT)
    return fresh_host


def _module(host):
    return next(m for m in host.modules if hasattr(m, "PRESETS"))


def test_natural_alias_without_a_preset_says_how_to_get_one(webui):
    mod = _module(webui)
    assert "natural" in mod.PRESETS.choices()
    assert "Get the natural-image preset" in mod.PRESETS.summary("natural")
    args = webui.api_args("txt2img", {"signal leak bias": {"args": [{"preset": "natural"}]}})
    res = webui.txt2img(args, api=True, seed=2)
    note = res.p.extra_generation_params["Signal leak"]
    assert "not applied" in note and "no preset natural-sd1 yet" in note


def test_one_click_from_a_url_then_natural_is_used(webui, coco_zip, server):
    import modules.paths as paths
    import modules.shared as shared

    server.routes["/coco.zip"] = lambda h: send(h, coco_zip.read_bytes())
    shared.opts.data["signal_leak_natural_url"] = server.url("/coco.zip")
    before = _temp_leftovers()
    button = _module(webui).fit_panel.make_natural_button(_module(webui).PRESETS)
    dropdown, message = webui.gpu_call(button, "", False, None, extra_outputs=[None])
    assert "Fitted <b>6</b> images" in message and "natural-sd1" in message, message
    assert dropdown["value"] == "natural"
    path = Path(paths.models_path) / "signal_leak" / "natural-sd1.safetensors"
    preset = load_preset(path)
    assert preset.kind == "dct+pixel" and preset.n_components == 3
    assert preset.metadata["source"] == "coco" and preset.model_family == "sd1"
    assert _temp_leftovers() == before  # the download and extraction are gone
    args = webui.api_args("txt2img", {"signal leak bias": {"args": [{"preset": "natural"}]}})
    res = webui.txt2img(args, api=True, seed=2)
    params = res.p.extra_generation_params
    assert params["Signal leak"] == "natural" and params["Signal leak hash"] == \
        preset.short_hash


def test_one_click_from_a_local_zip_and_refusal_to_overwrite(webui, coco_zip):
    mod = _module(webui)
    button = mod.fit_panel.make_natural_button(mod.PRESETS)
    _, message = webui.gpu_call(button, str(coco_zip), False, None, extra_outputs=[None])
    assert "Fitted <b>6</b> images" in message
    _, message = webui.gpu_call(button, str(coco_zip), False, None, extra_outputs=[None])
    assert "already exists" in message


def test_stop_during_the_download_leaves_nothing(webui, server):
    import modules.paths as paths
    import modules.shared as shared

    def slow(handler):  # headers, one chunk, then the user presses Stop
        handler.send_response(200)
        handler.send_header("Content-Type", "application/zip")
        handler.send_header("Content-Length", str(10 * 2**20))
        handler.end_headers()
        handler.wfile.write(b"PK" + b"\0" * 65534)
        handler.wfile.flush()
        shared.state.interrupt()
        server.release.wait(30)  # stalls: the Stop must end the wait, not the server

    server.routes["/slow.zip"] = slow
    before = _temp_leftovers()
    mod = _module(webui)
    button = mod.fit_panel.make_natural_button(mod.PRESETS)
    _, message = webui.gpu_call(button, server.url("/slow.zip"), False, None,
                                extra_outputs=[None])
    assert message.startswith("Stopped: nothing was saved."), message
    assert not (Path(paths.models_path) / "signal_leak" / "natural-sd1.safetensors").exists()
    assert _temp_leftovers() == before


def test_a_broken_download_is_a_clear_message(webui, server):
    server.routes["/page.zip"] = lambda h: send(h, b"<html>nope</html>", ctype="text/html")
    mod = _module(webui)
    button = mod.fit_panel.make_natural_button(mod.PRESETS)
    _, message = webui.gpu_call(button, server.url("/page.zip"), False, None,
                                extra_outputs=[None])
    assert "web page, not a zip archive" in message
    _, message = webui.gpu_call(button, server.url("/missing.zip"), False, None,
                                extra_outputs=[None])
    assert "HTTP 404" in message


def test_cli_fits_from_a_zip(coco_zip, tmp_path, capsys):
    assert main(["fit", str(coco_zip), "natural-sd1", "--encoder", "tests.encoders:make_encoder",
                 "--model-family", "sd1", "--size", "64", "--out-dir", str(tmp_path)]) == 0
    preset = load_preset(tmp_path / "natural-sd1.safetensors")
    assert preset.images == 6 and preset.metadata["source"] == "coco-mini"
    assert torch.isfinite(preset.tensors["lf_cov"]).all()
    assert "fitted 6 images" in capsys.readouterr().out
