"""The X/Y/Z plot script over the API (script_name "x/y/z plot") with our axes.

With ``--nowebui`` the API builds the scripts, and X/Y/Z's ``ui()`` snapshots its axis list,
before ``on_before_ui`` (where extensions add axes) runs; the extension appends its axes
to that snapshot too (a real-host fix). So ``GET /sdapi/v1/script-info`` still lists only
the host's axes, and ours follow them in the order the extension registers them.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from slb_webui import (
    XYZ,
    img2img_request,
    infotexts,
    pixels,
    txt2img_request,
    xyz_args,
    xyz_info,
)

OUR_AXES = ["[Signal Leak] Preset", "[Signal Leak] Strength", "[Signal Leak] LF mode",
            "[Signal Leak] Channel 0 mean", "[Signal Leak] Channel 1 mean",
            "[Signal Leak] Channel 2 mean", "[Signal Leak] Channel 3 mean",
            "[Signal Leak] Leak seed"]


def axis_index(server, label: str, is_img2img: bool) -> int:
    """Index of an axis in the X/Y/Z script's list for the tab."""
    labels = xyz_info(server, is_img2img)["args"][0]["choices"]
    if label in labels:  # a host that built its UI after on_before_ui
        return labels.index(label)
    return len(labels) + OUR_AXES.index(label)


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_xyz_strength_axis_gives_different_cells(webui_server, presets, tab):
    is_img2img = tab == "img2img"
    build = img2img_request if is_img2img else txt2img_request
    index = axis_index(webui_server, "[Signal Leak] Strength", is_img2img)
    request = build({"preset": "test-sd1"}, script_name=XYZ,
                    script_args=xyz_args(webui_server, index, "0, 1, 2", is_img2img))
    status, answer = webui_server.request(f"/sdapi/v1/{tab}", request)
    assert status == 200, f"X/Y/Z with our axis failed: {answer}"
    texts = infotexts(answer)
    assert len(answer["images"]) == 4 and len(texts) == 4  # the grid, then 3 cells
    cells = [pixels(answer, i) for i in range(1, 4)]
    for strength, text in zip(("0", "1", "2"), texts[1:], strict=True):
        assert f"Signal leak strength: {strength}," in text, text
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.array_equal(cells[i], cells[j]), f"cells {i} and {j} are the same"
    if not is_img2img:  # txt2img is exactly repeatable: each cell is its own generation
        alone = webui_server.post("/sdapi/v1/txt2img", txt2img_request({"preset": "test-sd1"}))
        assert np.array_equal(cells[1], pixels(alone))
        plain = webui_server.post("/sdapi/v1/txt2img", txt2img_request())
        assert np.array_equal(cells[0], pixels(plain))


def test_xyz_preset_and_leak_seed_axes(webui_server, presets):
    index = axis_index(webui_server, "[Signal Leak] Preset", False)
    request = txt2img_request(script_name=XYZ,
                              script_args=xyz_args(webui_server, index, "test-sd1, test-sdxl"))
    answer = webui_server.post("/sdapi/v1/txt2img", request)
    texts = infotexts(answer)
    assert "Signal leak: test-sd1," in texts[1]
    assert "Signal leak: \"test-sdxl (not applied:" in texts[2]

    index = axis_index(webui_server, "[Signal Leak] Leak seed", False)
    request = txt2img_request({"preset": "test-sd1"}, script_name=XYZ,
                              script_args=xyz_args(webui_server, index, "5, 6"))
    answer = webui_server.post("/sdapi/v1/txt2img", request)
    texts = infotexts(answer)
    assert "Signal leak seed: 5," in texts[1] and "Signal leak seed: 6," in texts[2]
    assert not np.array_equal(pixels(answer, 1), pixels(answer, 2))


def test_xyz_axes_with_the_ui(webui_setup, webui_server, tmp_path):
    """With the web UI the host builds its scripts after ``on_before_ui`` (the other start
    order than ``--nowebui``'s): the X/Y/Z script's own axis list then carries our axes, so
    ``script-info`` lists them after the host's, and a strength axis picked by that index
    runs. A second server with the UI, on its own data dir and the SD 1.x checkpoint only
    (the session's ``--nowebui`` server keeps running)."""
    suite = sys.modules[type(webui_setup).__module__]  # this folder's conftest, as loaded
    setup = webui_setup.another(tmp_path / "ui")
    with suite.start_server(setup, ui=True) as server:
        for is_img2img in (False, True):
            labels = xyz_info(server, is_img2img)["args"][0]["choices"]
            ours = [label for label in labels if label.startswith("[Signal Leak] ")]
            assert ours[:len(OUR_AXES)] == OUR_AXES, labels
            assert labels.index(OUR_AXES[0]) > labels.index("Seed"), labels  # after the host's
        index = xyz_info(server)["args"][0]["choices"].index("[Signal Leak] Strength")
        answer = server.post("/sdapi/v1/txt2img", txt2img_request(
            {"preset": "manual (no preset)", "means": {"0": 2.0}}, script_name=XYZ,
            script_args=xyz_args(server, index, "0, 2")))
        texts = infotexts(answer)
        assert len(answer["images"]) == 3, texts  # the grid, then 2 cells
        assert "Signal leak strength: 0," in texts[1] and "Signal leak strength: 2," in texts[2]
        assert not np.array_equal(pixels(answer, 1), pixels(answer, 2))
