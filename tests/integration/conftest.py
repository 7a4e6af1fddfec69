"""Real-host suite: the extension inside a real AUTOMATIC1111 WebUI or a Forge-family host
(WebUI Forge, Forge Neo, reForge, Forge Classic) (opt-in).

Every test in this folder is a ``webui`` test. It needs a WebUI checkout in SLB_WEBUI_DIR,
or a Forge, Neo, reForge or Classic one in SLB_FORGE_DIR, SLB_NEO_DIR, SLB_REFORGE_DIR or
SLB_CLASSIC_DIR (see README.md here; with several set: Neo, Classic, reForge, Forge, A1111,
the first set). Without any the tests are reported as skipped, with the reason; with one
they carry the ``webui`` marker, which the project's pytest config deselects unless
``-m webui`` is given.

The ``webui_server`` session fixture builds a tiny random-weight checkpoint and tokenizer
(on A1111 also tiny SDXL, SDXL-refiner and SD 2.x-v checkpoints: tiny_families.py)
in a temporary folder, lays out a separate ``--data-dir`` (the user's WebUI folders are not
written to) with the extension and the test probe (``probe_extension/``) linked into its
``extensions/``, starts the API server on a free 127.0.0.1 port, waits for it, yields its
base URL and always stops its process group. ``presets`` writes test presets into the
extension's user folder; ``probe`` gives folders for the probe to write tensors into.

Environment:
  SLB_WEBUI_DIR            A1111 WebUI checkout (with repositories/ filled in).
  SLB_WEBUI_PYTHON         interpreter for the WebUI (default: SLB_WEBUI_DIR/venv/bin/python
                           if it exists, else the interpreter running pytest).
  SLB_FORGE_DIR            WebUI Forge checkout; takes precedence over SLB_WEBUI_DIR.
  SLB_FORGE_PYTHON         interpreter for Forge (default as for SLB_WEBUI_PYTHON).
  SLB_REFORGE_DIR          reForge checkout (with repositories/); over SLB_FORGE_DIR.
  SLB_REFORGE_PYTHON       its interpreter.
  SLB_CLASSIC_DIR          Forge Classic checkout (with repositories/); over SLB_REFORGE_DIR.
  SLB_CLASSIC_PYTHON       its interpreter.
  SLB_NEO_DIR              Forge Neo checkout; over all the others.
  SLB_NEO_PYTHON           its interpreter.
  No directory set: every test here is skipped.
  SLB_EXTENSION_DIR        folder linked in as the extension (default: this repository).
  SLB_WEBUI_START_TIMEOUT  seconds to wait for the API (default 300).
  SLB_WEBUI_KEEP_LOG       if set, copy the server log to this path at the end.
  SLB_MODEL_CACHE          Forge family: folder that keeps the built checkpoints between runs
                           (reused while their builder is unchanged; default: none, they are
                           built into the run's temporary folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from slb_webui import (
    BROKEN_PRESET,
    FAMILY_MODELS,
    FORGE,
    HOST,
    HOST_FAMILIES,
    HOST_NAMES,
    HOSTS,
    LDM_PATCHED,
    NEO,
    RECTIFIED_CHECKPOINT,
    SD1_CHECKPOINT,
    SDXL_CHECKPOINT,
    TEST_PRESETS,
    import_slb,
    mark_opt_in_suite,
    on_model,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
EXTENSION_NAME = "sd-webui-signal-leak-bias"
PROBE_NAME = "zz-slb-probe"  # folder-name order: its hooks run after the extension's
SKIP_REASON = (
    "real-host WebUI suite not configured: set SLB_WEBUI_DIR to an AUTOMATIC1111 v1.10.1 "
    "checkout (and SLB_WEBUI_PYTHON to its interpreter), SLB_FORGE_DIR to a WebUI Forge "
    "checkout (and SLB_FORGE_PYTHON), SLB_NEO_DIR to a Forge Neo one (and SLB_NEO_PYTHON), "
    "SLB_REFORGE_DIR to a reForge one (and SLB_REFORGE_PYTHON) or SLB_CLASSIC_DIR to a Forge "
    "Classic one (and SLB_CLASSIC_PYTHON); see tests/integration/README.md"
)

# Flags for a CPU-only, offline start (see HOST-NOTES 12).
WEBUI_FLAGS = [
    "--skip-prepare-environment",
    "--skip-torch-cuda-test",
    "--skip-install",
    "--skip-version-check",
    "--no-half",
    "--use-cpu",
    "all",
    "--precision",
    "full",
    "--do-not-download-clip",
    "--disable-opt-split-attention",
    "--no-download-sd-model",
    "--nowebui",
]


# What Forge and Neo both take to start without installing, checking or downloading.
FORGE_FAMILY_SKIPS = [
    "--skip-prepare-environment",
    "--skip-install",
    "--skip-torch-cuda-test",
    "--skip-version-check",
    "--skip-python-version-check",
    "--disable-xformers",
]

# Forge's flags for the same start (CPU only, full precision, nothing installed or
# downloaded; HOST-NOTES 13).
FORGE_FLAGS = ["--always-cpu", "--no-half", "--precision", "full", *FORGE_FAMILY_SKIPS,
               "--no-download-sd-model", "--nowebui"]

# Forge Neo's: it has no --always-cpu, --no-half, --precision or --no-download-sd-model,
# stops on an unknown flag, and without --cpu looks for a GPU (HOST-NOTES 14).
NEO_FLAGS = ["--cpu", "--force-fp32", *FORGE_FAMILY_SKIPS, "--nowebui"]

# reForge keeps every one of Forge's flags (R:modules/cmd_args.py 12-120,
# R:ldm_patched/modules/args_parser.py 130, 144).
REFORGE_FLAGS = FORGE_FLAGS

# Forge Classic has no --precision (C:modules/cmd_args.py) and stops on an unknown flag; on
# the CPU its ldm_patched backend runs in float32 anyway (its log: "UNet dtype:
# torch.float32").
CLASSIC_FLAGS = [flag for flag in FORGE_FLAGS if flag not in ("--precision", "full")]
HOST_FLAGS = {"a1111": WEBUI_FLAGS, "forge": FORGE_FLAGS, "neo": NEO_FLAGS,
              "reforge": REFORGE_FLAGS, "classic": CLASSIC_FLAGS}

# Settings written to the data dir's config.json before start.
WEBUI_SETTINGS = {
    # the "Approx NN" preview (reForge's default, R:modules/shared_options.py:429) loads
    # models/VAE-approx/model.pt before every job and downloads it when missing
    # (R:modules/processing.py 1002-1003): an HTTP 500 offline
    "live_previews_enable": False,
    "show_progress_every_n_steps": -1,
    "samples_save": False,
    "grid_save": False,
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_opt_in_suite(config, items, HERE, "webui", None if HOST is not None else SKIP_REASON)


def pytest_report_header(config: pytest.Config) -> str:
    if HOST is None:
        return f"webui suite: skipped ({SKIP_REASON})"
    variable = HOSTS[HOST]
    checkout = os.environ[variable]
    line = (f"webui suite: {HOST_NAMES[HOST]}, {variable}={checkout} "
            f"python={webui_python(Path(checkout), python_variable(HOST))}")
    others = [v for h, v in HOSTS.items() if h != HOST and os.environ.get(v)]
    if others:
        line += f" ({', '.join(others)} set too: only {HOST_NAMES[HOST]} is run)"
    return line


def forge_version_host(webui_dir: Path) -> str | None:
    """Which Forge-family host a checkout says it is in modules_forge/forge_version.py, as
    the extension's detect() reads it: ``version = "neo"`` (Neo), ``"classic"`` (Forge
    Classic), ``'<release>-v<A1111 release>'`` (reForge, e.g. '1.0.0v2-v1.10.1RC'), any other
    (Forge: '2.0.1v1.10.1'); None without the file."""
    path = webui_dir / "modules_forge" / "forge_version.py"
    if not path.is_file():
        return None
    match = re.search(r"""^version\s*=\s*['"]([^'"]*)['"]""", path.read_text(), re.MULTILINE)
    version = match.group(1) if match else ""
    if version in ("neo", "classic"):
        return version
    return "reforge" if re.search(r"-v\d+\.\d+", version) else "forge"


def python_variable(host: str) -> str:
    """The variable naming ``host``'s interpreter: SLB_WEBUI_PYTHON, SLB_FORGE_PYTHON, ..."""
    return HOSTS[host].replace("_DIR", "_PYTHON")


