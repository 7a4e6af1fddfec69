"""Other model families in the real A1111: a tiny SDXL (sgm) and a tiny SD 2.x v-prediction
(ldm) checkpoint, each with its own yaml (tiny_families.py), and the SDXL refiner.

Each request names its checkpoint in ``override_settings`` (A1111 loads it before the job,
A:modules/processing.py:828-836, and restores the option afterwards). The fit route works on
the loaded model, so the fit tests switch with ``POST /sdapi/v1/options``; the module's
fixture switches back to the SD 1.x model at the end.

A1111 only: Forge builds SDXL's and SD 2.x's text encoders and VAE from fixed full-size
configs (huggingface_guess), so a tiny checkpoint for them would hold the full-size CLIP-G
(several GB); the suite builds none for Forge.
"""

from __future__ import annotations

import numpy as np
import pytest
from slb_webui import (
    FORGE,
    SD1_CHECKPOINT,
    SD2V_CHECKPOINT,
    SDXL_CHECKPOINT,
    SDXL_REFINER_CHECKPOINT,
    SEED,
    assert_design_start,
    image_bytes,
    import_slb,
    info,
    infotexts,
    load_probe,
    pixels,
    probe_calls,
    sample_leak,
    txt2img_request,
    with_probe,
)

pytestmark = pytest.mark.skipif(
    FORGE, reason="A1111 only: the suite builds tiny SDXL/SD 2.x checkpoints for A1111 alone "
                  "(Forge builds their text encoders at full size)")

# checkpoint -> (family the extension must detect, VAE scale factor, prediction)
FAMILIES = {
    SDXL_CHECKPOINT: ("sdxl", 0.13025, "eps"),
    SD2V_CHECKPOINT: ("sd2", 0.18215, "v"),
}
# a preset of the model's latent space, written by the `presets` fixture (64x64, 8x8 latent)
OWN_PRESET = {"sdxl": "test-sdxl", "sd2": "test-sd1"}


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


@pytest.fixture
def loaded(webui_server, sd1_afterwards):
    """``loaded(checkpoint)`` selects and loads a checkpoint through /sdapi/v1/options (for
    routes that use the loaded model)."""

    def load(checkpoint: str) -> None:
        webui_server.post("/sdapi/v1/options", {"sd_model_checkpoint": checkpoint})
        titles = webui_server.get("/sdapi/v1/options")["sd_model_checkpoint"]
        assert titles.startswith(stem(checkpoint)), titles

    return load


@pytest.mark.parametrize("checkpoint", list(FAMILIES))
def test_checkpoint_loads_and_gives_finite_images(webui_server, sd1_afterwards, probe,
                                                  checkpoint):
    folder = probe("plain")
    answer = webui_server.post("/sdapi/v1/txt2img", with_probe(on(checkpoint), folder))
    assert info(answer)["sd_model_name"] == stem(checkpoint), info(answer)
    log = webui_server.log_text()
    config = webui_server.model_dir / f"{stem(checkpoint)}.yaml"
    assert "Loading weights [" in log and f"] from {webui_server.model_dir / checkpoint}\n" \
        in log, webui_server.log_tail()
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


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
@pytest.mark.parametrize("checkpoint", list(FAMILIES))
def test_sampler_gets_the_designed_start(webui_server, presets, sd1_afterwards, probe,
                                         checkpoint, sampler):
    """DESIGN 6 on SDXL (eps) and SD 2.x (v): both use SD's linear schedule (SDXL's
    LegacyDDPMDiscretization, A:modules/sd_models_xl.py:99-100; SD2 from its yaml), and a
    v-model's start is scaled like an eps-model's. Euler: ``eps + L/sigma0`` with sigma0 =
    14.6146; DDIM: ``sqrt(abar_T) L + sqrt(1 - abar_T) eps`` at T = 751 (4 steps)."""
    family = FAMILIES[checkpoint][0]
    preset = OWN_PRESET[family]
    starts, answers = {}, {}
    for name, leak in (("plain", None), ("leak", {"preset": preset})):
        folder = probe(name)
        answers[name] = webui_server.post("/sdapi/v1/txt2img", with_probe(
            on(checkpoint, leak, sampler_name=sampler, steps=4), folder))
        starts[name] = load_probe(folder, "noise_first_0")[0]
        assert probe_calls(folder) == ["first 0"]
    text = infotexts(answers["leak"])[0]
    assert f"Signal leak: {preset}," in text and "not applied" not in text, text
    assert not np.array_equal(pixels(answers["leak"]), pixels(answers["plain"]))

    leak = sample_leak(webui_server, preset, SEED)
    assert_design_start(starts["leak"], leak, starts["plain"], sampler, f"{family} {sampler}")


@pytest.mark.parametrize("checkpoint", list(FAMILIES))
def test_fit_route_with_the_models_vae(webui_server, presets, loaded, tmp_path, checkpoint):
    """``POST fit`` at 64 px on the loaded SDXL / SD 2.x model: the preset records that
    family and that VAE's scale factor, and generations on that model use it."""
    family, scale, _ = FAMILIES[checkpoint]
    loaded(checkpoint)
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
    # wrapper returns a posterior sample (sgm autoencoder.py:319-321, HOST-NOTES 5)
    if family == "sd2":
        assert preset.metadata["encode"] == "mean"

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
    """A1111 switches to the refiner inside the sampling loop (apply_refiner from the CFG
    denoiser, A:modules/sd_samplers_common.py:158-203): the model is swapped, the conds are
    rebuilt, and sampling continues from the current latent. process_before_every_sampling
    is not called again, so the leak is in the first model's start only."""
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
