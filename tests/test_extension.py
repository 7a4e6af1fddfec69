"""The AlwaysOnScript driven through the stand-in WebUI host (tests/standin), as A1111 would.

Each test loads ``scripts/signal_leak_bias.py`` the way A1111's script loader does, builds its
UI, runs generations through the stand-in ``process_images`` (A1111 v1.10.1 hook order) and
checks what the sampler received against DESIGN section 6, computed independently with slb.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from standin.fixtures import start_with_extension

from slb.dct import lf_coefficients, lowfreq_basis
from slb.mixing import swap_lowfreq
from slb.preset import save_preset
from slb.sampling import LeakSampler
from slb.settings import ARG_NAMES, MANUAL
from tests.conftest import make_preset, photo_folder

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "signal_leak_bias.py"
TITLE = "Signal Leak Bias"
SIGMA_MAX = 14.614642


def leak_args(preset=MANUAL, strength=1.0, lf="sampled", means=None, seed=-1, enabled=True):
    args = [enabled, preset, strength, lf]
    for c in range(4):
        fixed = means is not None and c in means
        args += [fixed, means[c] if fixed else 0.0]
    return [*args, seed]


def has_fastapi() -> bool:
    import importlib.util

    return importlib.util.find_spec("fastapi") is not None


@pytest.fixture
def host(fresh_host):
    start_with_extension(fresh_host, SCRIPT, with_app=has_fastapi())
    return fresh_host


@pytest.fixture
def natural(host):
    """A dct+pixel preset at the stand-in's 64x64 (8x8 latent), saved in the user folder."""
    import modules.paths as paths

    preset = make_preset("dct+pixel", 3, shape=(4, 8, 8), model_family="sd1")
    save_preset(preset, Path(paths.models_path) / "signal_leak", "natural")
    return preset


def run(host, tab="txt2img", args=None, **kw):
    full = host.ui_args(tab, {TITLE: args if args is not None else leak_args()})
    res = (host.txt2img if tab == "txt2img" else host.img2img)(full, **kw)
    assert res.errors == [], res.errors
    return res


def expected_leaks(preset, seeds, shape=(4, 8, 8), subseeds=None, strength=0.0, **kw):
    return LeakSampler(preset, shape, **kw).draw(seeds, subseeds, strength)


def plain_noise(host, seed=None, **kw):
    """What the sampler gets without the extension (same seeds)."""
    if seed is not None:
        kw["seed"] = seed
    return host.txt2img(host.ui_args("txt2img", {TITLE: leak_args(enabled=False)}), **kw)


# --- txt2img: every sampler family lands on DESIGN 6's target -------------------------------

def test_euler_gets_eps_plus_leak_over_sigma0(host, natural):
    base = plain_noise(host, 1234)
    res = run(host, args=leak_args("natural"), seed=1234)
    rec, plain = res.record("txt2img"), base.record("txt2img")
    eps = plain["received_x"]
    leak = expected_leaks(natural, [1234])
    assert abs(rec["sigma0"] - SIGMA_MAX) < 1e-3
    assert torch.allclose(rec["received_x"], eps + leak / rec["sigma0"], atol=1e-6)
    assert torch.allclose(rec["x_start"], leak + rec["sigma0"] * eps, atol=1e-5)
    assert res.p.extra_generation_params["Signal leak"] == "natural"


def test_sgm_noise_multiplier(host, natural):
    import modules.shared as shared

    shared.opts.sgm_noise_multiplier = True
    base = plain_noise(host, 7)
    res = run(host, args=leak_args("natural"), seed=7)
    rec, eps = res.record("txt2img"), base.record("txt2img")["received_x"]
    s0 = rec["sigma0"]
    leak = expected_leaks(natural, [7])
    assert torch.allclose(rec["received_x"], (leak + s0 * eps) / math.sqrt(1 + s0 * s0),
                          atol=1e-6)
    assert torch.allclose(rec["x_start"], leak + s0 * eps, atol=1e-5)