# --------------------------------------------------------------------------- helpers


def webui_python(webui_dir: Path, variable: str = "SLB_WEBUI_PYTHON") -> str:
    explicit = os.environ.get(variable)
    if explicit:
        return explicit
    venv_python = webui_dir / "venv" / "bin" / "python"
    if venv_python.exists():
        return str(venv_python)
    return sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def http_request(url: str, body: object | None = None, timeout: float = 600.0
                 ) -> tuple[int, object]:
    """GET (body None) or POST JSON; return the HTTP status and the decoded JSON answer
    (an error's body too; text that is not JSON comes back as a string)."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    text = raw.decode("utf-8", errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def http_json(url: str, body: object | None = None, timeout: float = 600.0) -> object:
    """GET (body None) or POST JSON; return the decoded JSON answer. Raises with the
    server's error text on an HTTP error."""
    status, answer = http_request(url, body, timeout)
    if status >= 400:
        raise AssertionError(f"HTTP {status} from {url}: {str(answer)[:4000]}")
    return answer


class WebUI(str):
    """The base URL of a running WebUI API server (it is that string), with helpers."""

    log_path: Path
    data_dir: Path
    model_dir: Path
    process: subprocess.Popen

    def __new__(cls, base_url: str, log_path: Path, data_dir: Path, model_dir: Path) -> WebUI:
        server = super().__new__(cls, base_url)
        server.log_path = log_path
        server.data_dir = data_dir
        server.model_dir = model_dir
        return server

    @property
    def base_url(self) -> str:
        return str(self)

    def get(self, path: str, timeout: float = 600.0) -> object:
        return http_json(self.base_url + path, None, timeout)

    def post(self, path: str, body: object, timeout: float = 600.0) -> object:
        return http_json(self.base_url + path, body, timeout)

    def request(self, path: str, body: object | None = None, timeout: float = 600.0
                ) -> tuple[int, object]:
        """Like get/post, but returns ``(status, answer)`` instead of raising on 4xx/5xx."""
        return http_request(self.base_url + path, body, timeout)

    @property
    def presets_dir(self) -> Path:
        """The extension's default user preset folder under this data dir."""
        return self.data_dir / "models" / "signal_leak"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


