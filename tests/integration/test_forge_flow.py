"""Forge-family hosts: the host adapter's decision on the host's real predictor and model
classes (flow-matching models: no leak), in Forge, Forge Neo, reForge and Forge Classic.

The suite's models are SD 1.x, SDXL and SD 2.x (epsilon and v predictors), so a running
server cannot show every family the host runs; Flux, Chroma, Qwen-Image, Wan and the other
flow families need full-size text encoders of many GB. This test asks the adapter the host
itself picks (``signal_leak_webui.host.detect()``) about the host's own objects instead:

- Forge: ``Prediction`` (``'epsilon'``, ``'v_prediction'``, as Forge builds it for SD 1/2/XL),
  ``PredictionDiscreteFlow`` (SD3-style) and ``PredictionFlux`` (Flux, Chroma), from
  ``backend.modules.k_prediction`` with their real constructors, each placed where Forge
  keeps it (``sd_model.forge_objects.unet.model.predictor``) on a stand-in model;
- Neo: the same predictor classes (their constructors differ: Neo builds ``Prediction`` from
  the scheduler's numbers and the flow ones from the model config), and every diffusion
  engine class Neo's loader can build that chooses its predictor with the engine's own
  ``_get_predictor`` (Flux, Chroma, Qwen-Image, Z-Image, Wan, Lumina 2, ...): an instance
  made without loading weights, with Neo's own ``fix_for_webui_backward_compatibility``
  flags and the predictor ``_get_predictor`` returns for both of Neo's flow model types.
  ``model_facts`` must say ``flow`` with the not-applied reason for each. (A real Neo
  generation with a flow predictor is in ``test_families.py``: the rectified-flow SDXL.)
- reForge and Forge Classic (the ``ldm_patched`` backend, no predictor): the schedule object
  their loader builds with ``ldm_patched.modules.model_base.model_sampling`` for each model
  type it has (``EPS``, ``V_PREDICTION``; reForge also ``FLOW`` for SD3 and ``FLUX``), placed
  where they keep it (``sd_model.forge_objects.unet.model.model_sampling``).

How: a subprocess of the host's interpreter, run in its checkout with the checkout, its
package folders and the extension root on ``sys.path``. ``host.py`` imports the host's
``modules``, whose import order is circular unless the host's own start-up sequence runs
first, so the script does what ``webui.py`` does before anything else:
``initialize_forge()`` then ``initialize.imports()`` (with the CPU flag and a throw-away
``--data-dir`` in ``sys.argv``). That loads no model and starts no server.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from slb_webui import HOST, HOST_ADAPTERS, LDM_PATCHED, NEO, REFORGE

# Run by the host's interpreter: argv = checkout, extension root, a scratch data dir, the
# suite's host name ("forge", "neo", "reforge", "classic").
CHECK = r"""
import inspect, json, os, sys, types

forge, extension, data, host = sys.argv[1:5]
neo = host == "neo"
ldm_patched = host in ("reforge", "classic")
sys.argv = [sys.argv[0], "--cpu" if neo else "--always-cpu", "--skip-version-check",
            "--data-dir", data]
sys.path[:0] = [forge, os.path.join(forge, "packages_3rdparty"),
                os.path.join(forge, "modules_forge", "packages"), extension]

def config(**settings):
    return types.SimpleNamespace(sampling_settings=dict(settings))

if not ldm_patched:
    from backend.modules import k_prediction

if ldm_patched:
    predictors = {}  # after the host's start-up: ldm_patched reads its parsed flags
elif neo:  # N:backend/modules/k_prediction.py 48-49, 97-98, 131-132, 220-223
    schedule = dict(sigma_data=1.0, beta_schedule="linear", linear_start=0.00085,
                    linear_end=0.012, timesteps=1000)
    predictors = {
        "epsilon": k_prediction.Prediction(prediction_type="epsilon", **schedule),
        "v_prediction": k_prediction.Prediction(prediction_type="v_prediction", **schedule),
        "discrete_flow": k_prediction.PredictionDiscreteFlow(config(shift=3.0)),
        "flux": k_prediction.PredictionFlux(config(shift=1.15)),
    }
else:
    predictors = {
        "epsilon": k_prediction.Prediction(prediction_type="epsilon"),
        "v_prediction": k_prediction.Prediction(prediction_type="v_prediction"),
        "discrete_flow": k_prediction.PredictionDiscreteFlow(shift=3.0),
        "flux": k_prediction.PredictionFlux(),
    }

from modules_forge.initialization import initialize_forge
initialize_forge()
from modules import initialize
initialize.imports()
from signal_leak_webui.host import detect

if ldm_patched:  # R:ldm_patched/modules/model_base.py 59-104, C:34-48
    from ldm_patched.modules import model_base

    types_ = {"epsilon": "EPS", "v_prediction": "V_PREDICTION", "discrete_flow": "FLOW",
              "flux": "FLUX"}
    predictors = {name: model_base.model_sampling(config(shift=3.0),
                                                  model_base.ModelType[kind])
                  for name, kind in types_.items() if kind in model_base.ModelType.__members__}