@pytest.mark.parametrize("sampler, t0", [("DDIM", 951), ("PLMS", 951), ("UniPC", 999)])
def test_timestep_samplers_get_the_vp_mix(host, natural, sampler, t0):
    import modules.shared as shared

    base = plain_noise(host, 99, sampler_name=sampler)
    res = run(host, args=leak_args("natural"), seed=99, sampler_name=sampler)
    rec, eps = res.record("txt2img"), base.record("txt2img")["received_x"]
    abar = float(shared.sd_model.alphas_cumprod[t0])
    leak = expected_leaks(natural, [99])
    target = math.sqrt(abar) * leak + math.sqrt(1 - abar) * eps
    assert torch.allclose(rec["received_x"], target, atol=1e-6)


def test_karras_schedule_and_dpm_fast(host, natural):
    for kw in ({"sampler_name": "DPM++ 2M", "scheduler": "Karras"},
               {"sampler_name": "DPM fast"}):
        base = plain_noise(host, 5, **kw)
        res = run(host, args=leak_args("natural"), seed=5, **kw)
        rec, eps = res.record("txt2img"), base.record("txt2img")["received_x"]
        start = rec.get("sigma_start", rec["sigma0"])
        leak = expected_leaks(natural, [5])
        # the sampler starts at `start` and multiplies what it gets by sigmas[0]
        assert torch.allclose(rec["received_x"] * rec["sigma0"], leak + start * eps, atol=1e-4)


def test_strength_zero_is_exactly_the_webui_noise(host, natural):
    base = plain_noise(host, 3)
    res = run(host, args=leak_args("natural", strength=0.0), seed=3)
    assert torch.equal(res.record("txt2img")["received_x"], base.record("txt2img")["received_x"])


def test_schedule_without_signal_reports_no_effect(host, natural):
    import modules.shared as shared

    # a first sigma of ~4519 is what "Zero Terminal SNR" gives: sqrt(abar) ~ 2e-4
    shared.opts.sigma_max = 4518.8
    kw = {"sampler_name": "DPM++ 2M", "scheduler": "Karras"}
    base = plain_noise(host, 3, **kw)
    assert base.record("txt2img")["sigma0"] > 4000
    res = run(host, args=leak_args("natural"), seed=3, **kw)
    assert torch.equal(res.record("txt2img")["received_x"], base.record("txt2img")["received_x"])
    assert "no effect" in res.p.extra_generation_params["Signal leak"]


# --- batches, seeds, hires, idempotency ------------------------------------------------------

def test_batches_use_each_image_seed(host, natural):
    base = plain_noise(host, 100, batch_size=2, n_iter=2)
    res = run(host, args=leak_args("natural"), seed=100, batch_size=2, n_iter=2)
    for batch, seeds in ((0, [100, 101]), (1, [102, 103])):
        rec = res.record("txt2img", batch)
        assert list(rec["seeds"]) == seeds
        eps = base.record("txt2img", batch)["received_x"]
        leak = expected_leaks(natural, seeds)
        assert torch.allclose(rec["received_x"], eps + leak / rec["sigma0"], atol=1e-6)
    leaks = [res.record("txt2img", b)["received_x"] - base.record("txt2img", b)["received_x"]
             for b in (0, 1)]
    assert not torch.allclose(leaks[0][0], leaks[0][1])
    assert not torch.allclose(leaks[0], leaks[1])


def test_fixed_leak_seed_numbers_like_image_seeds(host, natural):
    base = plain_noise(host, 500, batch_size=2, n_iter=2)
    res = run(host, args=leak_args("natural", seed=77), seed=500, batch_size=2, n_iter=2)
    for batch, seeds in ((0, [77, 78]), (1, [79, 80])):
        rec = res.record("txt2img", batch)
        eps = base.record("txt2img", batch)["received_x"]
        assert torch.allclose(rec["received_x"], eps + expected_leaks(natural, seeds) /
                              rec["sigma0"], atol=1e-6)
    assert res.p.extra_generation_params["Signal leak seed"] == 77