def _stop(process: subprocess.Popen) -> None:
    """Stop the process group started for the server (its pgid is its pid)."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class _ApiWorkerDied(Exception):
    """The host's API thread died during start-up while its process lives on."""


# Forge-family hosts build the API in a thread (webui.py api_only_worker, webui_worker with
# the UI) while the main thread loads the model; reForge's died there once in pydantic's
# create_model ("SystemError: bad argument to internal function" from a deepcopy), and with
# its UI when a request reached the freshly launched app before create_api added its
# middleware ("Cannot add middleware after an application has started"; _wait_ready no
# longer sends one that early), leaving a process without an API.
API_WORKER_DIED = ("in api_only_worker\n", "(webui_worker):\n")


# What every host prints once its start is over. With the web UI its API routes answer
# before the API object has finished building: Forge, Neo and the forks then work out each
# script's default arguments (calling every script's ui() again), and a generation request
# that arrives meanwhile fails (Forge: IndexError in init_script_args; Neo: X/Y/Z's run()
# without its arguments). A1111, Forge, Neo, reForge and Classic print this line after
# create_api (webui.py).
STARTED_LINE = b"Startup time:"


def _wait_ready(url: str, process: subprocess.Popen, log_path: Path, timeout: float,
                started_line: bytes | None = None) -> float:
    """Until ``url`` answers 200 and, when ``started_line`` is given, the log has it. With
    ``started_line`` no request is sent before the line is there: with the web UI a request
    that reaches the freshly launched app before create_api has added the API's middleware
    makes Starlette refuse that middleware ("Cannot add middleware after an application has
    started"), which kills A1111 (exit code 1) and the forks' UI thread."""
    start = time.monotonic()
    while True:
        if any(marker in log_tail(log_path, 4000) for marker in API_WORKER_DIED):
            raise _ApiWorkerDied(f"the host's API thread died at start\n{log_tail(log_path)}")
        if process.poll() is not None:
            pytest.fail(
                f"WebUI exited with code {process.returncode} before its API answered.\n"
                f"--- log tail ({log_path}) ---\n{log_tail(log_path)}"
            )
        if started_line is None or started_line in log_path.read_bytes():
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - start
            except (urllib.error.URLError, OSError):
                pass
        if time.monotonic() - start > timeout:
            pytest.fail(
                f"WebUI API did not answer {url} within {timeout:.0f} s"
                f"{' or its log lacks ' + started_line.decode() if started_line else ''}.\n"
                f"--- log tail ({log_path}) ---\n{log_tail(log_path)}"
            )
        time.sleep(0.5)


