"""Low-frequency control in the real host: the leak recovered from the sampler's start (the
probe records it) has exactly the requested components, set through the API dict, through an
X/Y/Z gradient axis, or read from a reference image, and equals /sample's leak."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from slb_webui import (
    LATENT,
    SD_SIGMA_MAX,
    SEED,
    XYZ,
    import_slb,
    infotexts,
    init_image,
    load_probe,
    png_b64,
    txt2img_request,
    with_probe,
    xyz_args,
    xyz_info,
)
from test_xyz import OUR_AXES

GRADIENT_AXES = [f"[Signal Leak] Channel {c} {g} gradient" for c in range(4)
                 for g in ("left-right", "top-bottom")]


def _amplitudes(leak: np.ndarray, keys: list[tuple[int, int, int]]) -> dict:
    import_slb()
    import torch

    from slb.lowfreq import amplitudes

    return amplitudes(torch.from_numpy(np.asarray(leak, dtype=np.float64)), keys)


def _recovered_leak(server, probe, leak_args: dict | None, **fields: object) -> tuple:
    """(leak the Euler sampler was handed, answer): (start - eps) * sigma0 (DESIGN 6)."""
    starts, answer = {}, None
    for name, leak in (("plain", None), ("leak", leak_args)):
        folder = probe(name)
        answer = server.post("/sdapi/v1/txt2img",
                             with_probe(txt2img_request(leak, **fields), folder))
        starts[name] = load_probe(folder, "noise_first_0")[0]
    return (starts["leak"] - starts["plain"]) * SD_SIGMA_MAX, answer


def _sample(server, body: dict) -> np.ndarray:
    answer = server.post("/signal-leak/v1/sample", {"shape": [4, LATENT, LATENT],
                                                     "seed": SEED, "format": "npy", **body})
    return np.load(io.BytesIO(base64.b64decode(answer["data"])))


def test_api_components_reach_the_sampler_exactly(webui_server, presets, probe):
    wanted = {(0, 0, 1): 0.8, (1, 1, 0): -0.6}
    body = {"preset": "test-sd1", "components": {"0:0,1": 0.8, "1:1,0": -0.6}}
    leak, answer = _recovered_leak(webui_server, probe, body)
    got = _amplitudes(leak, list(wanted))
    print(f"[lowfreq] requested {wanted}, the sampler's leak has {got}")
    assert got == pytest.approx(wanted, abs=1e-3)
    assert np.allclose(leak, _sample(webui_server, body), atol=2e-3)
    text = infotexts(answer)[0]
    assert 'Signal leak components: "0:0,1=0.8;1:1,0=-0.6"' in text, text


def test_xyz_gradient_axis_cell_has_the_requested_gradient(webui_server, presets, probe):
    labels = xyz_info(webui_server)["args"][0]["choices"]
    label = "[Signal Leak] Channel 0 left-right gradient"
    index = labels.index(label) if label in labels else \
        len(labels) + len(OUR_AXES) + GRADIENT_AXES.index(label)
    plain = probe("plain")
    webui_server.post("/sdapi/v1/txt2img", with_probe(txt2img_request(), plain))
    cell = probe("cell")
    answer = webui_server.post("/sdapi/v1/txt2img", with_probe(txt2img_request(
        {"preset": "test-sd1"}, script_name=XYZ,
        script_args=xyz_args(webui_server, index, "1.5")), cell))
    leak = (load_probe(cell, "noise_first_0")[0] - load_probe(plain, "noise_first_0")[0]) \
        * SD_SIGMA_MAX
    assert _amplitudes(leak, [(0, 0, 1)])[(0, 0, 1)] == pytest.approx(1.5, abs=1e-3)
    assert "0:0,1=1.5" in infotexts(answer)[-1], infotexts(answer)


def test_reference_image_request_matches_the_sample_route(webui_server, presets, probe):
    reference = png_b64(init_image()[::-1])  # an upside-down gradient picture
    body = {"preset": "test-sd1", "reference_image": reference}
    leak, answer = _recovered_leak(webui_server, probe, body)
    text = infotexts(answer)[0]
    assert "Signal leak reference: " in text and "Signal leak components" in text, text
    assert np.allclose(leak, _sample(webui_server, body), atol=2e-3)
    # the values in the infotext reproduce the leak without the image
    import_slb()
    from slb.infotext import KEY_COMPONENTS, KEY_MEANS
    params = webui_server.post("/sdapi/v1/png-info", {"image": "data:image/png;base64," +
                                                      answer["images"][0]})["parameters"]
    replay = {"preset": "test-sd1", "means": dict(
        part.split(":") for part in params[KEY_MEANS].split(",")),
        "components": {k: float(v) for k, v in (
            item.split("=") for item in params[KEY_COMPONENTS].split(";"))}}
    assert np.allclose(_sample(webui_server, replay), leak, atol=2e-3)
