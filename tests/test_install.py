import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def _install_module():
    spec = importlib.util.spec_from_file_location("slb_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeLaunch:
    def __init__(self, skip=False):
        self.args = SimpleNamespace(skip_install=skip)
        self.calls = []

    def run_pip(self, command, desc=None):
        self.calls.append(command)


def test_installs_nothing_when_everything_is_there(capsys):
    install = _install_module()
    launch = FakeLaunch()
    assert install.main(launch) == []
    assert launch.calls == []
    said = capsys.readouterr().out
    assert said.startswith("[Signal Leak Bias] install.py: numpy, scipy>=1.7") and \
        said.rstrip().endswith("present; nothing to install") and said.count("\n") == 1


def test_installs_only_what_is_missing():
    install = _install_module()
    launch = FakeLaunch()

    def find(name):
        return None if name == "scipy" else importlib.util.find_spec(name)

    assert install.main(launch, find) == ["scipy>=1.7"]
    assert launch.calls == ['install "scipy>=1.7"']
    assert not any("torch" in c for c in launch.calls)


def test_respects_skip_install(capsys):
    install = _install_module()
    launch = FakeLaunch(skip=True)
    assert install.main(launch, lambda name: None) == list(install.REQUIREMENTS.values())
    assert launch.calls == []
    assert "--skip-install" in capsys.readouterr().out


def test_runs_as_the_webui_runs_it(tmp_path):
    # the WebUI runs install.py in a subprocess with its own interpreter
    import subprocess

    out = subprocess.run([sys.executable, str(ROOT / "install.py")], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("[Signal Leak Bias] install.py:") and \
        "nothing to install" in out.stdout