# --------------------------------------------------------------------------- fixtures


class WebUISetup:
    """Where the WebUI is, how to run it, and the prepared temporary data dir.
    ``forge``: the host is WebUI Forge (``webui_dir`` is then the Forge checkout)."""

    def __init__(self, webui_dir: Path, python: str, env: dict, root: Path,
                 forge: bool = False) -> None:
        self.webui_dir = webui_dir
        self.python = python
        self.env = env
        self.root = root
        self.forge = forge
        self.data_dir = root / "data"
        self.model_dir = self.data_dir / "models" / "Stable-diffusion"
        self.checkpoint = self.model_dir / "tiny.safetensors"
        self.config = self.model_dir / "tiny.yaml"  # A1111 only
        # A1111 only: tiny_families.py writes the SDXL, SDXL-refiner and SD 2.x-v checkpoints
        # (each with its yaml) here too, and open-clip configs for their small OpenCLIP text
        # encoders into this folder (registered in the WebUI process by the probe)
        self.open_clip_configs = self.model_dir / "open_clip"
        self.extension_dir = REPO_ROOT

    def another(self, root: Path, with_extension: bool = True) -> WebUISetup:
        """A second data dir for the same host under ``root``, laid out afresh, with this
        one's SD 1.x checkpoint (A1111: and its yaml) linked in and, on A1111, this one's
        open-clip configs: for a second server (tests/integration/test_xyz.py,
        tests/browser/test_install_from_url.py)."""
        other = WebUISetup(self.webui_dir, self.python, dict(self.env), root, self.forge)
        other.extension_dir = self.extension_dir
        lay_out_data_dir(other, with_extension=with_extension)
        if "SLB_TEST_OPEN_CLIP_CONFIGS" in self.env:
            other.env["SLB_TEST_OPEN_CLIP_CONFIGS"] = self.env["SLB_TEST_OPEN_CLIP_CONFIGS"]
        for model in (self.checkpoint, self.config):
            if model.is_file():
                (other.model_dir / model.name).symlink_to(model.resolve())
        return other


def offline_env() -> dict:
    """This process's environment for a host that must not download or phone home."""
    env = {k: v for k, v in os.environ.items() if k != "COMMANDLINE_ARGS"}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        GRADIO_ANALYTICS_ENABLED="False",
        DO_NOT_TRACK="1",
        PYTHONDONTWRITEBYTECODE="1",  # keep __pycache__ out of the linked extension
        PYTHONUNBUFFERED="1",
    )
    return env