def test_variation_seeds(host, natural):
    kw = {"seed": 10, "subseed": 20, "subseed_strength": 0.3, "batch_size": 2}
    base = plain_noise(host, 10, subseed=20, subseed_strength=0.3, batch_size=2)
    res = run(host, args=leak_args("natural"), **kw)
    rec = res.record("txt2img")
    assert list(rec["seeds"]) == [10, 10]  # A1111: every seed equal with a variation seed
    leak = expected_leaks(natural, [10, 10], subseeds=[20, 21], strength=0.3)
    eps = base.record("txt2img")["received_x"]
    assert torch.allclose(rec["received_x"], eps + leak / rec["sigma0"], atol=1e-6)
    assert not torch.allclose(leak[0], leak[1])


def test_hires_second_pass_is_left_alone(host, natural):
    kw = {"seed": 42, "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5}
    base = plain_noise(host, **kw)
    res = run(host, args=leak_args("natural"), **kw)
    assert not torch.allclose(res.record("txt2img")["received_x"],
                              base.record("txt2img")["received_x"])
    hires, hires_base = res.record("hires"), base.record("hires")
    assert torch.equal(hires["received_noise"], hires_base["received_noise"])
    assert len(res.pbes_calls) == 2


def test_second_hook_call_in_one_sampling_applies_once(host, natural):
    res = run(host, args=leak_args("natural"), seed=8)
    p = res.p
    call = res.pbes_calls[0]
    noise = call["noise"] if isinstance(call, dict) else call[1]
    before = noise.clone()
    script = host.script(TITLE)
    script.process_before_every_sampling(p, *p.script_args[script.args_from:script.args_to],
                                         x=noise, noise=noise)
    assert torch.equal(noise, before)


def test_manual_mode_means(host):
    base = plain_noise(host, 11)
    res = run(host, args=leak_args(MANUAL, means={0: 1.5, 2: -0.5}), seed=11)
    rec = res.record("txt2img")
    leak = torch.zeros(1, 4, 8, 8)
    leak[:, 0], leak[:, 2] = 1.5, -0.5
    eps = base.record("txt2img")["received_x"]
    assert torch.allclose(rec["received_x"], eps + leak / rec["sigma0"], atol=1e-6)
    params = res.p.extra_generation_params
    assert params["Signal leak"] == "manual" and params["Signal leak means"] == "0:1.5,2:-0.5"


# --- img2img -------------------------------------------------------------------------------

def _square_mask(size=64):
    mask = torch.zeros(size, size)
    mask[16:48, 16:48] = 1.0
    return mask


def test_img2img_keeps_unmasked_region_and_batches_do_not_accumulate(host, natural):
    # the host encodes init images with a posterior sample from the global RNG: seed it so
    # both runs start from the same init latent
    torch.manual_seed(0)
    base = host.img2img(host.ui_args("img2img", {TITLE: leak_args(enabled=False)}),
                        mask=_square_mask(), seed=300, n_iter=2)
    torch.manual_seed(0)
    res = run(host, "img2img", leak_args("natural"), mask=_square_mask(), seed=300, n_iter=2)
    original = base.record("img2img", 0)["init_latent"]
    basis = lowfreq_basis(natural.coords, 8, 8)
    for batch, seed in ((0, 300), (1, 301)):
        rec = res.record("img2img", batch)
        got = rec["init_latent"]
        nmask = rec["nmask"]
        keep = (nmask == 0).expand_as(got)
        assert torch.equal(got[keep], original[keep])  # kept region bit-identical
        want = swap_lowfreq(original, expected_leaks(natural, [seed]), basis, 1.0, mask=nmask)
        assert torch.allclose(got, want, atol=1e-6)  # rebuilt from the original each batch
        assert torch.equal(rec["received_noise"], base.record("img2img", batch)["received_noise"])
    assert not torch.allclose(res.record("img2img", 0)["init_latent"],
                              res.record("img2img", 1)["init_latent"])


def test_img2img_without_mask_moves_lf_to_the_leak(host, natural):
    res = run(host, "img2img", leak_args("natural"), seed=5)
    got = res.record("img2img")["init_latent"]
    basis = lowfreq_basis(natural.coords, 8, 8)
    leak = expected_leaks(natural, [5])
    assert torch.allclose(lf_coefficients(got.float(), basis), lf_coefficients(leak, basis),
                          atol=1e-4)


def test_img2img_fp16_init_latent_keeps_dtype(fresh_host_factory, tmp_path):
    h = fresh_host_factory(dtype_vae=torch.float16)
    start_with_extension(h, SCRIPT, with_app=has_fastapi())
    res = run(h, "img2img", leak_args(MANUAL, means={0: 1.0}), mask=_square_mask(), seed=1)
    got = res.record("img2img")["init_latent"]
    assert got.dtype == torch.float16


def test_img2img_manual_moves_only_fixed_channels(host):
    torch.manual_seed(0)
    base = host.img2img(host.ui_args("img2img", {TITLE: leak_args(enabled=False)}), seed=4)
    torch.manual_seed(0)
    res = run(host, "img2img", leak_args(MANUAL, means={1: 2.0}), seed=4)
    orig, got = base.record("img2img")["init_latent"], res.record("img2img")["init_latent"]
    assert torch.equal(got[:, [0, 2, 3]], orig[:, [0, 2, 3]])
    assert torch.allclose(got[:, 1].float().mean(), torch.tensor(2.0), atol=1e-4)


# --- infotext, paste, X/Y/Z, API ---------------------------------------------------------------

def test_infotext_keys_appear_and_vanish(host, natural):
    res = run(host, args=leak_args("natural", strength=0.5, lf="zero", means={0: 1.5}, seed=9))
    params = res.p.extra_generation_params
    assert params["Signal leak"] == "natural"
    assert params["Signal leak hash"] == natural.short_hash or len(params["Signal leak hash"]) == 10
    assert params["Signal leak strength"] == 0.5
    assert params["Signal leak LF"] == "zero"
    assert params["Signal leak means"] == "0:1.5"
    assert params["Signal leak seed"] == 9
    # the same dict through a disabled run (X/Y/Z cells share it): every key is removed
    p = res.p
    script = host.script(TITLE)
    script.process(p, *leak_args(enabled=False))
    assert not any(k.startswith("Signal leak") for k in p.extra_generation_params)


def test_paste_restores_every_control(host, natural):
    res = run(host, args=leak_args("natural", strength=0.5, lf="zero", means={0: 1.5, 3: -2.0},
                                   seed=9))
    infotext = res.processed.infotexts[0]
    assert "Signal leak: natural" in infotext
    updates = dict((id(c), u) for c, u in host.paste(infotext))
    script = host.script(TITLE)
    controls = host.runner("txt2img").inputs[script.args_from:script.args_to]
    got = {}
    for name, control in zip(ARG_NAMES, controls, strict=True):
        update = updates[id(control)]
        got[name] = update.get("value") if isinstance(update, dict) else update
    assert got["enabled"] is True and got["preset"] == "natural" and got["strength"] == 0.5
    assert got["lf"] == "zero" and got["seed"] == 9
    assert got["fix_mean_0"] is True and got["mean_0"] == 1.5
    assert got["fix_mean_3"] is True and got["mean_3"] == -2.0
    assert got["fix_mean_1"] is False
    # an infotext without our key switches the extension off and leaves the rest alone
    updates = dict((id(c), u) for c, u in host.paste("a cat\nSteps: 20, Seed: 1"))
    first = updates[id(controls[0])]
    assert (first.get("value") if isinstance(first, dict) else first) is False


def test_pasting_a_preset_reads_the_choices_again(host, natural):
    """The page's dropdown choices are those of when the UI was built; Gradio 4 (Forge,
    Neo) empties a dropdown set to a value outside them, so the paste sends fresh choices
    holding the pasted preset, also one added since and one missing here."""
    import modules.paths as paths

    script = host.script(TITLE)
    control = host.runner("txt2img").inputs[script.args_from + ARG_NAMES.index("preset")]
    assert "added-later" not in control.choices
    save_preset(natural, Path(paths.models_path) / "signal_leak", "added-later")
    def pasted(name: str) -> dict:
        updates = host.paste(f"a cat\nSteps: 20, Seed: 1, Signal leak: {name}")
        return dict((id(c), u) for c, u in updates)[id(control)]

    for name, listed in (("added-later", True), ("not-here", False)):
        update = pasted(name)
        # the hosts' API paste (the "infotext" field) unwraps only Gradio 3's spelling
        assert update["__type__"] == "generic_update"
        assert update["value"] == name and name in update["choices"], update
        assert ("added-later" in update["choices"]) and ("natural" in update["choices"])
        assert update["choices"][-1] == name or listed  # a missing one is added at the end
    # manual is the manual entry
    assert pasted("manual")["value"] == MANUAL


def test_xyz_strength_axis_overrides_per_cell(host, natural):
    xyz = host.xyz_grid
    axis = next(o for o in xyz.axis_options if o.label == "[Signal Leak] Strength")
    labels = [o.label for o in xyz.axis_options if o.label.startswith("[Signal Leak]")]
    assert len(labels) == len(set(labels)) == 16
    p = host.make_txt2img(seed=21)
    p.scripts = host.runner("txt2img")
    p.script_args = host.ui_args("txt2img", {TITLE: leak_args("natural", strength=1.0)})
    _, cells, _ = xyz.run_axis(p, axis, [0.0, 2.0])
    base = plain_noise(host, 21)
    eps = base.record("txt2img")["received_x"]
    recs = [c.standin_records[0] for c in cells]
    assert torch.equal(recs[0]["received_x"], eps)
    leak = expected_leaks(natural, [21])
    assert torch.allclose(recs[1]["received_x"], eps + 2.0 * leak / recs[1]["sigma0"], atol=1e-6)


def test_xyz_axes_registered_once(host):
    import modules.script_callbacks as script_callbacks

    script_callbacks.before_ui_callback()  # a second UI reload must not duplicate axes
    labels = [o.label for o in host.xyz_grid.axis_options if o.label.startswith("[Signal Leak]")]
    assert len(labels) == 16


def test_api_positional_and_dict_forms_agree(host, natural):
    pos = host.api_args("txt2img", {"signal leak bias": {"args": leak_args(
        "natural", strength=0.7, means={2: -0.5}, seed=5)}})
    dct = host.api_args("txt2img", {"signal leak bias": {"args": [{
        "preset": "natural", "strength": 0.7, "means": {"2": -0.5}, "seed": 5}]}})
    a = host.txt2img(pos, api=True, seed=31)
    b = host.txt2img(dct, api=True, seed=31)
    assert a.errors == [] and b.errors == []
    assert torch.equal(a.record("txt2img")["received_x"], b.record("txt2img")["received_x"])
    assert a.p.extra_generation_params["Signal leak"] == "natural"
    assert {k: v for k, v in a.p.extra_generation_params.items() if k.startswith("Signal")} == {
        k: v for k, v in b.p.extra_generation_params.items() if k.startswith("Signal")}


def test_api_dict_with_unknown_key_is_refused_clearly(host, natural):
    args = host.api_args("txt2img", {"signal leak bias": {"args": [{"preset": "natural",
                                                                    "strenght": 0.5}]}})
    base = plain_noise(host, 31)
    res = host.txt2img(args, api=True, seed=31)
    assert res.errors == []  # no crash
    assert torch.equal(res.record("txt2img")["received_x"], base.record("txt2img")["received_x"])
    assert "unknown key" in res.p.extra_generation_params["Signal leak"]
    assert "strenght" in res.p.extra_generation_params["Signal leak"]


def test_api_defaults_leave_the_extension_off(host):
    args = host.api_args("txt2img")
    res = host.txt2img(args, api=True, seed=1)
    assert not any(k.startswith("Signal leak") for k in res.p.extra_generation_params)


# --- model guard -----------------------------------------------------------------------------

def test_incompatible_channel_count_is_not_applied(host):
    import modules.paths as paths

    save_preset(make_preset("pixel", shape=(3, 8, 8)), Path(paths.models_path) / "signal_leak",
                "rgb")
    base = plain_noise(host, 2)
    res = run(host, args=leak_args("rgb"), seed=2)
    assert torch.equal(res.record("txt2img")["received_x"], base.record("txt2img")["received_x"])
    note = res.p.extra_generation_params["Signal leak"]
    assert note.startswith("rgb (not applied:") and "3 latent channels" in note


def test_other_family_needs_the_setting(host):
    import modules.paths as paths
    import modules.shared as shared

    save_preset(make_preset("pixel", shape=(4, 8, 8), model_family="sdxl"),
                Path(paths.models_path) / "signal_leak", "xl")
    base = plain_noise(host, 2)
    res = run(host, args=leak_args("xl"), seed=2)
    assert torch.equal(res.record("txt2img")["received_x"], base.record("txt2img")["received_x"])
    assert "sdxl" in res.p.extra_generation_params["Signal leak"]
    shared.opts.data["signal_leak_allow_other_families"] = True
    res = run(host, args=leak_args("xl"), seed=2)
    assert not torch.equal(res.record("txt2img")["received_x"],
                           base.record("txt2img")["received_x"])
    assert res.p.extra_generation_params["Signal leak"] == "xl"


def test_missing_preset_is_reported_not_crashing(host):
    res = run(host, args=leak_args("does-not-exist"), seed=2)
    assert "not applied" in res.p.extra_generation_params["Signal leak"]


def test_sd2_presets_serve_sd1_models(host):
    import modules.paths as paths

    save_preset(make_preset("pixel", shape=(4, 8, 8), model_family="sd2"),
                Path(paths.models_path) / "signal_leak", "v2")
    res = run(host, args=leak_args("v2"), seed=2)
    assert res.p.extra_generation_params["Signal leak"] == "v2"


# --- fitting through the UI handler ---------------------------------------------------------------

def test_fit_button_saves_a_preset_the_next_generation_uses(host, coco128, tmp_path):
    import modules.paths as paths

    folder = photo_folder(coco128, tmp_path / "photos", 6, broken="broken.png")
    module = host.script(TITLE).__class__.__module__
    mod = next(m for m in host.modules if m.__name__ == module) if hasattr(host, "modules") \
        else None
    fit_button = mod.fit_panel.make_fit_button(mod.PRESETS) if mod is not None else None
    assert fit_button is not None
    dropdown, html_out = host.gpu_call(fit_button, str(folder), "mine", "dct+pixel", 3, 64,
                                       "center", 0, False, False, 2, None,
                                       extra_outputs=[None])
    assert "Fitted <b>6</b> images" in html_out and "broken.png" in html_out
    path = Path(paths.models_path) / "signal_leak" / "mine.safetensors"
    assert path.exists()
    assert "mine" in dropdown["choices"]
    from slb.preset import load_preset

    preset = load_preset(path)
    assert preset.metadata["encode"] == "mean" and preset.model_family == "sd1"
    assert preset.metadata["source"] == "photos"
    res = run(host, args=leak_args("mine"), seed=1)
    assert res.p.extra_generation_params["Signal leak"] == "mine"
    # a second fit with the same name is refused without overwrite
    _, html_out = host.gpu_call(fit_button, str(folder), "mine", "pixel", 3, 64, "center", 0,
                                False, False, 2, None, extra_outputs=[None])
    assert "already exists" in html_out


def test_fit_button_bad_input_is_a_message(host, tmp_path):
    mod = next(m for m in host.modules if m.__name__ == host.script(TITLE).__class__.__module__)
    fit_button = mod.fit_panel.make_fit_button(mod.PRESETS)
    _, html_out = host.gpu_call(fit_button, str(tmp_path / "nope"), "x", "pixel", 3, 64,
                                "center", 0, False, False, 2, None, extra_outputs=[None])
    assert "folder not found" in html_out
    _, html_out = host.gpu_call(fit_button, str(tmp_path), "../x", "pixel", 3, 64,
                                "center", 0, False, False, 2, None, extra_outputs=[None])
    assert "contains" in html_out
