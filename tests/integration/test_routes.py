"""Our routes under /signal-leak/v1/ (DESIGN 7.6) inside the real host."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
from slb_webui import (
    BROKEN_PRESET,
    FORGE,
    LATENT,
    SEED,
    TEST_PRESETS,
    image_bytes,
    import_slb,
    info,
    infotexts,
    pixels,
    txt2img_request,
)


def test_presets_route_lists_every_file_with_its_state(webui_server, presets):
    listed = {entry["name"]: entry for entry in webui_server.get("/signal-leak/v1/presets")}
    for name, (channels, family) in TEST_PRESETS.items():
        entry = listed[name]
        assert entry["usable"] is True and entry["reason"] == ""
        assert entry["hash"] == presets[name]
        assert entry["latent_shape"] == [channels, 8, 8]
        assert entry["image_size"] == [64, 64]
        assert entry["model_family"] == family
        assert entry["kind"] == "dct+pixel" and entry["n_components"] == 3
    broken = listed[BROKEN_PRESET]
    assert broken["usable"] is False and broken["reason"], broken


def test_sample_route(webui_server, presets):
    def sample(**body):
        return webui_server.request("/signal-leak/v1/sample", body)

    status, first = sample(preset="test-sd1", shape=[4, LATENT, LATENT], seed=5)
    assert status == 200, first
    leak = np.load(io.BytesIO(base64.b64decode(first["data"])))
    assert leak.shape == (4, LATENT, LATENT) and leak.dtype == np.float32
    _, again = sample(preset="test-sd1", shape=[4, LATENT, LATENT], seed=5)
    assert again["data"] == first["data"]
    _, other = sample(preset="test-sd1", shape=[4, LATENT, LATENT], seed=6)
    assert other["data"] != first["data"]
    # another size: the preset is transferred to it
    _, large = sample(preset="test-sd1", shape=[4, 16, 24], seed=5)
    assert np.load(io.BytesIO(base64.b64decode(large["data"]))).shape == (4, 16, 24)
    status, png = sample(preset="test-sd1", shape=[4, LATENT, LATENT], seed=5, format="png")
    assert status == 200 and base64.b64decode(png["data"])[:4] == b"\x89PNG"

    status, answer = sample(preset="no-such-preset", shape=[4, 8, 8])
    assert status == 404 and "no preset named 'no-such-preset'" in answer["detail"]
    status, answer = sample(preset="test-sd1", shape=[4, 8])
    assert status == 422 and "shape" in answer["detail"]
    status, answer = sample(preset="test-sd1", shape=[4, 8, 8], flavour="red")
    assert status == 422 and "unknown key(s) 'flavour'" in answer["detail"]


def write_images(server, folder, count: int) -> None:
    """``count`` generated 64x64 PNGs (batches of 4, consecutive seeds) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    while written < count:
        answer = server.post("/sdapi/v1/txt2img", txt2img_request(
            seed=SEED + 100 + written, batch_size=4, steps=2))
        for index in range(len(answer["images"])):
            if written < count and len(info(answer)["all_seeds"]) > index:
                (folder / f"image{written:03d}.png").write_bytes(image_bytes(answer, index))
                written += 1


