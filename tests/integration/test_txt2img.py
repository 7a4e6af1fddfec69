"""txt2img through /sdapi/v1/txt2img: effect, repeatability, batches, infotext, API forms,
refusals, samplers and hires fix.

Pixels are compared, not PNG bytes, wherever the infotext (stored in the PNG) differs
between the two requests; byte equality is asserted where everything should be the same.
"""

from __future__ import annotations

import numpy as np
import pytest
from slb_webui import (
    FAMILY_MODELS,
    FORGE,
    MANUAL,
    SD_SIGMA_MAX,
    SEED,
    assert_design_start,
    family_params,
    fit_start,
    hires_fields,
    image_bytes,
    infotexts,
    load_probe,
    pixels,
    probe_calls,
    sample_leak,
    txt2img_request,
    with_probe,
)

FULL = {"preset": "test-sd1", "strength": 0.75, "lf": "zero", "means": {"0": 1.5, "2": -0.5},
        "seed": 77}
# the same settings in the positional (UI) order: enabled, preset, strength, lf,
# fix_mean_0, mean_0, ..., fix_mean_3, mean_3, seed
FULL_POSITIONAL = [True, "test-sd1", 0.75, "zero", True, 1.5, False, 0.0, True, -0.5, False,
                   0.0, 77]


def test_leak_changes_the_image_and_same_settings_repeat_exactly(webui_server, presets):
    plain = webui_server.post("/sdapi/v1/txt2img", txt2img_request())
    first = webui_server.post("/sdapi/v1/txt2img", txt2img_request({"preset": "test-sd1"}))
    again = webui_server.post("/sdapi/v1/txt2img", txt2img_request({"preset": "test-sd1"}))

    assert "Signal leak: test-sd1" in infotexts(first)[0]
    assert "Signal leak" not in infotexts(plain)[0]
    change = np.abs(pixels(first) - pixels(plain))
    print(f"[leak] on/off: mean |diff| {change.mean():.2f}, max {change.max()} (0..255)")
    assert change.mean() > 1.0, "the leak did not change the image"
    assert image_bytes(first) == image_bytes(again), "same seed and settings, different PNG"

    # strength 0 hands the sampler the WebUI's own noise (DESIGN 5: exactly)
    zero = webui_server.post("/sdapi/v1/txt2img",
                             txt2img_request({"preset": "test-sd1", "strength": 0}))
    assert np.array_equal(pixels(zero), pixels(plain))


def test_a_batch_draws_one_leak_per_image_from_its_own_seed(webui_server, presets, probe):
    """Batch size 2, batch count 2 (seeds SEED..SEED+3): the probe reads the tensor Euler is
    handed with and without the leak. By DESIGN 6 it is ``eps + L/sigma0`` with sigma0 the
    schedule's first sigma, so ``(with - without) * sigma0`` is each image's leak; it must be
    the leak our /sample route draws for that image's seed, hence different per image."""
    runs = {}
    for name, leak in (("plain", None), ("leak", {"preset": "test-sd1"})):
        folder = probe(name)
        request = with_probe(txt2img_request(leak, batch_size=2, n_iter=2), folder)
        answer = webui_server.post("/sdapi/v1/txt2img", request)
        assert len(answer["images"]) >= 4
        runs[name] = [load_probe(folder, f"noise_first_{i}") for i in range(2)]

    leaks = []
    for iteration in range(2):
        diff = (runs["leak"][iteration] - runs["plain"][iteration]) * SD_SIGMA_MAX
        for index in range(2):
            seed = SEED + 2 * iteration + index
            expected = sample_leak(webui_server, "test-sd1", seed)
            err = np.abs(diff[index] - expected).max()
            assert err < 1e-3 * max(1.0, np.abs(expected).max()), (seed, err)
            leaks.append(diff[index])
    for i in range(len(leaks)):
        for j in range(i + 1, len(leaks)):
            assert np.abs(leaks[i] - leaks[j]).max() > 0.05, f"images {i} and {j} share a leak"


def test_infotext_keys_png_info_and_paste_back(webui_server, presets):
    answer = webui_server.post("/sdapi/v1/txt2img", txt2img_request(FULL))
    text = infotexts(answer)[0]
    print(f"[infotext] {text.splitlines()[-1]}")
    expected = {
        "Signal leak": "test-sd1",
        "Signal leak hash": presets["test-sd1"],
        "Signal leak strength": "0.75",
        "Signal leak LF": "zero",
        "Signal leak means": "0:1.5,2:-0.5",
        "Signal leak seed": "77",
    }
    png = "data:image/png;base64," + answer["images"][0]
    parsed = webui_server.post("/sdapi/v1/png-info", {"image": png})
    assert parsed["info"] == text
    assert {k: parsed["parameters"].get(k) for k in expected} == expected

    # the infotext alone (the API's "infotext" field, like PNG Info -> Send to txt2img)
    # restores every control: same image, same infotext
    request = {"infotext": text, "send_images": True, "save_images": False,
               "override_settings": txt2img_request()["override_settings"]}
    if FORGE:
        # Forge (dfdcbab6) answers HTTP 500 "isinstance() argument 2 cannot be a
        # parameterized generic" for any infotext, with or without our extension: its
        # styles paste field yields gr.update() when the text has no styles, and
        # apply_infotext then calls isinstance(value, list[str]) (modules/api/api.py:407;
        # field at modules/ui.py:511). A field the request sets itself is not pasted
        # (api.py:416), so the request names the (empty) styles list.
        request["styles"] = []
    pasted = webui_server.post("/sdapi/v1/txt2img", request)
    assert infotexts(pasted)[0] == text
    assert np.array_equal(pixels(pasted), pixels(answer))


