"""Other model families in the real host: SDXL and SD 2.x v-prediction checkpoints, the SDXL
refiner, fits with each family's VAE, and checkpoint switches.

On A1111 the models are small sgm/ldm models with their own yaml (tiny_families.py); on
Forge a small UNet with the full-size VAE and text encoders Forge builds from fixed configs
(forge_tiny_model.py; SD 2.x-v with a yaml that says ``parameterization: v``). The sampler,
SGM, hires and inpainting checks run for every family in test_txt2img.py/test_img2img.py.

Each request names its checkpoint in ``override_settings`` (the host loads it before the job,
A:modules/processing.py:828-836, F:825-836, and restores the option afterwards, leaving that
model loaded). The fit route works on the selected model, so the fit tests switch with
``POST /sdapi/v1/options``; the module's fixture switches back to the SD 1.x model at the end.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from slb_webui import (
    FAMILY_MODELS,
    FORGE,
    LDM_PATCHED,
    NEO,
    NO_SD2,
    RECTIFIED_CHECKPOINT,
    SD1_CHECKPOINT,
    SD2V_CHECKPOINT,
    SDXL_CHECKPOINT,
    SDXL_REFINER_CHECKPOINT,
    SEED,
    assert_design_start,
    family_params,
    image_bytes,
    img2img_request,
    import_slb,
    info,
    infotexts,
    init_image,
    load_probe,
    on_model,
    pixels,
    png_b64,
    probe_calls,
    sample_leak,
    txt2img_request,
    with_probe,
)

# checkpoint -> (family the extension must detect, VAE scale factor, prediction)
FAMILIES = {
    SDXL_CHECKPOINT: ("sdxl", 0.13025, "eps"),
    SD2V_CHECKPOINT: ("sd2", 0.18215, "v"),
}


def on(checkpoint: str, leak: object = None, settings: dict | None = None, **fields: object
       ) -> dict:
    """A txt2img request (slb_webui defaults) that runs on ``checkpoint``."""
    return txt2img_request(leak, settings={"sd_model_checkpoint": checkpoint,
                                           **(settings or {})}, **fields)


def stem(checkpoint: str) -> str:
    return checkpoint.rsplit(".", 1)[0]


@pytest.fixture(scope="module")
def sd1_afterwards(webui_server):
    """Leaves the SD 1.x model loaded (and selected) when this module is done."""
    yield
    webui_server.post("/sdapi/v1/options", {"sd_model_checkpoint": SD1_CHECKPOINT})


@pytest.mark.parametrize("checkpoint", family_params(list(FAMILIES)))
def test_checkpoint_loads_and_gives_finite_images(webui_server, sd1_afterwards, probe,
                                                  checkpoint):
    folder = probe("plain")
    answer = webui_server.post("/sdapi/v1/txt2img", with_probe(on(checkpoint), folder))
    assert info(answer)["sd_model_name"] == stem(checkpoint), info(answer)
    log = webui_server.log_text()
    if LDM_PATCHED:  # A1111's loader: R:modules/sd_models.py 712, 1181; C:318, 595
        assert "Loading weights [" in log and \
            f"] from {webui_server.model_dir / checkpoint}\n" in log, webui_server.log_tail()
        assert " loaded in " in log, webui_server.log_tail()
    elif FORGE:  # F:modules/sd_models.py 479, 522 (Neo's alike)
        assert f"Loading Model: {{'checkpoint_info': {{'filename': " \
               f"'{webui_server.model_dir / checkpoint}'" in log, webui_server.log_tail()
        assert "Model loaded in " in log, webui_server.log_tail()
    else:
        config = webui_server.model_dir / f"{stem(checkpoint)}.yaml"
        assert "Loading weights [" in log and \
            f"] from {webui_server.model_dir / checkpoint}\n" in log, webui_server.log_tail()
        assert f"Creating model from config: {config}" in log, webui_server.log_tail()
    samples = load_probe(folder, "samples_0")
    assert samples.shape == (1, 4, 8, 8) and np.isfinite(samples).all()
    image = pixels(answer)
    assert image.shape == (64, 64, 3) and image.std() > 0.5, "a flat image"
    print(f"[{stem(checkpoint)}] latent std {samples.std():.3f}, image std {image.std():.1f}")
    # the same request repeats byte for byte
    again = webui_server.post("/sdapi/v1/txt2img", on(checkpoint))
    assert image_bytes(again) == image_bytes(answer)


def test_sdxl_refuses_an_sd1_preset_unless_allowed(webui_server, presets, sd1_afterwards):
    """DESIGN 7.7 on SDXL: an SD 1.x preset is another latent space; the setting "Allow
    presets from other model families" lets it through."""
    reason = "preset test-sd1 was fitted for sd1, the model is sdxl"
    plain = webui_server.post("/sdapi/v1/txt2img", on(SDXL_CHECKPOINT))
    refused = webui_server.post("/sdapi/v1/txt2img", on(SDXL_CHECKPOINT, {"preset": "test-sd1"}))
    text = infotexts(refused)[0]
    assert f'Signal leak: "test-sd1 (not applied: {reason}' in text, text
    assert "Signal leak hash" not in text
    assert np.array_equal(pixels(refused), pixels(plain))
    assert f"[Signal Leak Bias] not applied: {reason}" in webui_server.log_text()

    allowed = webui_server.post("/sdapi/v1/txt2img", on(
        SDXL_CHECKPOINT, {"preset": "test-sd1"},
        settings={"signal_leak_allow_other_families": True}))
    text = infotexts(allowed)[0]
    assert "Signal leak: test-sd1," in text and "not applied" not in text, text
    assert not np.array_equal(pixels(allowed), pixels(plain))

    own = webui_server.post("/sdapi/v1/txt2img", on(SDXL_CHECKPOINT, {"preset": "test-sdxl"}))
    assert "Signal leak: test-sdxl," in infotexts(own)[0], infotexts(own)[0]


