"""Low-frequency control through the stand-in WebUI (tests/standin): gradients in txt2img,
the API dict keys, a reference image encoded with the loaded VAE, the colour target, X/Y/Z
gradient axes, infotext paste, and the /sample route."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from standin.fixtures import make_test_image, start_with_extension

from slb.lowfreq import amplitudes, colour_means, reference_components
from slb.preset import save_preset
from slb.sampling import LeakSampler
from tests.conftest import make_preset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "signal_leak_bias.py"
TITLE = "Signal Leak Bias"
GRADIENTS = {(0, 0, 1): 0.8, (1, 1, 0): -0.6}


@pytest.fixture
def host(fresh_host):
    start_with_extension(fresh_host, SCRIPT)
    import modules.paths as paths

    save_preset(make_preset("dct+pixel", 3, shape=(4, 8, 8), model_family="sd1"),
                Path(paths.models_path) / "signal_leak", "natural")
    return fresh_host


def _api(host, body: dict, seed: int = 11, **kw):
    args = host.api_args("txt2img", {"signal leak bias": {"args": [body]}})
    res = host.txt2img(args, api=True, seed=seed, **kw)
    assert res.errors == []
    return res


def _leak_received(host, res, seed: int = 11) -> torch.Tensor:
    """The leak the sampler got: (x - eps) * sigma0 with eps from a run without the leak."""
    plain = _api(host, {"enabled": False}, seed=seed).record("txt2img")["received_x"]
    rec = res.record("txt2img")
    return ((rec["received_x"] - plain) * rec["sigma0"])[0]


def _png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_dict_components_reach_the_sampler_exactly(host):
    res = _api(host, {"preset": "natural", "components": {"0:0,1": 0.8, "1:1,0": -0.6}})
    leak = _leak_received(host, res)
    got = amplitudes(leak, list(GRADIENTS))
    assert got == pytest.approx(GRADIENTS, abs=1e-4)
    assert res.p.extra_generation_params["Signal leak components"] == "0:0,1=0.8;1:1,0=-0.6"
    # the same leak as drawn directly by the library
    want = LeakSampler(make_preset("dct+pixel", 3, shape=(4, 8, 8)), (4, 8, 8),
                       components=GRADIENTS).draw([11])[0]
    assert torch.allclose(leak, want, atol=1e-4)


def test_component_outside_the_preset_set_is_refused_with_reason(host):
    res = _api(host, {"preset": "natural", "components": {"0:1,1": 0.5}})
    note = res.p.extra_generation_params["Signal leak"]
    assert "not applied" in note and "(1, 1)" in note and "low-frequency set" in note


def test_reference_image_sets_the_leaks_low_frequencies(host):
    mod = next(m for m in host.modules if hasattr(m, "HOOKS"))
    ref = Image.fromarray(make_test_image(64, 64, seed=3)) if isinstance(
        make_test_image(64, 64, seed=3), np.ndarray) else make_test_image(64, 64, seed=3)
    import modules.shared as shared

    latent = mod.HOST.encode_image(ref.convert("RGB"), 64, 64, shared.sd_model)
    want = reference_components(latent, [(0, 0), (0, 1), (1, 0)])
    res = _api(host, {"preset": "natural", "reference_image": _png_b64(ref)})
    params = res.p.extra_generation_params
    assert params["Signal leak"] == "natural" and len(params["Signal leak reference"]) == 10
    leak = _leak_received(host, res)
    got = amplitudes(leak, list(want))
    clipped = {k: min(3.0, max(-3.0, v)) for k, v in want.items()}
    assert got == pytest.approx(clipped, abs=1e-4)
    # the infotext holds the values, so it reproduces the leak without the image
    assert "Signal leak means" in params and "Signal leak components" in params


def test_colour_target_sets_the_free_means(host):
    res = _api(host, {"colour": "#aa6633", "means": {"0": 0.5}})
    leak = _leak_received(host, res)
    means, _ = colour_means("#aa6633", "sd1", {0: 0.5})
    got = leak.mean(dim=(1, 2))
    assert float(got[0]) == pytest.approx(0.5, abs=1e-4)
    for c, m in means.items():
        assert float(got[c]) == pytest.approx(max(-3.0, min(3.0, m)), abs=1e-4)
    assert res.p.extra_generation_params["Signal leak colour"] == "#aa6633"


def test_xyz_gradient_axis_sets_the_gradient_per_cell(host):
    xyz = host.xyz_grid
    axis = next(o for o in xyz.axis_options
                if o.label == "[Signal Leak] Channel 0 left-right gradient")
    p = host.make_txt2img(seed=21)
    p.scripts = host.runner("txt2img")
    p.script_args = host.ui_args("txt2img", {TITLE: [True, "natural"]})
    _, cells, _ = xyz.run_axis(p, axis, [-1.0, 1.5])
    plain = _api(host, {"enabled": False}, seed=21).record("txt2img")["received_x"]
    for cell, value in zip(cells, (-1.0, 1.5), strict=True):
        rec = cell.standin_records[0]
        leak = ((rec["received_x"] - plain) * rec["sigma0"])[0]
        assert amplitudes(leak, [(0, 0, 1)])[(0, 0, 1)] == pytest.approx(value, abs=1e-4)


def test_paste_restores_gradient_and_colour_controls(host):
    pasted = host.paste("a cat\nSteps: 20, Seed: 3, Signal leak: natural, Signal leak "
                        "components: \"0:0,1=0.8;1:1,0=-0.6\", Signal leak colour: #aa6633")
    values = [u.get("value") if isinstance(u, dict) else None for _, u in pasted]
    # positions: 13 fix_lr_0, 14 lr_0, ..., 19 fix_tb_1, 20 tb_1; 29 fix_colour, 30 colour
    assert values[13] is True and values[14] == 0.8
    assert values[19] is True and values[20] == -0.6
    assert values[29] is True and values[30] == "#aa6633"


@pytest.mark.gradio
def test_sample_route_takes_the_lowfreq_keys(fresh_host):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    client = TestClient(start_with_extension(fresh_host, SCRIPT, mode="api", with_app=True))
    r = client.post("/signal-leak/v1/sample", json={
        "shape": [4, 8, 8], "components": {"0:0,1": 0.8}, "colour": "#3366cc", "seed": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    leak = np.load(io.BytesIO(base64.b64decode(body["data"])))
    assert amplitudes(torch.from_numpy(leak), [(0, 0, 1)])[(0, 0, 1)] == pytest.approx(
        0.8, abs=1e-5)
    assert body["predicted_colour"] == "#3366cc" and body["components"] == {"0:0,1": 0.8}
    ref = make_test_image(64, 64, seed=5)
    ref = Image.fromarray(ref) if isinstance(ref, np.ndarray) else ref
    r = client.post("/signal-leak/v1/sample", json={"shape": [4, 8, 8],
                                                    "reference_image": _png_b64(ref)})
    assert r.status_code == 200, r.text
    assert set(r.json()["components"]) == {f"{c}:{u},{v}" for c in range(4)
                                           for u, v in ((0, 1), (1, 0))}
