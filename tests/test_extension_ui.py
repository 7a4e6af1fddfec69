"""The extension's UI in a real Gradio ``Blocks`` (the version A1111 pins, 3.41.2) and its
``/signal-leak/v1/`` routes through FastAPI's test client. Needs gradio (CI's pinned env)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from slb.preset import save_preset
from slb.sampling import LeakSampler
from slb.settings import ARG_NAMES, MANUAL, LeakSettings
from tests.conftest import make_preset, photo_folder

pytestmark = pytest.mark.gradio

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "signal_leak_bias.py"
TITLE = "Signal Leak Bias"


def _user_dir() -> Path:
    import modules.paths as paths

    return Path(paths.models_path) / "signal_leak"


@pytest.fixture
def ui_host(fresh_host):
    gr = pytest.importorskip("gradio")
    if getattr(gr, "HEADLESS", False):
        pytest.skip("the real gradio is not installed (only the stand-in's headless one)")
    assert gr.__version__.startswith("3.41"), "CI pins gradio 3.41.2, as A1111 v1.10.1 does"
    save_preset(make_preset("dct+pixel", 3, shape=(4, 8, 8), model_family="sd1"), _user_dir(),
                "natural")
    (_user_dir() / "broken.safetensors").write_bytes(b"not a preset")
    fresh_host.load_extension_script(SCRIPT)
    fresh_host.start(mode="ui", gradio="real")
    return fresh_host


def _our_controls(host, tab="txt2img"):
    script = host.script(TITLE, tab)
    return script, host.runner(tab).inputs[script.args_from:script.args_to]


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_ui_builds_in_real_blocks_with_documented_arg_order(ui_host, tab):
    import gradio as gr
    from modules.ui_components import InputAccordion

    assert isinstance(ui_host.demo, gr.Blocks)
    script, controls = _our_controls(ui_host, tab)
    assert len(controls) == len(ARG_NAMES) == 32
    assert isinstance(controls[0], InputAccordion) and controls[0].value is False
    assert [c.value for c in controls[1:]] == LeakSettings().to_args()[1:]
    kinds = [type(c).__name__ for c in controls]
    assert kinds[1] == "Dropdown" and kinds[2] == "Slider" and kinds[3] == "Radio"
    assert kinds[4:12] == ["Checkbox", "Slider"] * 4 and kinds[12] == "Number"
    assert controls[2].minimum == 0 and controls[2].maximum == 2 and controls[2].step == 0.05
    assert controls[5].minimum == -3 and controls[5].maximum == 3
    labels = [a.label for a in script.api_info.args]
    assert labels[0] == TITLE and labels[1] == "Preset" and len(labels) == 32
    choices = controls[1].choices
    names = [c[1] if isinstance(c, (tuple, list)) else c for c in choices]
    assert names[0] == MANUAL and "natural" in names and "broken" not in names
    assert len(script.infotext_fields) == 32
    assert kinds[13:29] == ["Checkbox", "Slider"] * 8
    assert kinds[29:] == ["Checkbox", "ColorPicker", "Image"]


def test_summary_lists_unusable_presets_with_reason(ui_host):
    mod = _module(ui_host)
    text = mod.PRESETS.summary("natural")
    assert "dct+pixel, n=3" in text and "broken.safetensors" in text and "safetensors" in text


def _module(host):
    name = host.script(TITLE).__class__.__module__
    return next(m for m in host.modules if m.__name__ == name)


def test_preview_returns_an_image(ui_host):
    mod = _module(ui_host)
    preview = mod.ui.make_preview(mod.HOOKS)
    img, note = preview(5, 64, 64, "natural", 1.0, "sampled", *[False, 0.0] * 4, -1)
    assert img is not None and img.width > img.height and "seed 5." in note
    img, note = preview(5, 64, 64, "missing", 1.0, "sampled", *[False, 0.0] * 4, -1)
    assert img is None and "missing" in note


# --- routes -------------------------------------------------------------------------------

@pytest.fixture
def client(fresh_host):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    save_preset(make_preset("dct+pixel", 3, shape=(4, 8, 8), model_family="sd1"), _user_dir(),
                "natural")
    (_user_dir() / "broken.safetensors").write_bytes(b"junk")
    fresh_host.load_extension_script(SCRIPT)
    app = fresh_host.start(mode="api")
    return TestClient(app)


def test_get_presets(client):
    r = client.get("/signal-leak/v1/presets")
    assert r.status_code == 200
    by_name = {e["name"]: e for e in r.json()}
    assert by_name["natural"]["usable"] is True and by_name["natural"]["kind"] == "dct+pixel"
    assert by_name["natural"]["latent_shape"] == [4, 8, 8]
    assert by_name["broken"]["usable"] is False and by_name["broken"]["reason"]


def test_post_sample_npy_and_png(client):
    r = client.post("/signal-leak/v1/sample", json={"preset": "natural", "shape": [4, 16, 16],
                                                    "seed": 3, "means": {"0": 1.0}})
    assert r.status_code == 200, r.text
    arr = np.load(io.BytesIO(base64.b64decode(r.json()["data"])))
    from slb.preset import load_preset

    preset = load_preset(_user_dir() / "natural.safetensors")
    want = LeakSampler(preset, (4, 16, 16), means={0: 1.0}).draw([3])[0]
    assert np.allclose(arr, want.numpy(), atol=1e-6)
    r = client.post("/signal-leak/v1/sample", json={"shape": [4, 8, 8], "format": "png",
                                                    "means": {"1": -1}})
    assert r.status_code == 200
    png = base64.b64decode(r.json()["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("body, status, words", [
    ({"preset": "natural", "shape": [4, 8, 8], "bogus": 1}, 422, "bogus"),
    ({"preset": "nope", "shape": [4, 8, 8]}, 404, "no preset"),
    ({"preset": "broken", "shape": [4, 8, 8]}, 422, "unusable"),
    ({"preset": "natural", "shape": [4, 8]}, 422, "shape"),
    ({"preset": "natural", "shape": [16, 8, 8]}, 422, "channels"),
    ({"preset": "natural", "shape": [4, 8, 8], "lf": "half"}, 422, "lf"),
])
def test_post_sample_errors(client, body, status, words):
    r = client.post("/signal-leak/v1/sample", json=body)
    assert r.status_code == status and words in r.json()["detail"], r.text


def test_post_fit_then_listed_and_used(client, coco128, tmp_path):
    folder = photo_folder(coco128, tmp_path / "imgs", 5, broken="bad.jpg")
    r = client.post("/signal-leak/v1/fit", json={"folder": str(folder), "name": "api fit",
                                                 "kind": "pixel", "resolution": 64})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "api fit" and body["usable"] is True and body["images"] == 5
    assert [s["path"] for s in body["skipped"]] == ["bad.jpg"]
    assert Path(body["path"]).exists() and body["seconds"] >= 0
    names = [e["name"] for e in client.get("/signal-leak/v1/presets").json()]
    assert "api fit" in names
    r = client.post("/signal-leak/v1/fit", json={"folder": str(folder), "name": "api fit"})
    assert r.status_code == 409
    r = client.post("/signal-leak/v1/fit", json={"folder": str(folder)})
    assert r.status_code == 422 and "name" in r.json()["detail"]
    r = client.post("/signal-leak/v1/fit", json={"folder": str(tmp_path / "x"), "name": "y"})
    assert r.status_code == 422 and "folder not found" in r.json()["detail"]
    r = client.post("/signal-leak/v1/fit", json={"folder": str(folder), "name": "../y"})
    assert r.status_code == 422


def test_routes_absent_without_the_api(fresh_host):
    pytest.importorskip("fastapi")
    fresh_host.load_extension_script(SCRIPT)
    app = fresh_host.start(mode="ui", gradio="real")
    assert not any(getattr(r, "path", "").startswith("/signal-leak/") for r in app.routes)


def test_leak_applies_on_cuda_like_devices_only_through_the_noise_tensor(ui_host):
    # the leak is drawn on the noise tensor's device and dtype (CPU here)
    args = ui_host.ui_args("txt2img", {TITLE: [True, "natural"]})
    res = ui_host.txt2img(args, seed=1)
    assert res.errors == []
    assert res.record("txt2img")["received_x"].dtype == torch.float32


def test_preview_start_tile_carries_the_leak(ui_host):
    # channel 0 mean 3 brightens the start by sqrt(abar) * 3 latent units (about 8 levels)
    mod = _module(ui_host)
    means = [True, 3.0, False, 0.0, False, 0.0, False, 0.0]
    img, _ = mod.ui.make_preview(mod.HOOKS)(1, 128, 128, MANUAL, 1.0, "sampled", *means, -1)
    arr = np.asarray(img).astype(float)
    third = (arr.shape[1] - 16) // 3
    plain, start = arr[:, third + 8:2 * third + 8], arr[:, 2 * third + 16:]
    assert start.mean() - plain.mean() > 4