@NO_SD2
def test_sd2_shares_sd1s_latent_space_and_refuses_sdxl(webui_server, presets, sd1_afterwards):
    """SD 2.x is detected as sd2: an SDXL preset is refused with "the model is sd2", while an
    SD 1.x preset (same VAE, same latent space) is applied."""
    reason = "preset test-sdxl was fitted for sdxl, the model is sd2"
    plain = webui_server.post("/sdapi/v1/txt2img", on(SD2V_CHECKPOINT))
    refused = webui_server.post("/sdapi/v1/txt2img", on(SD2V_CHECKPOINT, {"preset": "test-sdxl"}))
    text = infotexts(refused)[0]
    assert f'Signal leak: "test-sdxl (not applied: {reason}' in text, text
    assert np.array_equal(pixels(refused), pixels(plain))
    sd1 = webui_server.post("/sdapi/v1/txt2img", on(SD2V_CHECKPOINT, {"preset": "test-sd1"}))
    text = infotexts(sd1)[0]
    assert "Signal leak: test-sd1," in text and "not applied" not in text, text
    assert not np.array_equal(pixels(sd1), pixels(plain))


@pytest.mark.parametrize("checkpoint", family_params(list(FAMILIES)))
def test_fit_route_with_the_models_vae(webui_server, presets, select_model, tmp_path,
                                       checkpoint):
    """``POST fit`` at 64 px on the loaded SDXL / SD 2.x model: the preset records that
    family and that VAE's scale factor, and generations on that model use it."""
    family, scale, _ = FAMILIES[checkpoint]
    select_model(family)
    folder = tmp_path / "generated"
    folder.mkdir()
    answer = webui_server.post("/sdapi/v1/txt2img", on(checkpoint, batch_size=4, steps=2))
    for index in range(4):
        (folder / f"image{index}.png").write_bytes(image_bytes(answer, index))
    name = f"fitted-{family}"
    fitted = webui_server.post("/signal-leak/v1/fit", {
        "folder": str(folder), "name": name, "resolution": 64, "n_components": 3,
        "overwrite": True})
    assert fitted["usable"] is True and fitted["images"] == 4, fitted
    assert fitted["model_family"] == family
    assert fitted["latent_shape"] == [4, 8, 8] and fitted["image_size"] == [64, 64]

    import_slb()
    from slb.preset import load_preset

    preset = load_preset(webui_server.presets_dir / f"{name}.safetensors")
    shown = {k: preset.metadata.get(k) for k in ("model_family", "scale_factor", "vae",
                                                  "encode")}
    print(f"[fit {family}] metadata: {shown}")
    assert preset.short_hash == fitted["hash"]
    assert preset.metadata["model_family"] == family
    assert float(preset.metadata["scale_factor"]) == pytest.approx(scale, rel=1e-6)
    assert preset.metadata["vae"].startswith("checkpoint:")
    # A1111's SD 2.x (ldm) VAE gives the posterior, whose mean is used; its SDXL (sgm) VAE
    # wrapper and Forge's VAE return a posterior sample (sgm autoencoder.py:319-321,
    # HOST-NOTES 5)
    assert preset.metadata["encode"] == ("mean" if family == "sd2" and not FORGE
                                         else "sample")

    plain = webui_server.post("/sdapi/v1/txt2img", on(checkpoint))
    used = webui_server.post("/sdapi/v1/txt2img", on(checkpoint, {"preset": name}))
    text = infotexts(used)[0]
    assert f"Signal leak: {name}," in text and f"Signal leak hash: {fitted['hash']}" in text
    assert not np.array_equal(pixels(used), pixels(plain))
    # on the SD 1.x model: an sd2 preset shares its latent space, an sdxl one does not
    on_sd1 = infotexts(webui_server.post("/sdapi/v1/txt2img", on(SD1_CHECKPOINT,
                                                                 {"preset": name})))[0]
    if family == "sd2":
        assert f"Signal leak: {name}," in on_sd1 and "not applied" not in on_sd1, on_sd1
    else:
        assert f"not applied: preset {name} was fitted for sdxl, the model is sd1" in on_sd1