def test_positional_and_dict_forms_give_identical_images(webui_server, presets):
    by_dict = webui_server.post("/sdapi/v1/txt2img", txt2img_request(FULL))
    by_list = webui_server.post("/sdapi/v1/txt2img", txt2img_request(FULL_POSITIONAL))
    assert infotexts(by_list) == infotexts(by_dict)
    assert image_bytes(by_list) == image_bytes(by_dict)
    # a short positional list: the rest take the UI defaults, like an omitted dict key
    short = webui_server.post("/sdapi/v1/txt2img", txt2img_request([True, "test-sd1"]))
    by_name = webui_server.post("/sdapi/v1/txt2img", txt2img_request({"preset": "test-sd1"}))
    assert image_bytes(short) == image_bytes(by_name)


def test_unknown_dict_key_is_refused_clearly_without_failing_the_request(webui_server,
                                                                        presets):
    plain = webui_server.post("/sdapi/v1/txt2img", txt2img_request())
    status, answer = webui_server.request(
        "/sdapi/v1/txt2img", txt2img_request({"preset": "test-sd1", "strenght": 1.5}))
    assert status == 200, answer
    text = infotexts(answer)[0]
    assert "Signal leak: \"not applied: unknown key(s) 'strenght'" in text, text
    assert "allowed: enabled, preset, strength, lf, means, seed" in text
    assert np.array_equal(pixels(answer), pixels(plain)), "refused, yet the image changed"
    assert "[Signal Leak Bias] not applied: unknown key(s) 'strenght'" in webui_server.log_text()
    # the server is fine afterwards
    after = webui_server.post("/sdapi/v1/txt2img", txt2img_request({"preset": "test-sd1"}))
    assert "Signal leak: test-sd1" in infotexts(after)[0]


@pytest.mark.parametrize(("preset", "reason"), [
    ("test-sdxl", "preset test-sdxl was fitted for sdxl, the model is sd1"),
    ("test-3ch", "preset test-3ch has 3 latent channels; the model has 4"),
])
def test_incompatible_preset_is_refused_with_its_reason(webui_server, presets, preset, reason):
    plain = webui_server.post("/sdapi/v1/txt2img", txt2img_request())
    answer = webui_server.post("/sdapi/v1/txt2img", txt2img_request({"preset": preset}))
    text = infotexts(answer)[0]
    assert f"Signal leak: \"{preset} (not applied: {reason}" in text, text
    # DESIGN 7.4: hash and strength describe an applied leak only
    assert "Signal leak hash" not in text and "Signal leak strength" not in text, text
    assert np.array_equal(pixels(answer), pixels(plain))
    assert f"[Signal Leak Bias] not applied: {reason}" in webui_server.log_text()

    # "Allow presets from other model families" lets the SD XL preset through; a preset
    # with the wrong channel count stays refused
    allowed = webui_server.post("/sdapi/v1/txt2img", txt2img_request(
        {"preset": preset}, settings={"signal_leak_allow_other_families": True}))
    applied = not np.array_equal(pixels(allowed), pixels(plain))
    assert applied == (preset == "test-sdxl"), infotexts(allowed)[0]


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M", "DDIM", "UniPC"])
@pytest.mark.parametrize("family", family_params())
def test_sampler_gets_the_designed_start(webui_server, presets, select_model, probe, family,
                                         sampler):
    """Each sampler runs with the leak, and the tensor it is handed is DESIGN 6's start:
    k-diffusion samplers ``eps + L/sigma0`` (sigma0 = the schedule's first sigma, the SD
    maximum 14.6146 for these schedules); timestep samplers ``sqrt(abar_T) L +
    sqrt(1 - abar_T) eps`` at their first timestep T (UniPC: 999). On SD 1.x, SDXL (SD's
    linear schedule: LegacyDDPMDiscretization, A:modules/sd_models_xl.py:99-100) and SD 2.x
    v-prediction (a v-model's start is scaled like an eps-model's)."""
    settings, preset = select_model(family), FAMILY_MODELS[family][1]
    starts = {}
    answers = {}
    for name, leak in (("plain", None), ("leak", {"preset": preset})):
        folder = probe(name)
        answers[name] = webui_server.post("/sdapi/v1/txt2img", with_probe(
            txt2img_request(leak, settings=settings, sampler_name=sampler, steps=4), folder))
        starts[name] = load_probe(folder, "noise_first_0")[0]
        assert probe_calls(folder) == ["first 0"]
    text = infotexts(answers["leak"])[0]
    assert f"Signal leak: {preset}," in text and "not applied" not in text, text
    assert not np.array_equal(pixels(answers["leak"]), pixels(answers["plain"]))

    leak = sample_leak(webui_server, preset, SEED)
    assert_design_start(starts["leak"], leak, starts["plain"], sampler, f"{family} {sampler}")


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M"])
@pytest.mark.parametrize("family", family_params())
def test_sgm_noise_multiplier_start(webui_server, presets, select_model, probe, family,
                                    sampler):
    """With the "SGM noise multiplier" option on, k-diffusion samplers scale their start by
    ``sqrt(1 + sigma0^2)`` instead of ``sigma0`` (A1111 sd_samplers_kdiffusion; Forge
    predictor.noise_scaling with max_denoise), so DESIGN 6's start is
    ``(L + sigma0 eps) / sqrt(1 + sigma0^2)``: ``a = 1/sqrt(1+sigma0^2)``,
    ``b = sigma0/sqrt(1+sigma0^2)``, hence ``a^2 + b^2 = 1`` and ``b/a = sigma0``."""
    settings = {**select_model(family), "sgm_noise_multiplier": True}
    preset = FAMILY_MODELS[family][1]
    starts = {}
    answers = {}
    for name, leak in (("plain", None), ("leak", {"preset": preset})):
        folder = probe(name)
        answers[name] = webui_server.post("/sdapi/v1/txt2img", with_probe(
            txt2img_request(leak, settings=settings, sampler_name=sampler, steps=4), folder))
        starts[name] = load_probe(folder, "noise_first_0")[0]
    text = infotexts(answers["leak"])[0]
    assert f"Signal leak: {preset}," in text and "not applied" not in text, text
    assert "SGM noise multiplier: True" in text, text
    assert not np.array_equal(pixels(answers["leak"]), pixels(answers["plain"]))

    leak = sample_leak(webui_server, preset, SEED)
    a, b, residual = fit_start(starts["leak"], leak, starts["plain"])
    print(f"[{family} {sampler} SGM] start = {a:.6f} * L + {b:.6f} * eps (residual {residual:.2e})")
    assert residual < 1e-5
    assert a * a + b * b == pytest.approx(1.0, rel=1e-4)
    assert b / a == pytest.approx(SD_SIGMA_MAX, rel=1e-4)
    norm = (1.0 + SD_SIGMA_MAX**2) ** 0.5
    assert a == pytest.approx(1.0 / norm, rel=1e-4)
    assert b == pytest.approx(SD_SIGMA_MAX / norm, rel=1e-4)