def lay_out_data_dir(setup: WebUISetup, checkpoint: str = SD1_CHECKPOINT,
                     with_extension: bool = True) -> None:
    """A fresh --data-dir: the models folder, the extension and the test probe linked into
    extensions/ (neither without ``with_extension``: tests/browser/test_install_from_url.py installs
    it the user's way), and config.json with the suite's settings, starting on
    ``checkpoint``."""
    setup.model_dir.mkdir(parents=True)
    (setup.data_dir / "extensions").mkdir()
    # Neo's default temp_dir is DATA/tmp, which it writes gallery images into without
    # creating it (N:modules/ui_tempdir.py:34-47, modules/shared_options.py:73)
    (setup.data_dir / "tmp").mkdir()
    if with_extension:
        link = setup.data_dir / "extensions" / EXTENSION_NAME
        link.symlink_to(setup.extension_dir, target_is_directory=True)
        # the test probe (inactive unless a request names a folder); after the extension
        probe = setup.data_dir / "extensions" / PROBE_NAME
        probe.symlink_to(HERE / "probe_extension", target_is_directory=True)
    settings = {**WEBUI_SETTINGS, "sd_model_checkpoint": checkpoint}
    if NEO:  # without it Neo asks at start whether to clear its settings (stdin: none)
        settings["VERSION_UID"] = "PY313"
    if not FORGE:
        setup.env["SLB_TEST_OPEN_CLIP_CONFIGS"] = str(setup.open_clip_configs)
    (setup.data_dir / "config.json").write_text(json.dumps(settings, indent=2))