def test_sdxl_refiner_switch_leaves_the_leak_in_the_first_models_start(
        webui_server, presets, sd1_afterwards, probe):
    """The host switches to the refiner inside the sampling loop (apply_refiner from the CFG
    denoiser, A:modules/sd_samplers_common.py:158-203, F:166-210 through Forge's
    checkpoint_change and forge_model_reload): the model is swapped, the conds are rebuilt,
    and sampling continues from the current latent. process_before_every_sampling is not
    called again, so the leak is in the first model's start only."""
    refiner = {"refiner_checkpoint": SDXL_REFINER_CHECKPOINT, "refiner_switch_at": 0.5}
    runs = {}
    for name, leak in (("plain", None), ("leak", {"preset": "test-sdxl"})):
        folder = probe(name)
        answer = webui_server.post("/sdapi/v1/txt2img", with_probe(
            on(SDXL_CHECKPOINT, leak, steps=4, **refiner), folder))
        runs[name] = (answer, load_probe(folder, "noise_first_0")[0])
        assert probe_calls(folder) == ["first 0"], "the hook ran again at the switch"
        samples = load_probe(folder, "samples_0")
        assert np.isfinite(samples).all()
    text = infotexts(runs["leak"][0])[0]
    assert f"Refiner: {stem(SDXL_REFINER_CHECKPOINT)}" in text, text
    assert "Refiner switch at: 0.5" in text, text
    assert "Signal leak: test-sdxl," in text and "not applied" not in text, text
    assert not np.array_equal(pixels(runs["leak"][0]), pixels(runs["plain"][0]))
    without = webui_server.post("/sdapi/v1/txt2img", on(SDXL_CHECKPOINT, steps=4))
    assert not np.array_equal(pixels(without), pixels(runs["plain"][0])), \
        "the refiner changed nothing"

    leak = sample_leak(webui_server, "test-sdxl", SEED)
    assert_design_start(runs["leak"][1], leak, runs["plain"][1], "Euler", "refiner first pass")