host = detect()
result = {"adapter": type(host).__name__, "predictors": {}, "engines": {}}

def on_model(sd_model, predictor):
    where = "model_sampling" if ldm_patched else "predictor"
    unet = types.SimpleNamespace(model=types.SimpleNamespace(**{where: predictor}))
    sd_model.forge_objects = types.SimpleNamespace(unet=unet)
    return sd_model

for name, predictor in predictors.items():
    facts = host.model_facts(on_model(types.SimpleNamespace(), predictor))
    if ldm_patched:  # the class the loader made: the sampling base and the prediction mixin
        kind = "+".join(c.__name__ for c in type(predictor).__bases__)
    else:
        kind = predictor.prediction_type
    result["predictors"][name] = {
        "class": type(predictor).__qualname__, "prediction_type": kind,
        "sigma_max": float(predictor.sigma_max), "decision": facts.prediction,
        "reason": facts.reason}

if neo:
    import backend.loader as loader
    from backend.diffusion_engine.base import ForgeDiffusionEngine

    engines = sorted({c for c in vars(loader).values() if isinstance(c, type)
                      and issubclass(c, ForgeDiffusionEngine) and c is not ForgeDiffusionEngine
                      and "_get_predictor" in inspect.getsource(c.__init__)},
                     key=lambda c: c.__name__)
    for cls in engines:
        for model_type in ("FLOW", "FLUX"):
            engine = cls.__new__(cls)  # no weights: the class, its flags, its predictor
            engine.fix_for_webui_backward_compatibility()
            engine.model_config = types.SimpleNamespace(
                model_type=types.SimpleNamespace(name=model_type),
                sampling_settings={"shift": 3.0})
            predictor = engine._get_predictor()
            facts = host.model_facts(on_model(engine, predictor))
            result["engines"][f"{cls.__name__}/{model_type}"] = {
                "predictor": type(predictor).__qualname__, "decision": facts.prediction,
                "family": facts.family, "reason": facts.reason}
print("RESULT " + json.dumps(result))
"""

EXPECTED = {"epsilon": "eps", "v_prediction": "v", "discrete_flow": "flow", "flux": "flow"}
if LDM_PATCHED and not REFORGE:  # Classic's ldm_patched has only EPS and V_PREDICTION models
    EXPECTED = {"epsilon": "eps", "v_prediction": "v"}
FLOW_REASON = "flow-matching models start from pure noise"
# the classes each host builds: Forge's and Neo's predictors; ldm_patched's model_sampling
# class, made of the sampling base and the prediction mixin (its __bases__)
CLASSES = {"epsilon": "Prediction", "v_prediction": "Prediction",
           "discrete_flow": "PredictionDiscreteFlow", "flux": "PredictionFlux"}
LDM_PATCHED_BASES = {"epsilon": "ModelSamplingDiscrete+EPS",
                     "v_prediction": "ModelSamplingDiscrete+V_PREDICTION",
                     "discrete_flow": "ModelSamplingDiscreteFlow+CONST",
                     "flux": "ModelSamplingFlux+CONST"}


def test_predictors_and_model_classes_give_the_right_decision(webui_setup, tmp_path):
    if not webui_setup.forge:
        pytest.skip("Forge-family hosts only: A1111 has no backend.modules.k_prediction")
    data = tmp_path / "data"
    data.mkdir()
    run = subprocess.run(
        [webui_setup.python, "-c", CHECK, str(webui_setup.webui_dir),
         str(webui_setup.extension_dir), str(data), HOST],
        cwd=webui_setup.webui_dir,
        env=webui_setup.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, (run.stdout[-2000:], run.stderr[-4000:])
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["adapter"] == HOST_ADAPTERS[HOST]
    for name, entry in result["predictors"].items():
        print(f"[predictor] {name}: {entry['class']} prediction_type="
              f"{entry['prediction_type']!r} sigma_max={entry['sigma_max']:.4f} -> "
              f"{entry['decision']}")
    predictors = result["predictors"]
    assert {name: entry["decision"] for name, entry in predictors.items()} == EXPECTED
    assert {name: entry["reason"] for name, entry in predictors.items()} == {
        name: FLOW_REASON if kind == "flow" else "" for name, kind in EXPECTED.items()}
    if LDM_PATCHED:
        bases = {name: entry["prediction_type"] for name, entry in predictors.items()}
        assert bases == {name: LDM_PATCHED_BASES[name] for name in EXPECTED}
    else:
        classes = {name: entry["class"] for name, entry in predictors.items()}
        assert classes == CLASSES
    engines = result["engines"]
    for name, entry in engines.items():
        print(f"[engine] {name}: {entry['predictor']} -> {entry['decision']} "
              f"({entry['family']}): {entry['reason']}")
    if NEO:
        names = {name.split("/")[0] for name in engines}
        assert {"Flux", "Chroma", "QwenImage", "ZImage", "Wan", "Lumina2"} <= names, names
        assert all(e["decision"] == "flow" and e["reason"] == FLOW_REASON
                   for e in engines.values()), engines
    else:
        assert engines == {}