@pytest.fixture(scope="session")
def webui_setup(tmp_path_factory: pytest.TempPathFactory) -> WebUISetup:
    """Checks the configuration, lays out a fresh --data-dir with the extension linked in
    and builds the tiny model into its models/Stable-diffusion folder."""
    if HOST is None:
        pytest.skip(SKIP_REASON)
    dir_var = HOSTS[HOST]
    webui_dir = Path(os.environ[dir_var]).resolve()
    if not (webui_dir / "launch.py").is_file():
        pytest.fail(f"{dir_var}={webui_dir} has no launch.py")
    if FORGE and not (webui_dir / "modules_forge").is_dir():
        pytest.fail(f"{dir_var}={webui_dir} has no modules_forge/: not a Forge-family host")
    says = forge_version_host(webui_dir)
    if FORGE and says != HOST:
        pytest.fail(f"{dir_var}={webui_dir}: modules_forge/forge_version.py says it is "
                    f"{HOST_NAMES.get(says, says)}, not {HOST_NAMES[HOST]}")
    if LDM_PATCHED != (webui_dir / "ldm_patched").is_dir():
        pytest.fail(f"{dir_var}={webui_dir}: {HOST_NAMES[HOST]} "
                    f"{'has no' if LDM_PATCHED else 'has an'} ldm_patched/ backend")
    extension_dir = Path(os.environ.get("SLB_EXTENSION_DIR") or REPO_ROOT).resolve()
    if not extension_dir.is_dir():
        pytest.fail(f"SLB_EXTENSION_DIR={extension_dir} is not a folder")

    python = webui_python(webui_dir, python_variable(HOST))
    setup = WebUISetup(webui_dir, python, offline_env(), tmp_path_factory.mktemp("webui"),
                       forge=FORGE)
    setup.extension_dir = extension_dir
    lay_out_data_dir(setup)
    env = setup.env

    # The models are built by the WebUI's interpreter (it has torch, safetensors and
    # open-clip-torch's BPE file), so pytest's own interpreter needs none of them. Forge
    # builds the text encoders and VAE from fixed full-size configs (and brings the
    # tokenizers), so its checkpoints have a small UNet but full-size VAE and text encoders
    # (forge_tiny_model.py: SD 1.5 0.9 GB, SDXL and its refiner 1.9 GB each in fp16, SD 2.x-v
    # 1.1 GB), kept in SLB_MODEL_CACHE when it is set.
    if FORGE:
        build_command = [setup.python, str(HERE / "forge_tiny_model.py"), "--suite",
                         str(setup.model_dir), "--families", ",".join(HOST_FAMILIES)]
    else:
        build_command = [setup.python, str(HERE / "tiny_model.py"), str(setup.model_dir)]
    build = subprocess.run(
        build_command,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if build.returncode != 0:
        pytest.fail(f"building the tiny model failed:\n{build.stdout}\n{build.stderr}")
    print(f"\n[webui] models: {build.stdout.strip()}")
    if LDM_PATCHED and "sd2" in HOST_FAMILIES:
        # reForge and Classic build the outer model from A1111's config (the yaml beside the
        # checkpoint, R:modules_forge/forge_loader.py 393-404, C:153-173) and only then swap
        # in their own UNet, VAE and text encoder: they need the whole SD 2.x-v config, the
        # one they would pick themselves for an SD 2.x-v checkpoint (their
        # modules/sd_models_config.py config_sd2v). Without a yaml they would guess by
        # running a full-size SD 2.x UNet on the checkpoint, which the small UNet cannot fill.
        own = (webui_dir / "repositories" / "stable-diffusion-stability-ai" / "configs" /
               "stable-diffusion" / "v2-inference-v.yaml")
        shutil.copyfile(own, (setup.model_dir / FAMILY_MODELS["sd2"][0]).with_suffix(".yaml"))
    if NEO:  # the same SDXL weights, which Neo runs as rectified flow for this name
        (setup.model_dir / RECTIFIED_CHECKPOINT).symlink_to(
            (setup.model_dir / SDXL_CHECKPOINT).resolve())
    if not FORGE:
        # the tiny SDXL and SD 2.x-v models, from sgm's and ldm's own classes (about 10 s)
        build = subprocess.run(
            [setup.python, str(HERE / "tiny_families.py"), str(webui_dir), str(setup.model_dir)],
            env=env, capture_output=True, text=True, timeout=600,
        )
        if build.returncode != 0:
            pytest.fail(f"building the tiny SDXL/SD2 models failed:\n{build.stdout}\n"
                        f"{build.stderr}")
    return setup


@pytest.fixture(scope="session")
def webui_server(webui_setup: WebUISetup) -> Iterator[WebUI]:
    """Starts the WebUI API on a free 127.0.0.1 port; yields its base URL (a WebUI str)."""
    with start_server(webui_setup) as server:
        yield server


@contextlib.contextmanager
def start_server(setup: WebUISetup, ui: bool = False, expect: str = "tiny",
                 extra_flags: tuple[str, ...] = (), port: int | None = None,
                 extension_access: bool = False) -> Iterator[WebUI]:
    """Starts the host on 127.0.0.1 (``port``, else a free one), API only (``--nowebui``)
    or, with ``ui``, its web UI and the API (``--api``; tests/browser); yields its base URL
    (a WebUI str) and always stops its process group. A checkpoint whose title starts with
    ``expect`` must be listed. ``extension_access``: started as a local user starts it,
    without ``--server-name`` (the hosts bind 127.0.0.1 by default), which would switch off
    the Extensions tab's installs and updates."""
    flags = HOST_FLAGS[HOST]
    if ui:
        flags = [flag for flag in flags if flag != "--nowebui"] + ["--api"]
    flags = [*flags, *extra_flags]
    if not extension_access:
        flags += ["--server-name", "127.0.0.1"]
    port = port or free_port()
    log_path = setup.root / "webui.log"
    command = [
        setup.python,
        "launch.py",
        *flags,
        "--port",
        str(port),
        "--data-dir",
        str(setup.data_dir),
    ]
    base_url = f"http://127.0.0.1:{port}"
    timeout = float(os.environ.get("SLB_WEBUI_START_TIMEOUT", "300"))
    for attempt in range(2):  # a second start only after the API thread died (above)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=setup.webui_dir,
                env=setup.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole below
            )
        try:
            started = _wait_ready(base_url + "/sdapi/v1/sd-models", process, log_path,
                                  timeout, STARTED_LINE if ui else None)
            break
        except _ApiWorkerDied as died:
            _stop(process)
            if attempt:
                pytest.fail(str(died))
            print(f"\n[webui] {str(died).splitlines()[0]}; starting it once more")
        except BaseException:
            _stop(process)
            raise
    try:
        print(f"\n[webui] {HOST_NAMES[HOST]} API up at {base_url} after {started:.1f} s "
              f"(log: {log_path})")
        server = WebUI(base_url, log_path, setup.data_dir, setup.model_dir)
        server.process = process  # a test that has the host quit waits for it
        titles = [m.get("title", "") for m in server.get("/sdapi/v1/sd-models")]
        if not any(t.startswith(expect) for t in titles):
            pytest.fail(f"{expect} checkpoint not listed: {titles}\n{log_tail(log_path)}")
        yield server
    finally:
        _stop(process)
        keep = os.environ.get("SLB_WEBUI_KEEP_LOG")
        if keep:
            shutil.copyfile(log_path, keep)