def host_encodes(server, probe, family: str, images: list[bytes]) -> np.ndarray:
    """The host's own scaled VAE latents of ``images`` (64x64 PNGs), independent of the
    extension: img2img's init latent, which the host encodes and scales in its processing
    code (A:modules/processing.py 1727-1744, F:1708-1725), saved by the probe."""
    latents = []
    for index, data in enumerate(images):
        folder = probe(f"encode-{family}-{index}")
        request = img2img_request(settings=on_model(family))
        request["init_images"] = [base64.b64encode(data).decode("ascii")]
        assert server.post("/sdapi/v1/img2img", with_probe(request, folder))["images"]
        latents.append(load_probe(folder, "init_before_0")[0])
    return np.stack(latents).astype(np.float64)


@pytest.mark.parametrize("family", family_params())
def test_fit_statistics_equal_the_hosts_own_vae_encode(webui_server, select_model, probe,
                                                       tmp_path, family):
    """A ``pixel`` fit's per-element mean and variance equal those of the host's own encode of
    the same images (img2img's init latent: the host's VAE and scale factor, not the
    extension's encode path). A missing, wrong or doubled scale factor changes the ratio of
    the spreads by that factor; the tolerance is float32 rounding and the VAE posterior's
    noise (std ~3e-7)."""
    checkpoint, _ = FAMILY_MODELS[family]
    select_model(family)
    answer = webui_server.post("/sdapi/v1/txt2img", on(checkpoint, batch_size=4, steps=2))
    images = [image_bytes(answer, index) for index in range(4)]
    folder = tmp_path / "images"
    folder.mkdir()
    for index, data in enumerate(images):
        (folder / f"image{index}.png").write_bytes(data)
    name = f"stats-{family}"
    fitted = webui_server.post("/signal-leak/v1/fit", {
        "folder": str(folder), "name": name, "kind": "pixel", "resolution": 64,
        "overwrite": True})
    assert fitted["images"] == 4 and fitted["model_family"] == family, fitted

    import_slb()
    from slb.preset import load_preset

    preset = load_preset(webui_server.presets_dir / f"{name}.safetensors")
    mean = preset.tensors["mean"].double().numpy()
    var = preset.tensors["var"].double().numpy()
    latents = host_encodes(webui_server, probe, family, images)
    own_mean, own_var = latents.mean(axis=0), latents.var(axis=0, ddof=1)
    spread = float(np.sqrt(var.mean() / own_var.mean()))
    print(f"[{family}] fit vs the host's encode: spread ratio {spread:.6f}, max |mean diff| "
          f"{np.abs(mean - own_mean).max():.2e} (latent std {np.sqrt(own_var.mean()):.3f})")
    assert spread == pytest.approx(1.0, abs=1e-4)
    assert np.abs(mean - own_mean).max() < 1e-4 * max(1.0, np.abs(own_mean).max())
    assert np.abs(var - own_var).max() < 1e-4 * max(1.0, own_var.max())


def leave_loaded(server, loaded_family: str, selected_family: str) -> None:
    """Select ``selected_family``'s checkpoint while ``loaded_family``'s stays loaded: a
    generation on ``loaded_family`` (a request override: the host loads it, then restores
    the option), then ``POST /sdapi/v1/options``. Forge only records a selection (it loads at
    the next generation); A1111 keeps the override's model until the next job."""
    server.post("/sdapi/v1/txt2img", on(FAMILY_MODELS[loaded_family][0]))
    server.post("/sdapi/v1/options",
                {"sd_model_checkpoint": FAMILY_MODELS[selected_family][0]})