@pytest.mark.parametrize("family", family_params())
def test_hires_fix_runs_and_leaves_the_second_pass_alone(webui_server, presets, select_model,
                                                         probe, family):
    settings, preset = select_model(family), FAMILY_MODELS[family][1]
    hires = hires_fields()
    runs = {}
    for name, leak in (("plain", None), ("leak", {"preset": preset})):
        folder = probe(name)
        answer = webui_server.post("/sdapi/v1/txt2img", with_probe(
            txt2img_request(leak, settings=settings, **hires), folder))
        runs[name] = (answer, load_probe(folder, "noise_first_0"),
                      load_probe(folder, "noise_hr_0"))
    answer = runs["leak"][0]
    assert pixels(answer).shape == (128, 128, 3)
    text = infotexts(answer)[0]
    assert f"Signal leak: {preset}" in text and "Hires upscale: 2" in text, text
    assert not np.array_equal(pixels(answer), pixels(runs["plain"][0]))
    assert not np.array_equal(runs["leak"][1], runs["plain"][1]), "first pass without leak"
    assert np.array_equal(runs["leak"][2], runs["plain"][2]), "the hires pass got a leak"
    # the first pass got the leak exactly once (Forge calls the hooks three times in a
    # hires job): Euler's start is eps + L/sigma0
    leak = sample_leak(webui_server, preset, SEED)
    assert_design_start(runs["leak"][1][0], leak, runs["plain"][1][0], "Euler", "hires first pass")


def test_manual_mode_and_fixed_leak_seed(webui_server, presets):
    """Manual mode (no preset, fixed channel means) changes the image; a fixed leak seed
    keeps the leak while the image seed changes (so two image seeds differ less)."""
    plain = webui_server.post("/sdapi/v1/txt2img", txt2img_request())
    manual = webui_server.post("/sdapi/v1/txt2img", txt2img_request(
        {"preset": MANUAL, "means": {"0": 2.0}}))
    assert "Signal leak: manual" in infotexts(manual)[0]
    assert 'Signal leak means: "0:2"' in infotexts(manual)[0], infotexts(manual)[0]
    assert not np.array_equal(pixels(manual), pixels(plain))
    fixed = webui_server.post("/sdapi/v1/txt2img", txt2img_request(
        {"preset": "test-sd1", "seed": SEED}))
    own = webui_server.post("/sdapi/v1/txt2img", txt2img_request({"preset": "test-sd1"}))
    # leak seed SEED == the image's own seed SEED: the same leak, the same pixels
    assert np.array_equal(pixels(fixed), pixels(own))
    assert "Signal leak seed: 1234" in infotexts(fixed)[0]