@pytest.fixture(scope="session")
def presets(webui_server: WebUI) -> dict[str, str]:
    """Writes the TEST_PRESETS (fitted on synthetic 4x8x8 / 3x8x8 latents, for 64x64 images)
    and a broken file into the extension's user preset folder; returns name -> short hash.
    The extension re-reads the folder on each generation, so no restart is needed."""
    import_slb()
    import torch

    from slb.fitting import FitAccumulator
    from slb.preset import save_preset

    folder = webui_server.presets_dir
    hashes = {}
    for index, (name, (channels, family)) in enumerate(TEST_PRESETS.items()):
        gen = torch.Generator().manual_seed(100 + index)
        # per-channel offsets and a horizontal gradient: a leak with visible LF content
        offsets = torch.linspace(-0.8, 0.8, channels).view(1, channels, 1, 1)
        ramp = torch.linspace(-0.5, 0.5, 8).view(1, 1, 1, 8)
        latents = offsets + ramp * torch.randn(64, channels, 1, 1, generator=gen)
        latents = latents + 0.4 * torch.randn(64, channels, 8, 8, generator=gen)
        acc = FitAccumulator("dct+pixel", (channels, 8, 8), 3)
        acc.update(latents)
        preset = acc.to_preset(image_size=(64, 64), model_family=family, source="synthetic")
        save_preset(preset, folder, name, overwrite=True)
        hashes[name] = preset.short_hash
    (folder / f"{BROKEN_PRESET}.safetensors").write_bytes(b"not a safetensors file")
    return hashes


@pytest.fixture
def select_model(webui_server: WebUI):  # noqa: ANN201
    """``select_model(family)`` selects that family's checkpoint (``POST /sdapi/v1/options``,
    as the UI's dropdown does) and returns the ``override_settings`` that run a request on
    it. Routes work on the selected checkpoint (loading it if another one is loaded), so a
    test that mixes generations and routes on one model selects it first: the two agree
    and nothing reloads in between. SD 1.x is selected again afterwards."""
    chosen = []

    def select(family: str) -> dict:
        checkpoint = FAMILY_MODELS[family][0]
        webui_server.post("/sdapi/v1/options", {"sd_model_checkpoint": checkpoint})
        title = webui_server.get("/sdapi/v1/options")["sd_model_checkpoint"]
        assert title.startswith(checkpoint.rsplit(".", 1)[0]), title
        chosen.append(family)
        return on_model(family)

    yield select
    if chosen and chosen[-1] != "sd1":
        webui_server.post("/sdapi/v1/options", {"sd_model_checkpoint": SD1_CHECKPOINT})


@pytest.fixture
def probe(tmp_path: Path):  # noqa: ANN201
    """``probe(name)`` -> a fresh folder for the probe extension to write into."""

    def make(name: str) -> Path:
        folder = tmp_path / "probe" / name
        folder.mkdir(parents=True)
        return folder

    return make