@pytest.mark.parametrize(("stale", "selected"), [("sd1", "sdxl"), ("sdxl", "sd1")])
def test_work_right_after_a_switch_uses_the_selected_checkpoint(
        webui_server, sd1_afterwards, tmp_path, stale, selected):
    """Fits, ``/sample`` name resolution and reference encodes started while another model
    is still loaded use the checkpoint the user selected, not the stale one (issue: with
    SDXL loaded, switch to SD 1.x and fit at once: the preset said ``sdxl``)."""
    reference = png_b64(init_image()[::-1])

    def reference_leak() -> np.ndarray:
        answer = webui_server.post("/signal-leak/v1/sample", {
            "preset": "manual (no preset)", "reference_image": reference,
            "shape": [4, 8, 8], "seed": SEED, "format": "npy"})
        return np.load(io.BytesIO(base64.b64decode(answer["data"])))

    settled = {}
    for family in (stale, selected):
        leave_loaded(webui_server, family, family)
        settled[family] = reference_leak()
    assert np.abs(settled[stale] - settled[selected]).max() > 1e-3, \
        "both models' VAEs give the same latent: this test could not fail"

    leave_loaded(webui_server, stale, selected)
    assert np.array_equal(reference_leak(), settled[selected])

    # the natural-name alias X -> X-<family> follows the selected model too
    folder = tmp_path / "images"
    folder.mkdir()
    for index, picture in enumerate((init_image(), init_image()[::-1], init_image()[:, ::-1])):
        (folder / f"image{index}.png").write_bytes(base64.b64decode(png_b64(picture)))
    leave_loaded(webui_server, stale, selected)
    fitted = webui_server.post("/signal-leak/v1/fit", {
        "folder": str(folder), "name": f"switched-{selected}", "resolution": 64,
        "overwrite": True})
    assert fitted["model_family"] == selected, fitted

    import_slb()
    from slb.preset import load_preset

    preset = load_preset(webui_server.presets_dir / f"switched-{selected}.safetensors")
    scale = {"sd1": 0.18215, "sdxl": 0.13025}[selected]
    assert float(preset.metadata["scale_factor"]) == pytest.approx(scale, rel=1e-6)
    leave_loaded(webui_server, stale, selected)
    alias = sample_leak(webui_server, "switched", SEED)
    assert np.array_equal(alias, sample_leak(webui_server, f"switched-{selected}", SEED))


@pytest.mark.skipif(not NEO, reason="Forge Neo only: it runs an SDXL checkpoint whose file name "
                    "says 'rectified' as a rectified-flow model; A1111, Forge, reForge and Forge "
                    "Classic have no such mode (no 'rectified' in their loaders)")
def test_rectified_flow_sdxl_gets_no_leak(webui_server, presets, sd1_afterwards, probe):
    """A real flow-matching generation in Neo: the SDXL weights under a name with "rectified"
    run with Neo's PredictionDiscreteFlow (N:backend/loader.py 894-895,
    backend/diffusion_engine/sdxl.py 25-30), which starts from pure noise. The extension
    leaves the start alone and says why, in the infotext and once on the console."""
    runs = {}
    for name, leak in (("plain", None), ("leak", {"preset": "test-sdxl"})):
        folder = probe(name)
        answer = webui_server.post("/sdapi/v1/txt2img", with_probe(
            on(RECTIFIED_CHECKPOINT, leak, steps=4), folder))
        runs[name] = (answer, load_probe(folder, "noise_first_0"))
    assert "Loading Rectified-Flow Predictor" in webui_server.log_text() or \
        "Using Rectified-Flow Predictor" in webui_server.log_text(), webui_server.log_tail()
    text = infotexts(runs["leak"][0])[0]
    reason = "flow-matching models start from pure noise"
    assert f'Signal leak: "test-sdxl (not applied: {reason}' in text, text
    assert "Signal leak hash" not in text
    assert np.array_equal(runs["leak"][1], runs["plain"][1]), "the start was changed"
    assert np.array_equal(pixels(runs["leak"][0]), pixels(runs["plain"][0]))
    assert webui_server.log_text().count(f"[Signal Leak Bias] not applied: {reason}") >= 1
