"""Model-family handling that needs no real host (issue: every model family users run):
presets of unknown family, the family a VAE's configuration tells, half-precision VAEs that
give NaN latents, and inner passes of other extensions (ADetailer)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slb.cli import family_from_vae_config, main
from slb.fitting import fit
from slb.generation import plan_generation
from slb.settings import LeakSettings
from tests.conftest import make_preset, photo_folder

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "signal_leak_bias.py"
TITLE = "Signal Leak Bias"


# --- presets of unknown family -----------------------------------------------------------------

def _plan(preset_family: str, model_family: str, allow: bool = False):
    preset = make_preset("pixel", shape=(4, 8, 8), model_family=preset_family)
    return plan_generation(LeakSettings(enabled=True, preset="p"), lambda name: preset,
                           model_channels=4, model_family=model_family,
                           allow_other_families=allow)


def test_unknown_family_is_not_silently_compatible():
    plan = _plan("unknown", "sd1")
    assert not plan.applies and "family unknown" in plan.reason
    assert "Allow presets from other model families" in plan.reason
    assert _plan("unknown", "sd1", allow=True).applies
    assert _plan("sd2", "sd1").applies and not _plan("sdxl", "sd1").applies


def test_summary_says_family_unknown():
    assert make_preset("pixel", shape=(4, 8, 8)).summary().endswith("family unknown")


# --- fit --vae / --encoder: the family is recorded or asked for ---------------------------------

@pytest.mark.parametrize(("scale", "channels", "family"), [
    (0.18215, 4, "sd1"), (0.13025, 4, "sdxl"), (1.5305, 16, "unknown"),
    (0.3611, 16, "unknown"), (0.18215, 16, "unknown")])
def test_family_from_vae_config(scale, channels, family):
    assert family_from_vae_config(scale, channels) == family


def test_encoder_without_model_family_is_refused_before_fitting(coco128, tmp_path, capsys):
    folder = photo_folder(coco128, tmp_path / "imgs", 3)
    assert main(["fit", str(folder), "x", "--encoder", "tests.encoders:make_encoder",
                 "--size", "64", "--out-dir", str(tmp_path)]) == 2
    assert "--model-family" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
    assert main(["fit", str(folder), "x", "--encoder", "tests.encoders:make_encoder",
                 "--size", "64", "--out-dir", str(tmp_path), "--model-family", "unknown"]) == 0


# --- half-precision VAEs: NaN in fp16, a float32 retry --------------------------------------------

class Fp16Overflow(torch.nn.Module):
    """Finite latents in float32, NaN in half precision (as SDXL's VAE does on GPUs)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.dtype)
        out = torch.nn.functional.avg_pool2d(x.float(), 8)[:, :3]
        out = torch.cat([out, out[:, :1] * 0.5], dim=1)
        if x.dtype == torch.float16:
            out = out * float("nan")
        return out


def test_fp16_nan_batches_are_retried_in_float32(coco128, tmp_path):
    folder = photo_folder(coco128, tmp_path / "imgs", 4)
    encoder = Fp16Overflow()
    result = fit(folder, encoder, "pixel", size=64, batch_size=2, dtype=torch.float16)
    assert result.images == 4 and not result.skipped
    assert encoder.calls.count(torch.float16) == 2 and encoder.calls.count(torch.float32) == 2
    assert any("encoded again in float32 (4 image(s) rescued)" in w for w in result.warnings)
    # the same statistics as a float32 fit, up to the fp16 rounding of the input pixels
    reference = fit(folder, Fp16Overflow(), "pixel", size=64, batch_size=2)
    assert torch.allclose(result.preset.tensors["mean"], reference.preset.tensors["mean"],
                          atol=1e-3)


def test_float32_nan_is_still_skipped_without_retry(coco128, tmp_path):
    folder = photo_folder(coco128, tmp_path / "imgs", 3)

    def half_broken(x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.avg_pool2d(x, 8)[:, :3]
        out = torch.cat([out, out[:, :1]], dim=1)
        out[0] = float("nan")
        return out

    result = fit(folder, half_broken, "pixel", size=64, batch_size=3)
    assert result.images == 2 and len(result.skipped) == 1
    assert not any("float32" in w for w in result.warnings)


def test_host_encoder_runs_a_half_vae_in_float32_for_the_retry():
    from slb.host import vae_encoder

    class Model:
        scale_factor = 0.18215

        def __init__(self) -> None:
            self.first_stage_model = torch.nn.Conv2d(3, 4, 8, stride=8).half()
            self.seen: list[torch.dtype] = []

        def encode_first_stage(self, x: torch.Tensor) -> torch.Tensor:
            weight = next(self.first_stage_model.parameters())
            self.seen.append(weight.dtype)
            return self.first_stage_model(x.to(weight.dtype))

    model = Model()
    encode, _ = vae_encoder(model, "cpu", torch.float16)
    assert encode(torch.zeros(1, 3, 16, 16, dtype=torch.float32)).dtype == torch.float32
    assert model.seen == [torch.float32]
    assert next(model.first_stage_model.parameters()).dtype == torch.float16  # restored


# --- ADetailer's inner passes ------------------------------------------------------------------

@pytest.fixture
def host(fresh_host):
    from standin.fixtures import start_with_extension

    start_with_extension(fresh_host, SCRIPT)
    return fresh_host


def _inner_img2img(host, mark: bool):
    from standin.fixtures import make_test_image

    args = host.ui_args("img2img", {TITLE: [True, "manual (no preset)", 1.0, "sampled",
                                            True, 2.0]})
    torch.manual_seed(0)  # the host's init latent is a posterior sample from the global RNG
    p = host.make_img2img(init_images=[make_test_image()], seed=4)
    if mark:
        p._ad_inner = True  # what ADetailer sets on its inner face/hand passes
    return host._run(p, "img2img", args, False)


def test_inner_passes_are_skipped_by_default_and_the_setting_applies_them(host):
    import modules.shared as shared

    outer = _inner_img2img(host, mark=False)
    assert outer.p.extra_generation_params["Signal leak"] == "manual"
    from standin.fixtures import make_test_image

    torch.manual_seed(0)
    plain = host.img2img(host.ui_args("img2img", {TITLE: [False]}),
                         init_images=[make_test_image()], seed=4).record("img2img")["init_latent"]
    inner = _inner_img2img(host, mark=True)
    assert "Signal leak" not in inner.p.extra_generation_params
    assert torch.equal(inner.record("img2img")["init_latent"], plain)
    assert not torch.equal(outer.record("img2img")["init_latent"], plain)
    shared.opts.data["signal_leak_inner_passes"] = True
    applied = _inner_img2img(host, mark=True)
    assert applied.p.extra_generation_params["Signal leak"] == "manual"


# --- Forge loads its checkpoint lazily ----------------------------------------------------------

def test_forge_host_loads_the_model_before_fitting_and_does_not_mark_presets_before(
        host, monkeypatch):
    """Until Forge's first generation ``shared.sd_model`` is a placeholder without a VAE
    (Forge's modules/sd_models.py FakeInitialModel): a fit must load the model first (the
    real Forge answered HTTP 500 here), and the dropdown must not mark every preset."""
    from types import SimpleNamespace

    import modules.sd_models as sd_models
    import modules.shared as shared

    mod = next(m for m in host.modules if hasattr(m, "PRESETS"))
    from signal_leak_webui.host import ForgeHost

    forge = ForgeHost()
    loaded = SimpleNamespace(forge_objects=SimpleNamespace(), is_sd1=True)
    monkeypatch.setattr(shared, "sd_model", SimpleNamespace(cond_stage_model=None))
    monkeypatch.setattr(sd_models, "forge_model_reload", lambda: (loaded, True), raising=False)
    assert not forge.model_loaded(shared.sd_model)
    assert forge.ensure_model() is loaded
    monkeypatch.setattr(mod.PRESETS, "host", forge)
    import modules.paths as paths

    from slb.preset import save_preset

    save_preset(make_preset("pixel", shape=(4, 8, 8), model_family="sdxl"),
                Path(paths.models_path) / "signal_leak", "xl")
    assert mod.PRESETS.problem("xl") == ""  # nothing to check against yet
    assert "xl" in mod.PRESETS.dropdown_choices()


# --- the selected checkpoint, not a stale one ---------------------------------------------------

def test_a1111_host_reloads_the_selected_checkpoint_before_route_work(host, monkeypatch):
    """A1111 keeps a request's ``sd_model_checkpoint`` override loaded after restoring the
    option (A:modules/processing.py 828-859): work outside a generation first loads the
    selection (``reload_model_weights``, a no-op when they agree), never the stale model."""
    from types import SimpleNamespace

    import modules.sd_models as sd_models
    import modules.shared as shared

    from signal_leak_webui.host import A1111Host

    selected = SimpleNamespace(is_sdxl=True)
    monkeypatch.setattr(shared, "sd_model", SimpleNamespace(is_sd1=True))
    monkeypatch.setattr(sd_models, "reload_model_weights", lambda *a, **k: selected)
    assert A1111Host().ensure_model() is selected


def test_sample_route_and_preview_load_the_model_inside_the_gpu_queue(fresh_host, monkeypatch):
    """Loading the selected checkpoint may take a while and swaps the host's model: the
    ``/sample`` route and Preview ask for it holding ``call_queue.queue_lock`` (never beside
    a generation), as fits already do."""
    pytest.importorskip("fastapi")
    import modules.call_queue as call_queue
    from fastapi.testclient import TestClient
    from standin.fixtures import start_with_extension

    app = start_with_extension(fresh_host, SCRIPT, mode="api", with_app=True)
    mod = next(m for m in fresh_host.modules if hasattr(m, "PRESETS"))
    real, held = mod.PRESETS.host.ensure_model, []

    def checking() -> object:
        held.append(call_queue.queue_lock.locked())
        return real()

    monkeypatch.setattr(mod.PRESETS.host, "ensure_model", checking)
    answer = TestClient(app).post("/signal-leak/v1/sample", json={"shape": [4, 8, 8],
                                                                   "means": {"0": 1.0}})
    assert answer.status_code == 200, answer.text
    assert mod.HOOKS.host is mod.PRESETS.host
    preview = mod.ui.make_preview(mod.HOOKS)
    rest = [*[False, 0.0] * 8, False, "#808080", None]
    image, note = preview(7, 64, 64, "manual (no preset)", 1.0, "sampled", True, 2.0,
                          *[False, 0.0] * 3, -1, *rest)
    assert image is not None, note
    assert held == [True, True]
    assert not call_queue.queue_lock.locked()


@pytest.mark.parametrize("img2img", [False, True])
def test_video_latents_are_left_alone_with_the_reason(host, img2img, capsys):
    """Latents with a time axis (Neo's Wan: batch, channels, frames, height, width) are not
    what the presets describe: the sampler's tensors are untouched, the infotext and the
    console say why."""
    from types import SimpleNamespace

    from slb.generation import LeakPlan
    from slb.settings import LeakSettings

    mod = next(m for m in host.modules if hasattr(m, "HOOKS"))
    latents = torch.randn(1, 4, 3, 8, 8)
    before = latents.clone()
    p = SimpleNamespace(extra_generation_params={}, seeds=[1], subseeds=[1], iteration=0,
                        batch_size=1, sampler=None, steps=4, init_latent=latents, nmask=None,
                        _slb_plan=LeakPlan(LeakSettings(enabled=True, means={0: 1.0}), None))
    mod.HOOKS.before_sampling(p, img2img, {"x": latents, "noise": latents})
    assert torch.equal(latents, before) and p.init_latent is latents
    text = p.extra_generation_params["Signal leak"]
    assert "not applied: the model's latents have shape (1, 4, 3, 8, 8)" in text, text
    assert "not (batch, channels, height, width)" in capsys.readouterr().err


def test_forge_forks_without_forge_model_reload_load_the_selection_as_a1111(host, monkeypatch):
    """reForge and Forge Classic identify as Forge (``modules_forge``) but kept A1111's
    loader: no ``forge_model_reload``, so the selection is loaded with
    ``reload_model_weights`` (before this, every fit, Preview and /sample failed there)."""
    from types import SimpleNamespace

    import modules.sd_models as sd_models

    from signal_leak_webui.host import ForgeHost

    selected = SimpleNamespace(forge_objects=SimpleNamespace(), is_sdxl=True)
    monkeypatch.delattr(sd_models, "forge_model_reload", raising=False)
    monkeypatch.setattr(sd_models, "reload_model_weights", lambda *a, **k: selected)
    assert ForgeHost().ensure_model() is selected


# --- reForge and Forge Classic: the ldm_patched schedule object --------------------------------

class EPS:  # the names of ldm_patched's prediction mixins (R:ldm_patched/modules/model_sampling.py)
    pass


class V_PREDICTION(EPS):  # noqa: N801 - the host's class name is what is read
    pass


class CONST:
    pass


class ModelSamplingDiscrete(torch.nn.Module):
    pass


def _ldm_patched_model(mixin: type, **flags: object) -> object:
    """A stand-in model as reForge and Classic build it: the schedule object is a class made
    of a sampling base and the prediction mixin (C:ldm_patched/modules/model_base.py 34-48),
    at forge_objects.unet.model.model_sampling, and no predictor."""
    from types import SimpleNamespace

    class ModelSampling(ModelSamplingDiscrete, mixin):
        pass

    unet = SimpleNamespace(model=SimpleNamespace(model_sampling=ModelSampling()))
    return SimpleNamespace(forge_objects=SimpleNamespace(unet=unet), **flags)


@pytest.mark.parametrize("adapter", ["ReForgeHost", "ClassicHost"])
@pytest.mark.parametrize(("mixin", "flags", "prediction", "native"), [
    (EPS, {"is_sd1": True}, "eps", 512),
    (V_PREDICTION, {"is_sd2": True, "parameterization": "v"}, "v", 768),
    (EPS, {"is_sd2": True}, "eps", 512),
    (EPS, {"is_sdxl": True}, "eps", 1024),
    (CONST, {"is_sd3": True}, "flow", 512),
])
def test_ldm_patched_hosts_read_the_prediction_from_model_sampling(host, adapter, mixin, flags,
                                                                   prediction, native):
    """reForge and Classic have no ``predictor``: Forge's reading took every model for
    ``eps``, so an SD 2.x-v model there got SD 1.x's native size (512, not 768) for fits."""
    import signal_leak_webui.host as hosts

    facts = getattr(hosts, adapter)().model_facts(_ldm_patched_model(mixin, **flags))
    assert facts.prediction == prediction
    assert facts.native_resolution == native
    assert facts.reason == ("flow-matching models start from pure noise"
                            if prediction == "flow" else "")


def test_ldm_patched_host_without_model_sampling_uses_the_models_parameterization(host):
    from types import SimpleNamespace

    from signal_leak_webui.host import ClassicHost

    model = SimpleNamespace(forge_objects=SimpleNamespace(), is_sd2=True, parameterization="v")
    assert ClassicHost().prediction(model) == "v"


@pytest.mark.parametrize("adapter", ["ReForgeHost", "ClassicHost"])
def test_ldm_patched_hosts_load_the_selection_with_reload_model_weights(host, monkeypatch,
                                                                        adapter):
    """Even if a forge_model_reload were importable, these forks load with A1111's loader."""
    from types import SimpleNamespace

    import modules.sd_models as sd_models

    import signal_leak_webui.host as hosts

    selected = SimpleNamespace(forge_objects=SimpleNamespace(), is_sdxl=True)
    monkeypatch.setattr(sd_models, "forge_model_reload", lambda: pytest.fail("Forge's loader"),
                        raising=False)
    monkeypatch.setattr(sd_models, "reload_model_weights", lambda *a, **k: selected)
    assert getattr(hosts, adapter)().ensure_model() is selected


class BASE:  # ldm_patched's supported_models names (R:ldm_patched/modules/supported_models.py)
    pass


class SD15(BASE):
    pass


class SD20(BASE):
    pass


class SDXL(BASE):
    pass


class SSD1B(SDXL):
    pass


class SDXLRefiner(BASE):
    pass


@pytest.mark.parametrize("adapter", ["ReForgeHost", "ClassicHost"])
@pytest.mark.parametrize(("config", "mixin", "flags", "family", "native"), [
    # reForge flags an SD 2.x model is_sd1 (its is_sd2 test looks for cond_stage_model.model
    # after wrapping the text encoder): the detected UNet config says SD20
    (SD20, V_PREDICTION, {"is_sd1": True, "parameterization": "v"}, "sd2", 768),
    (SD20, EPS, {"is_sd1": True}, "sd2", 512),
    (SD15, EPS, {"is_sd1": True}, "sd1", 512),
    (SSD1B, EPS, {"is_sdxl": True}, "sdxl", 1024),
    (SDXLRefiner, EPS, {"is_sdxl": True}, "sdxl", 1024),  # no match: the flags
])
def test_ldm_patched_hosts_take_the_family_from_the_detected_unet_config(
        host, adapter, config, mixin, flags, family, native):
    import signal_leak_webui.host as hosts

    model = _ldm_patched_model(mixin, **flags)
    model.forge_objects.unet.model.model_config = config()
    facts = getattr(hosts, adapter)().model_facts(model)
    assert (facts.family, facts.native_resolution) == (family, native)
    assert getattr(hosts, adapter)().model_metadata(model)["model_family"] == family
