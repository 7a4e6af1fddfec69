"""install.py as the host runs it: a subprocess of the host's interpreter with the host's
folder on PYTHONPATH, importing the host's own ``launch`` module.

The command-line flags reach that subprocess only through COMMANDLINE_ARGS (webui-user.sh's
way of passing them; the hosts append it to sys.argv in modules/paths_internal.py), so this
is where --skip-install must be seen. The packages cannot be removed from the host's
environment, so a missing one is simulated by the finder handed to ``main``; pip itself is
recorded, never run. tests/browser/test_install_from_url.py shows the host running it after Install
from URL.
"""

from __future__ import annotations

import json
import subprocess

import pytest

DRIVER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("slb_install", sys.argv[1])
install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install)
import launch  # the host's, with its flags parsed from sys.argv and COMMANDLINE_ARGS
calls = []
launch.run_pip = lambda command, desc=None, *args, **kwargs: calls.append(command)
real = importlib.util.find_spec
missing = install.main(launch, lambda name: None if name == "scipy" else real(name))
print("RESULT " + json.dumps({"skip_install": bool(launch.args.skip_install),
                              "missing": missing, "pip": calls}))
"""


def _run(webui_setup, commandline_args: str) -> tuple[dict, str]:  # noqa: ANN001
    env = {**webui_setup.env, "COMMANDLINE_ARGS": commandline_args,
           "PYTHONPATH": str(webui_setup.webui_dir)}
    done = subprocess.run([webui_setup.python, "-c", DRIVER,
                           str(webui_setup.extension_dir / "install.py")],
                          cwd=webui_setup.webui_dir, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(result[len("RESULT "):]), done.stdout


@pytest.mark.parametrize("skip", [True, False])
def test_install_py_reads_skip_install_from_the_hosts_launch(webui_setup, skip):
    result, out = _run(webui_setup, "--skip-install" if skip else "")
    assert result["skip_install"] is skip and result["missing"] == ["scipy>=1.7"], result
    if skip:
        assert result["pip"] == [], result
        assert "[Signal Leak Bias] install.py: missing scipy>=1.7; not installed " \
            "(--skip-install)" in out, out
    else:
        assert result["pip"] == ['install "scipy>=1.7"'], result  # only what is missing


def test_install_py_installs_nothing_in_the_hosts_environment(webui_setup):
    env = {**webui_setup.env, "PYTHONPATH": str(webui_setup.webui_dir)}
    env.pop("COMMANDLINE_ARGS", None)
    done = subprocess.run([webui_setup.python, str(webui_setup.extension_dir / "install.py")],
                          cwd=webui_setup.webui_dir, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("present; nothing to install"), done.stdout