def test_fit_route_makes_a_preset_the_next_generation_uses(webui_server, presets, tmp_path):
    folder = tmp_path / "generated"
    write_images(webui_server, folder, 8)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    started = time.monotonic()
    fitted = webui_server.post("/signal-leak/v1/fit", {
        "folder": str(folder), "name": "fitted-here", "resolution": 64, "n_components": 3})
    print(f"[fit] 8 images at 64 px in {time.monotonic() - started:.2f} s (HTTP round trip)")
    assert fitted["name"] == "fitted-here" and fitted["usable"] is True
    assert fitted["images"] == 8
    assert [s["path"].rsplit("/", 1)[-1] for s in fitted["skipped"]] == ["broken.png"]
    assert fitted["latent_shape"] == [4, 8, 8] and fitted["image_size"] == [64, 64]
    assert fitted["model_family"] == "sd1"
    path = webui_server.presets_dir / "fitted-here.safetensors"
    assert fitted["path"] == str(path) and path.is_file()

    # the file is a valid preset (read with the library in this process)
    import_slb()
    from slb.preset import load_preset

    preset = load_preset(path)
    assert preset.short_hash == fitted["hash"]
    # A1111 SD1 exposes the VAE posterior, whose mean is used; Forge's encode_first_stage
    # returns a posterior sample (backend/patcher/vae.py VAE.encode), drawn under a fixed seed
    assert preset.metadata["encode"] == ("sample" if FORGE else "mean")
    assert preset.metadata["model_family"] == "sd1"
    assert preset.metadata["vae"].startswith("checkpoint:")
    listed = {e["name"]: e for e in webui_server.get("/signal-leak/v1/presets")}
    assert listed["fitted-here"]["hash"] == fitted["hash"]

    # the next generation uses it
    plain = webui_server.post("/sdapi/v1/txt2img", txt2img_request())
    used = webui_server.post("/sdapi/v1/txt2img", txt2img_request({"preset": "fitted-here"}))
    text = infotexts(used)[0]
    assert "Signal leak: fitted-here," in text and f"Signal leak hash: {fitted['hash']}" in text
    assert not np.array_equal(pixels(used), pixels(plain))

    # errors are 4xx with a message, and leave the preset alone
    request = webui_server.request
    status, answer = request("/signal-leak/v1/fit", {"folder": str(folder), "name": "fitted-here"})
    assert status == 409 and "already exists" in answer["detail"]
    status, answer = request("/signal-leak/v1/fit", {"folder": str(tmp_path / "nowhere"),
                                                     "name": "other"})
    assert status == 422 and "folder not found" in answer["detail"]
    status, answer = request("/signal-leak/v1/fit", {"folder": str(folder), "name": "../evil"})
    assert status == 422 and "preset name" in answer["detail"]
    status, answer = request("/signal-leak/v1/fit", {"folder": str(folder), "name": "x",
                                                     "epochs": 3})
    assert status == 422 and "unknown key(s) 'epochs'" in answer["detail"]
    empty = tmp_path / "empty"
    empty.mkdir()
    status, answer = request("/signal-leak/v1/fit", {"folder": str(empty), "name": "x"})
    assert status == 422 and answer["detail"], answer
    assert not (webui_server.presets_dir / "x.safetensors").exists()
    assert load_preset(path).short_hash == fitted["hash"]


def test_fit_leaves_the_server_responsive_and_can_be_interrupted(webui_server, presets,
                                                                tmp_path):
    """A long fit must not hold up the server: while it runs, /sdapi/v1/progress answers
    (and shows the fit), and /sdapi/v1/interrupt stops it; nothing is saved, and the next
    generation runs normally. (A real-host fix: the route ran the fit on the event loop,
    so every other request, the interrupt included, waited until the fit ended.)"""
    folder = tmp_path / "many"
    write_images(webui_server, folder, 4)
    for copy in range(1, 12):  # 48 files; at 512 px each encode takes a while on a CPU
        for index in range(4):
            source = folder / f"image{index:03d}.png"
            (folder / f"copy{copy:02d}-{index}.png").write_bytes(source.read_bytes())
    result = {}

    def run_fit() -> None:
        result["answer"] = webui_server.request("/signal-leak/v1/fit", {
            "folder": str(folder), "name": "interrupted", "resolution": 512, "batch_size": 1})

    thread = threading.Thread(target=run_fit)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        seen = None
        while time.monotonic() < deadline and thread.is_alive():
            asked = time.monotonic()
            progress = webui_server.get("/sdapi/v1/progress?skip_current_image=true",
                                        timeout=30)
            waited = time.monotonic() - asked
            assert waited < 5.0, f"/sdapi/v1/progress took {waited:.1f} s during a fit"
            state = progress["state"]
            if state["job"] == "Signal leak fit" and state["job_no"] >= 1:
                seen = state
                break
            time.sleep(0.05)
        assert seen is not None, "never saw the fit in /sdapi/v1/progress"
        print(f"[fit] progress during the fit: {seen['job_no']}/{seen['job_count']} images")
        webui_server.post("/sdapi/v1/interrupt", {}, timeout=30)
    finally:
        thread.join(timeout=120)
    status, answer = result["answer"]
    assert status == 409 and "interrupted" in answer["detail"], answer
    assert not (webui_server.presets_dir / "interrupted.safetensors").exists()
    after = webui_server.post("/sdapi/v1/txt2img", txt2img_request({"preset": "test-sd1"}))
    assert "Signal leak: test-sd1," in infotexts(after)[0]
    assert not info(after).get("interrupted", False)
