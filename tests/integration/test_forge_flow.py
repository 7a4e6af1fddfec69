"""Forge only: the host adapter's flow-model decision with Forge's real predictor classes.

The suite's model is SD 1.5 (an epsilon predictor), so a running server cannot show what
the extension does with v-prediction or flow-matching models. This test asks
``signal_leak_webui.host.ForgeHost().prediction`` about Forge's own predictor objects
instead, built with their real constructors from ``backend.modules.k_prediction``:
``Prediction`` (``'epsilon'`` and ``'v_prediction'``, as Forge builds it for SD 1/2/XL),
``PredictionDiscreteFlow`` (SD3-style) and ``PredictionFlux`` (Flux, Chroma), each placed
where Forge keeps it (``sd_model.forge_objects.unet.model.predictor``) on a stand-in model.

How: a subprocess of Forge's interpreter, run in the Forge checkout with the checkout,
its ``packages_3rdparty`` and the extension root on ``sys.path``. ``host.py`` imports
Forge's ``modules`` (``shared``, the sampler modules), whose import order is circular
unless Forge's own start-up sequence runs first, so the script does what Forge's
``webui.py`` does before anything else: ``initialize_forge()`` then
``initialize.imports()`` (with ``--always-cpu`` and a throw-away ``--data-dir`` in
``sys.argv``, read by ``backend.args`` and ``modules.shared_cmd_options`` on import). That
loads no model and starts no server (about 12 s), so no extra API route is needed.
"""

from __future__ import annotations

import json
import subprocess

import pytest

# Run by Forge's interpreter: argv = Forge checkout, extension root, a scratch data dir.
CHECK = r"""
import json, os, sys, types

forge, extension, data = sys.argv[1:4]
sys.argv = [sys.argv[0], "--always-cpu", "--skip-version-check", "--data-dir", data]
sys.path[:0] = [forge, os.path.join(forge, "packages_3rdparty"), extension]

from backend.modules import k_prediction

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
from signal_leak_webui.host import ForgeHost

host = ForgeHost()
result = {}
for name, predictor in predictors.items():
    unet = types.SimpleNamespace(model=types.SimpleNamespace(predictor=predictor))
    sd_model = types.SimpleNamespace(forge_objects=types.SimpleNamespace(unet=unet))
    result[name] = {
        "class": type(predictor).__module__ + "." + type(predictor).__qualname__,
        "prediction_type": predictor.prediction_type,
        "sigma_max": float(predictor.sigma_max),
        "decision": host.prediction(sd_model),
    }
print("RESULT " + json.dumps(result))
"""

EXPECTED = {"epsilon": "eps", "v_prediction": "v", "discrete_flow": "flow", "flux": "flow"}


def test_forge_predictors_give_the_right_prediction_kind(webui_setup, tmp_path):
    if not webui_setup.forge:
        pytest.skip("Forge only: A1111 has no backend.modules.k_prediction predictors")
    data = tmp_path / "data"
    data.mkdir()
    run = subprocess.run(
        [webui_setup.python, "-c", CHECK, str(webui_setup.webui_dir),
         str(webui_setup.extension_dir), str(data)],
        cwd=webui_setup.webui_dir,
        env=webui_setup.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, (run.stdout[-2000:], run.stderr[-4000:])
    result = json.loads(lines[-1][len("RESULT "):])
    for name, entry in result.items():
        print(f"[forge predictor] {name}: {entry['class']} prediction_type="
              f"{entry['prediction_type']!r} sigma_max={entry['sigma_max']:.4f} -> "
              f"{entry['decision']}")
    assert {name: entry["decision"] for name, entry in result.items()} == EXPECTED
    classes = {name: entry["class"].rsplit(".", 1)[-1] for name, entry in result.items()}
    assert classes == {"epsilon": "Prediction", "v_prediction": "Prediction",
                       "discrete_flow": "PredictionDiscreteFlow", "flux": "PredictionFlux"}
