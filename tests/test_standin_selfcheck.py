"""Self-checks of the A1111 v1.10.1 stand-in in tests/standin (no project code involved).

Each test pins one thing the stand-in promises to mirror; the numbers come from A1111's own
formulas (HOST-NOTES sections 1-11 and the docstrings of the stand-in modules).
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest
import torch

try:
    from standin.fixtures import (
        fresh_host,  # noqa: F401 - pytest fixture
        fresh_host_factory,  # noqa: F401 - pytest fixture
        install_headless_gradio,
        make_test_image,
        real_gradio_available,
    )
except ImportError:  # collected with tests/ as a package
    from tests.standin.fixtures import (  # type: ignore[no-redef]
        fresh_host,  # noqa: F401
        fresh_host_factory,  # noqa: F401
        install_headless_gradio,
        make_test_image,
        real_gradio_available,
    )

from modules import (  # noqa: E402 - the stand-in, put on sys.path by the import above
    call_queue,
    errors,
    infotext_utils,
    processing,
    rng,
    script_callbacks,
    scripts,
    sd_samplers,
    sd_samplers_common,
    sd_samplers_kdiffusion,
    sd_samplers_timesteps,
    sd_vae_approx,
    shared,
)

SD_SIGMA_MAX = 14.6146  # sqrt((1 - abar) / abar) at t = 999 of the SD scaled-linear schedule
SD_SIGMA_MIN = 0.0292


def unit_noise(seeds, shape=(4, 8, 8)):
    """The first draw of an ImageRNG: what A1111 hands to the sampler for these seeds."""
    return rng.ImageRNG(shape, seeds).next()


PROBE_SOURCE = '''
import gradio as gr

from modules import scripts

EVENTS = []
BREAK_IN = None  # name of the hook that raises


class Probe(scripts.Script):
    def title(self):
        return "Probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        on = gr.Checkbox(value=True, label="Probe on")
        amount = gr.Slider(minimum=0, maximum=2, value=1.0, step=0.05, label="Amount")
        self.infotext_fields = [(amount, "Probe amount")]
        self.paste_field_names = ["Probe amount"]
        return [on, amount]

    def _note(self, hook, p, values, **extra):
        EVENTS.append((hook, bool(getattr(p, "is_hr_pass", False)), tuple(values), extra))
        if hook == BREAK_IN:
            raise RuntimeError(hook + " broke on purpose")

    def setup(self, p, *values):
        self._note("setup", p, values)

    def before_process(self, p, *values):
        self._note("before_process", p, values)

    def process(self, p, *values):
        self._note("process", p, values)

    def before_process_batch(self, p, *values, **kw):
        self._note("before_process_batch", p, values, n=kw["batch_number"])

    def after_extra_networks_activate(self, p, *values, **kw):
        self._note("after_extra_networks_activate", p, values)

    def process_batch(self, p, *values, **kw):
        self._note("process_batch", p, values, seeds=list(kw["seeds"]))

    def process_before_every_sampling(self, p, *values, **kw):
        self._note("process_before_every_sampling", p, values, keys=sorted(kw),
                   same=kw["x"] is kw["noise"])

    def before_hr(self, p, *values):
        self._note("before_hr", p, values)

    def post_sample(self, p, ps, *values):
        self._note("post_sample", p, values)

    def postprocess_batch(self, p, *values, **kw):
        self._note("postprocess_batch", p, values, has_images="images" in kw)

    def postprocess_batch_list(self, p, pp, *values, **kw):
        self._note("postprocess_batch_list", p, values)

    def postprocess_image(self, p, pp, *values):
        self._note("postprocess_image", p, values)

    def postprocess(self, p, processed, *values):
        self._note("postprocess", p, values)
'''


def load_probe(host, tmp_path, break_in=None):
    install_headless_gradio()
    folder = tmp_path / "extensions" / "probe" / "scripts"
    folder.mkdir(parents=True)
    source = PROBE_SOURCE.replace("BREAK_IN = None", f"BREAK_IN = {break_in!r}")
    (folder / "probe.py").write_text(source)
    module = host.load_extension_script(folder / "probe.py")
    assert module is not None, errors.reported
    host.build_ui()
    return module


def half_mask(size=64):
    mask = torch.zeros(size, size)
    mask[:, size // 2:] = 1.0  # repaint the right half
    return mask


# ---- package and model ----------------------------------------------------------------------

def test_package_says_it_is_a_standin():
    import modules

    assert modules.__file__.replace("\\", "/").endswith("tests/standin/modules/__init__.py")
    for phrase in ("NOT the WebUI", "82a973c0", "simplifies"):
        assert phrase in modules.__doc__


def test_alphas_and_model_sigmas(fresh_host):
    ac = fresh_host.sd_model.alphas_cumprod
    assert ac.dtype == torch.float32 and ac.shape == (1000,)
    assert ac[0].item() == pytest.approx(1 - 0.00085, abs=1e-7)
    wrap = sd_samplers.create_sampler("Euler", fresh_host.sd_model).model_wrap
    assert bool((wrap.sigmas[1:] > wrap.sigmas[:-1]).all())  # ascending, like k-diffusion
    assert wrap.sigmas[-1].item() == pytest.approx(SD_SIGMA_MAX, abs=1e-3)
    assert wrap.sigmas[0].item() == pytest.approx(SD_SIGMA_MIN, abs=1e-3)


def test_vae_of_each_family(fresh_host):
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    sd1 = fresh_host.sd_model
    posterior = sd1.encode_first_stage(pixels)
    assert posterior.mode().shape == (1, 4, 8, 8) and sd1.scale_factor == 0.18215
    torch.manual_seed(0)
    assert not torch.allclose(sd1.get_first_stage_encoding(posterior), posterior.mean * 0.18215)
    xl = fresh_host.set_model("sdxl")
    assert (xl.is_sdxl, xl.is_sd1, xl.scale_factor) == (True, False, 0.13025)
    latent = xl.encode_first_stage(pixels)
    assert torch.is_tensor(latent) and xl.get_first_stage_encoding(latent) is latent
    assert xl.decode_first_stage(latent).shape == (1, 3, 64, 64)


def test_cheap_approximation_table(fresh_host):
    latent = torch.zeros(1, 4, 1, 1)
    latent[0, 3] = 1.0
    rgb = sd_vae_approx.cheap_approximation(latent)[0, :, 0, 0]
    assert rgb.tolist() == pytest.approx([-0.184, -0.271, -0.473])
    assert sd_samplers_common.samples_to_images_tensor(latent, 2).shape == (1, 3, 1, 1)


def test_zero_terminal_snr_moves_sigma_max(fresh_host):
    shared.opts.sd_noise_schedule = "Zero Terminal SNR"
    res = fresh_host.txt2img(sampler_name="Euler")
    assert res.record()["sigma0"] == pytest.approx(4518.8, rel=1e-3)
    assert "Noise Schedule: Zero Terminal SNR" in res.processed.info


# ---- txt2img sampler records ----------------------------------------------------------------

def test_euler_starts_from_noise_times_sigma0(fresh_host):
    res = fresh_host.txt2img(sampler_name="Euler", steps=20, seed=77)
    rec = res.record("txt2img")
    assert (rec["kind"], rec["sampler"], rec["scale"]) == ("kdiffusion", "Euler", rec["sigma0"])
    assert rec["sigma0"] == pytest.approx(SD_SIGMA_MAX, abs=1e-3)
    assert torch.equal(rec["sigmas"], rec["sampler_object"].model_wrap.get_sigmas(20))
    assert torch.equal(rec["received_x"], unit_noise([77]))
    assert torch.allclose(rec["x_start"], rec["received_x"] * rec["sigmas"][0])
    assert len(res.processed.images) == 1 and not res.errors


def test_karras_default_and_sigma_max_option(fresh_host):
    rec = fresh_host.txt2img(sampler_name="DPM++ 2M").record()
    assert rec["sigma0"] == pytest.approx(SD_SIGMA_MAX, abs=1e-3)
    assert rec["sigmas"][-2].item() == pytest.approx(SD_SIGMA_MIN, abs=1e-3)
    shared.opts.sigma_max = 10.0
    res = fresh_host.txt2img(sampler_name="DPM++ 2M")
    assert res.record()["sigma0"] == pytest.approx(10.0)
    for text in ("Schedule max sigma: 10.0", "Schedule type: Karras"):
        assert text in res.processed.info


def test_sgm_noise_multiplier(fresh_host):
    shared.opts.sgm_noise_multiplier = True
    res = fresh_host.txt2img(sampler_name="Euler")
    rec = res.record()
    factor = torch.sqrt(1 + rec["sigmas"][0] ** 2)
    assert rec["sgm_noise_multiplier"] is True
    assert torch.allclose(rec["x_start"], rec["received_x"] * factor)
    assert "SGM noise multiplier: True" in res.processed.info


@pytest.mark.parametrize(("sampler", "steps", "first_t"), [
    ("DDIM", 20, 951), ("DDIM", 30, 991), ("DDIM", 50, 981), ("PLMS", 20, 951),
    ("UniPC", 20, 999),
])
def test_timestep_samplers_take_x_unscaled(fresh_host, sampler, steps, first_t):
    rec = fresh_host.txt2img(sampler_name=sampler, steps=steps).record()
    assert rec["kind"] == "timesteps" and rec["t0"] == first_t
    assert torch.equal(rec["x_start"], rec["received_x"])
    made = rec["sampler_object"]
    assert isinstance(made, sd_samplers_timesteps.CompVisSampler)
    assert torch.equal(made.get_timesteps(None, steps), rec["timesteps"])


def test_dpm_fast_runs_from_the_model_range(fresh_host):
    rec = fresh_host.txt2img(sampler_name="DPM fast").record()
    assert rec["sigma_start"] == pytest.approx(rec["sampler_object"].model_wrap.sigmas[-1].item())
    assert torch.allclose(rec["x_start"], rec["received_x"] * rec["sigmas"][0])


def test_ancestral_noise_comes_from_p_rng(fresh_host):
    assert fresh_host.txt2img(sampler_name="Euler a").record()["rng_draws"] == 19
    assert fresh_host.txt2img(sampler_name="Euler").record()["rng_draws"] == 0


def test_two_batches_of_two_seeds(fresh_host):
    res = fresh_host.txt2img(seed=100, n_iter=2, batch_size=2)
    assert res.p.all_seeds == [100, 101, 102, 103]
    assert [(r["batch"], r["seeds"]) for r in res.records] == [(0, [100, 101]), (1, [102, 103])]
    for rec in res.records:
        assert rec["received_x"].shape == (2, 4, 8, 8)
        for row, seed in enumerate(rec["seeds"]):  # noise depends on the seed alone
            assert torch.equal(rec["received_x"][row], unit_noise([seed])[0])
    assert len(res.processed.images) == 5 and res.processed.index_of_first_image == 1


def test_variation_seed_repeats_the_main_seed(fresh_host):
    res = fresh_host.txt2img(seed=5, subseed=9, subseed_strength=0.3, batch_size=3)
    assert (res.p.all_seeds, res.p.all_subseeds) == ([5, 5, 5], [9, 10, 11])
    assert "Variation seed: 9" in res.infotexts[1]


def test_hires_fix_second_pass(fresh_host):
    res = fresh_host.txt2img(enable_hr=True, hr_scale=2.0, denoising_strength=0.5,
                             hr_second_pass_steps=10)
    first, hires = res.record("txt2img"), res.record("hires")
    assert [c["pass"] for c in res.pbes_calls] == ["txt2img", "hires"]
    assert res.pbes_calls[0]["x"] is res.pbes_calls[0]["noise"]
    assert torch.equal(res.pbes_calls[1]["x"], hires["received_x"])
    assert hires["received_x"].shape == (1, 4, 16, 16)
    assert torch.equal(hires["received_noise"], unit_noise(res.p.seeds, (4, 16, 16)))
    assert (hires["steps"], hires["t_enc"]) == (20, 9)  # int(10 / 0.5), then 10 - 1
    expected = hires["received_x"] + hires["received_noise"] * hires["sigma_sched"][0]
    assert torch.allclose(hires["x_start"], expected)
    assert first["sigma0"] == pytest.approx(SD_SIGMA_MAX, abs=1e-3)
    assert res.p.is_hr_pass is False and res.p.sampler is None
    assert res.processed.images[0].size == (128, 128)
    assert "Hires upscale: 2.0" in res.processed.info


# ---- img2img --------------------------------------------------------------------------------

def test_img2img_with_mask_and_noise_multiplier(fresh_host):
    res = fresh_host.img2img(mask=half_mask(), seed=10, n_iter=2, batch_size=2,
                             initial_noise_multiplier=0.5, denoising_strength=0.75)
    p = res.p
    assert p.mask.shape == p.nmask.shape == (4, 8, 8)
    assert torch.equal(p.nmask[:, :, 4:], torch.ones(4, 8, 4))
    assert torch.equal(p.mask + p.nmask, torch.ones(4, 8, 8))
    assert [r["pass"] for r in res.records] == ["img2img", "img2img"]
    for call, rec in zip(res.pbes_calls, res.records, strict=True):
        assert call["x"] is p.init_latent  # PBES gets the init latent itself ...
        assert torch.equal(call["noise"], rec["received_noise"])  # ... and the sampler's noise
        assert torch.equal(rec["received_x"], p.init_latent)
        scaled = torch.stack([unit_noise([s])[0] for s in rec["seeds"]]) * 0.5
        assert torch.allclose(rec["received_noise"], scaled)
        assert (rec["steps"], rec["t_enc"]) == (20, 15)
        expected = rec["received_x"] + rec["received_noise"] * rec["sigma_sched"][0]
        assert torch.allclose(rec["x_start"], expected)
    assert torch.equal(res.records[0]["init_latent"], res.records[1]["init_latent"])
    assert "Noise multiplier: 0.5" in res.processed.info
    assert len(res.processed.images) == 5 and not res.errors


def test_img2img_final_blend_keeps_the_unmasked_half(fresh_host):
    seen = {}

    class Catch(scripts.Script):
        def title(self):
            return "catch"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def post_sample(self, p, ps, *values):
            seen.update(samples=ps.samples.clone(), init=p.init_latent.clone(), keep=p.mask)

    scripts.scripts_data.append(scripts.ScriptClassData(Catch, "catch.py", "", None))
    fresh_host.build_ui()
    fresh_host.img2img(mask=half_mask())
    keep = seen["keep"].bool().expand_as(seen["samples"])
    assert torch.equal(seen["samples"][keep], seen["init"][keep])


def test_img2img_ddim_adds_noise_in_ddpm_units(fresh_host):
    rec = fresh_host.img2img(sampler_name="DDIM", denoising_strength=0.5).record("img2img")
    abar = fresh_host.sd_model.alphas_cumprod[rec["t0"]]
    assert rec["t0"] == int(rec["timesteps"][rec["t_enc"]])
    expected = rec["received_x"] * abar.sqrt() + rec["received_noise"] * (1 - abar).sqrt()
    assert torch.allclose(rec["x_start"], expected)


def test_fp16_vae_gives_fp16_init_latent(fresh_host_factory):
    host = fresh_host_factory(dtype_vae=torch.float16)
    assert host.img2img(init_images=[make_test_image()]).p.init_latent.dtype == torch.float16


def test_inpainting_model_conditioning(fresh_host_factory):
    host = fresh_host_factory(inpainting=True)
    rec = host.img2img(mask=half_mask()).record("img2img")
    assert rec["image_conditioning"].shape == (1, 5, 8, 8)
    assert host.sd_model.model.conditioning_key == "hybrid" and host.sd_model.latent_channels == 4


# ---- scripts: order, failures, loading, UI ---------------------------------------------------

def test_hook_order_and_positional_args(fresh_host, tmp_path):
    probe = load_probe(fresh_host, tmp_path)
    script = fresh_host.script("Probe")
    assert script.args_to - script.args_from == 2
    args = fresh_host.ui_args(overrides={"Probe": [True, 0.25]})
    fresh_host.txt2img(args, n_iter=2, enable_hr=True, denoising_strength=0.5)
    batch = ["before_process_batch", "after_extra_networks_activate", "process_batch",
             "process_before_every_sampling", "before_hr", "process_before_every_sampling",
             "post_sample", "postprocess_batch", "postprocess_batch_list", "postprocess_image"]
    order = [event[0] for event in probe.EVENTS]
    assert order == ["setup", "before_process", "process", *batch, *batch, "postprocess"]
    assert {event[2] for event in probe.EVENTS} == {(True, 0.25)}
    pbes = [e for e in probe.EVENTS if e[0] == "process_before_every_sampling"]
    assert [e[1] for e in pbes] == [False, True, False, True]
    assert pbes[0][3] == {"keys": ["c", "noise", "uc", "x"], "same": True}
    assert [e[3]["seeds"] for e in probe.EVENTS if e[0] == "process_batch"] == [[1234], [1235]]
    assert all(e[3]["has_images"] for e in probe.EVENTS if e[0] == "postprocess_batch")
    logged = [entry for entry in scripts.standin_hook_log if entry[1] == "Probe"]
    assert [entry[0] for entry in logged] == order and logged[0][2] == "txt2img"
    assert not errors.reported


def test_a_failing_hook_is_reported_and_the_job_goes_on(fresh_host, tmp_path):
    probe = load_probe(fresh_host, tmp_path, break_in="process_batch")
    res = fresh_host.txt2img(n_iter=2)
    assert len(res.errors) == len(errors.reported) == 2
    assert isinstance(errors.reported[0].exception, RuntimeError)
    assert "process_batch" in errors.reported[0].message
    assert len(res.processed.images) == 3
    assert [e[0] for e in probe.EVENTS].count("postprocess") == 1


def test_loading_registers_imported_script_classes(fresh_host, tmp_path):
    ext = tmp_path / "extensions" / "trap"
    (ext / "scripts").mkdir(parents=True)
    (ext / "localpkg").mkdir()
    (ext / "localpkg" / "__init__.py").write_text("ANSWER = 42\n")
    (ext / "scripts" / "trap.py").write_text(textwrap.dedent('''
        import sys

        import localpkg  # importable only while the script file is being imported
        from modules import scripts
        from modules.scripts import Script  # A1111 registers this imported class too

        FOLDER = scripts.basedir()
        FIRST_ON_PATH = sys.path[0]


        class Trap(Script):
            def title(self):
                return "Trap"
    '''))
    module = fresh_host.load_extension_script(ext / "scripts" / "trap.py")
    assert module.__name__ == "trap.py" and "trap.py" not in sys.modules
    assert module.FOLDER == module.FIRST_ON_PATH == str(ext)
    assert str(ext) not in sys.path and scripts.basedir() != str(ext)
    registered = {d.script_class for d in scripts.scripts_data if d.module is module}
    assert registered == {scripts.Script, module.Trap}
    sys.modules.pop("localpkg", None)


def test_ui_slices_api_info_paste_and_api_args(fresh_host, tmp_path):
    load_probe(fresh_host, tmp_path)
    runner, probe = fresh_host.runner("txt2img"), fresh_host.script("Probe")
    assert runner.inputs[0] is not None  # the Script dropdown
    assert runner.inputs[probe.args_from:probe.args_to] == probe.controls
    assert probe.name == "probe"
    info = probe.api_info.dict()
    assert (info["name"], info["is_alwayson"]) == ("probe", True)
    assert (info["args"][1]["minimum"], info["args"][1]["maximum"]) == (0, 2)
    assert runner.infotext_fields[0][1] == "Probe amount"
    assert runner.paste_field_names == ["Probe amount"]
    assert fresh_host.script("X/Y/Z plot").args_from >= probe.args_to  # alwayson first
    pasted = {id(c): u for c, u in fresh_host.paste("a cat\nSteps: 20, Sampler: Euler, "
                                                    "Probe amount: 0.5")}
    assert pasted[id(probe.controls[1])] == {"__type__": "update", "value": 0.5}
    args = fresh_host.api_args(alwayson_scripts={"PROBE": {"args": [False]}})
    assert args[probe.args_from:probe.args_to] == [False, 1.0]
    res = fresh_host.txt2img(args, api=True)
    assert res.p.is_api is True and res.p.script_args[probe.args_from] is False


@pytest.mark.skipif(not real_gradio_available(), reason="needs gradio (A1111 pins 3.41.2)")
def test_input_accordion_with_real_gradio(fresh_host, tmp_path):
    import gradio as gr

    folder = tmp_path / "extensions" / "acc" / "scripts"
    folder.mkdir(parents=True)
    (folder / "acc.py").write_text(textwrap.dedent('''
        import gradio as gr

        from modules import scripts
        from modules.ui_components import InputAccordion


        class Acc(scripts.Script):
            def title(self):
                return "Acc"

            def show(self, is_img2img):
                return scripts.AlwaysVisible

            def ui(self, is_img2img):
                with InputAccordion(False, label="Acc") as enabled:
                    with enabled.extra():
                        gr.HTML("x")
                    level = gr.Slider(0, 2, value=1, step=0.05, label="s", tooltip="tip")
                return [enabled, level]
    '''))
    fresh_host.load_extension_script(folder / "acc.py")
    assert isinstance(fresh_host.build_ui("real"), gr.Blocks)
    acc = fresh_host.script("Acc")
    assert isinstance(acc.controls[0], gr.Checkbox) and acc.controls[0].value is False
    assert acc.controls[1].webui_tooltip == "tip"
    assert not errors.reported


@pytest.mark.skipif(real_gradio_available(), reason="the headless path runs without gradio")
def test_input_accordion_headless(fresh_host, tmp_path):
    install_headless_gradio()
    folder = tmp_path / "extensions" / "acc" / "scripts"
    folder.mkdir(parents=True)
    (folder / "acc.py").write_text(textwrap.dedent('''
        import gradio as gr

        from modules import scripts
        from modules.ui_components import FormRow, InputAccordion, ToolButton


        class Acc(scripts.Script):
            def title(self):
                return "Acc"

            def show(self, is_img2img):
                return scripts.AlwaysVisible

            def ui(self, is_img2img):
                with InputAccordion(False, label="Acc") as enabled:
                    with FormRow():
                        level = gr.Slider(0, 2, value=1, step=0.05, label="s")
                        ToolButton(value="R")
                return [enabled, level]
    '''))
    fresh_host.load_extension_script(folder / "acc.py")
    assert fresh_host.build_ui("headless") is None
    toggle = fresh_host.script("Acc", "img2img").controls[0]
    assert (toggle.value, toggle.visible) == (False, False)
    assert (toggle.accordion.label, toggle.accordion.open) == ("Acc", False)
    res = fresh_host.img2img(fresh_host.ui_args("img2img", {"Acc": [True, 0.5]}))
    assert not res.errors and not errors.reported


def test_headless_gradio_basics():
    import headless_gradio as hg

    with hg.Blocks() as demo, hg.Accordion("a", open=False) as acc:
        level = hg.Slider(0, 2, value=1.5, step=0.1, label="x")
        pick = hg.Dropdown(choices=["a", "b"], value="a")
        level.change(fn=lambda v: v, inputs=[level], outputs=[pick])
        empty = hg.Slider(3, 9)
        state = hg.State(lambda: {"k": 1})
    assert demo.children == [acc] and acc.children == [level, pick, empty, state]
    assert (level.value, level.minimum, level.events[0].event) == (1.5, 0, "change")
    assert empty.value == 3 and state.value == {"k": 1}
    assert hg.update(value=1) == {"__type__": "update", "value": 1}


# ---- infotext, options, callbacks, call queue, X/Y/Z ----------------------------------------

def test_infotext_round_trip_and_paste_conversions(fresh_host):
    assert infotext_utils.quote("a, b: c") == '"a, b: c"' and infotext_utils.quote("ab") == "ab"
    res = fresh_host.txt2img(prompt="a cat")
    p = res.p
    p.extra_generation_params.update({"Custom": "x,y:z", "Dropped": None,
                                      "Computed": lambda p, index, **kw: f"#{index}"})
    text = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds)
    assert "Dropped" not in text and "Computed: #0" in text
    parsed = infotext_utils.parse_generation_parameters(text)
    assert (parsed["Custom"], parsed["Prompt"], parsed["Seed"]) == ("x,y:z", "a cat", "1234")
    assert (parsed["Size-1"], parsed["Size-2"]) == ("64", "64")

    def box(value):
        return type("Box", (), {"value": value})()

    fields = [(box(True), "Flag"), (box(True), "Other"), (box(3), "Steps"), (box(0.5), "Odd"),
              (box(0.0), "Missing"), (box("s"), lambda d: "Flag" in d)]
    updates = infotext_utils.paste_values(
        fields, {"Flag": "False", "Other": "yes", "Steps": "20", "Odd": "abc"})
    assert [u.get("value", "-") for u in updates] == [False, True, 20.0, "-", "-", "True"]


def test_options_follow_a1111(fresh_host):
    opts = shared.opts
    assert (opts.sgm_noise_multiplier, opts.randn_source, opts.sigma_min) == (False, "GPU", 0)
    assert (opts.initial_noise_multiplier, opts.img2img_fix_steps) == (1.0, False)
    assert opts.data.get("mine", "fallback") == "fallback"
    opts.data["mine"] = "stored"
    opts.add_option("mine", shared.OptionInfo("default", "label", section=("x", "X")))
    assert opts.mine == "stored"  # a stored value survives registration
    opts.add_option("other", shared.OptionInfo(3, "label").info("hint").needs_reload_ui())
    del opts.data["other"]
    assert opts.other == 3  # falls back to the registered default
    assert shared.cmd_opts.api is False and shared.state.interrupted is False


def test_start_up_order(fresh_host):
    order = []
    script_callbacks.on_ui_settings(lambda: order.append("settings"))
    script_callbacks.on_before_ui(lambda: order.append("before_ui 1"))
    script_callbacks.on_before_ui(lambda: order.append("before_ui 2"))
    script_callbacks.on_app_started(lambda demo, app: order.append(("app", demo)))
    app = fresh_host.start(mode="api")
    assert order[:3] == ["settings", "before_ui 2", "before_ui 1"]  # UI first, then reversed
    assert order[3:] == ([("app", None)] if app is not None else [])
    order.clear()
    fresh_host.start(mode="ui", with_app=False)
    assert order == ["before_ui 2", "before_ui 1", "settings"]


def test_extension_route_is_reachable(fresh_host):
    pytest.importorskip("fastapi")
    if importlib.util.find_spec("httpx") is None:
        pytest.skip("fastapi's TestClient needs httpx")
    from fastapi.testclient import TestClient

    script_callbacks.on_app_started(
        lambda demo, app: app.add_api_route("/probe/v1/ping", lambda: {"ok": 1}, methods=["GET"]))
    assert TestClient(fresh_host.start(mode="api")).get("/probe/v1/ping").json() == {"ok": 1}


def test_wrap_gradio_gpu_call_shapes(fresh_host):
    seen = {}

    def handler(task_id, value):
        seen["job"] = shared.state.job
        return ["result", f"<p>{value}</p>"]

    out = call_queue.wrap_gradio_gpu_call(handler, extra_outputs=[None])("task(abc)", 5)
    assert seen["job"] == "task(abc)" and out[0] == "result" and "Time taken" in out[1]

    def broken():
        raise ValueError("bad")

    out = call_queue.wrap_gradio_gpu_call(broken, extra_outputs=[None])()
    assert out[0] is None and "ValueError: bad" in out[1] and len(errors.reported) == 1
    assert shared.state.interrupted is False and shared.state.job == ""
    assert not call_queue.queue_lock.locked()


def test_xyz_cells_share_the_infotext_dict(fresh_host):
    xyz = fresh_host.xyz_grid
    assert xyz.__name__ == "xyz_grid.py"
    assert any(d.script_class.__module__ == "xyz_grid.py" for d in scripts.scripts_data)
    axis = xyz.AxisOption("[Probe] amount", float, lambda p, x, xs: setattr(p, "amount", x),
                          format_value=xyz.format_value_add_label)
    p = fresh_host.make_txt2img()
    p.scripts = fresh_host.runner()
    p.script_args = fresh_host.ui_args()  # builds the UI, before the option below exists
    xyz.axis_options.append(axis)
    results, cells, labels = xyz.run_axis(p, axis, [0.5, 1.5])
    assert labels == ["[Probe] amount: 0.5", "[Probe] amount: 1.5"]
    assert [c.amount for c in cells] == [0.5, 1.5] and not hasattr(p, "amount")
    assert all(c.extra_generation_params is p.extra_generation_params for c in cells)
    assert [len(r.images) for r in results] == [1, 1]
    assert [len(c.standin_records) for c in cells] == [1, 1]  # each cell has its own records
    xyz_script = fresh_host.script("X/Y/Z plot")
    assert "[Probe] amount" not in [o.label for o in xyz_script.current_axis_options]


def test_sampler_classes_and_img2img_steps(fresh_host):
    made = sd_samplers.create_sampler("DPM++ 2M", fresh_host.sd_model)
    assert isinstance(made, sd_samplers_kdiffusion.KDiffusionSampler)
    assert made.config.options["scheduler"] == "karras"
    p = fresh_host.make_img2img(denoising_strength=0.3, steps=20)
    assert sd_samplers_common.setup_img2img_steps(p) == (20, 6)
    assert sd_samplers_common.setup_img2img_steps(p, 10) == (int(10 / 0.3), 9)
