"""The first-run path in a real host: Extensions > Install from URL, Apply and restart,
Check for updates, and uninstalling and installing again, the way a user does them.

The host starts with no copy of the extension. This repository's tree under test (tracked
and untracked files, as in the checkout) is committed to a scratch repository whose bare
clone is served over ``file://``; the host clones it from that URL. The host is started as
a local user starts it (no ``--server-name``, which would switch installs off), with the
suite's flags, ``--skip-install`` among them. Without a restarting wrapper (webui.sh) the
hosts' button reads "Apply and quit" and the process exits; the test then starts it again
on the same port with the same command, which is what the wrapper does.

The three tests run in file order and each needs the one before it (the installed copy,
the user's fitted preset). Run with ``pytest -m browser tests/browser/test_install_from_url.py``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from slb_webui import txt2img_request
from ui_driver import UIPage

NAME = "sd-webui-signal-leak-bias"  # the folder the hosts name after the URL's last part
TAG = "[Signal Leak Bias] install.py:"
USER_PRESET = "my-fit"
SHIPPED_PRESET = "update-check"  # the update's visible change: a preset shipped in stats/


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"git {' '.join(args)} in {cwd}: {done.stderr}")
    return done.stdout.strip()


class Installation:
    """The host with its own data dir, the served repository, and the page."""

    def __init__(self, setup, host_suite, flags: tuple[str, ...], work: Path,  # noqa: ANN001
                 bare: Path, page) -> None:  # noqa: ANN001
        self.setup, self.host_suite, self.flags = setup, host_suite, flags
        self.work, self.bare, self.url = work, bare, bare.as_uri()
        self.page = page
        self.port = host_suite.free_port()
        self.installed = setup.data_dir / "extensions" / NAME
        self.user_presets = setup.data_dir / "models" / "signal_leak"
        self.console: list[dict] = []  # kept apart from test_ui's console check

    @contextmanager
    def host(self) -> Iterator[object]:
        """The host on this installation's port (the same after every restart, as
        webui.sh keeps it); stopped at the end unless it quit by itself. Each start's log
        is kept as ``webui-<n>.log`` beside the data dir (the next start overwrites
        ``webui.log``)."""
        self.starts = getattr(self, "starts", 0) + 1
        log = self.setup.root / "webui.log"
        try:
            with self.host_suite.start_server(self.setup, ui=True, extra_flags=self.flags,
                                              port=self.port, extension_access=True) as server:
                yield server
        finally:
            if log.is_file():
                shutil.copyfile(log, self.setup.root / f"webui-{self.starts}.log")

    def ui(self, server, with_extension: bool = True) -> UIPage:  # noqa: ANN001
        return UIPage(self.page, server.base_url, self.console).load(with_extension)

    def install_and_restart(self) -> tuple[str, str]:
        """Install from URL, then Apply; returns the host's result text and its log. The
        host must quit by itself (exit code 0)."""
        with self.host() as server:
            ui = self.ui(server, with_extension=False)
            assert ui.accordion("txt2img").count() == 0, "the extension is there already"
            result = ui.install_from_url(self.url)
            label = self.apply_and_quit(ui, server)
            log = server.log_path.read_text(errors="replace")
        print(f"[install] {result!r}; clicked {label!r}")
        return result, log

    @staticmethod
    def apply_and_quit(ui: UIPage, server) -> str:  # noqa: ANN001
        label = ui.apply_and_restart()
        try:
            code = server.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the host did not quit after {label!r}")
        # the page now polls for the host and reloads itself when it answers again, which
        # would cut across the next test's own navigation
        ui.page.goto("about:blank")
        assert code == 0, f"the host quit with {code} after {label!r}"
        return label


@pytest.fixture(scope="module")
def installation(webui_setup, browser, browser_suite, tmp_path_factory  # noqa: ANN001
                 ) -> Iterator[Installation]:
    host_suite = browser_suite.host_suite
    root = tmp_path_factory.mktemp("install")
    source = webui_setup.extension_dir
    if not (source / ".git").exists():
        pytest.fail(f"{source} is not a git checkout: the tree to serve is read from git")
    work = root / "work"
    listed = git(source, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        if (source / name).is_file():  # a tracked file deleted in the checkout is left out
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, work / name)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "the tree under test")
    bare = root / "served" / f"{NAME}.git"
    bare.parent.mkdir()
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    git(work, "remote", "add", "origin", str(bare))

    setup = webui_setup.another(root / "host", with_extension=False)
    flags = browser_suite.prepare_ui(setup)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield Installation(setup, host_suite, flags, work, bare, context.new_page())
    finally:
        context.close()


def _generate_manual(ui: UIPage) -> str:
    """A txt2img generation with the accordion on and channel 0's mean set; its info."""
    ui.open_accordion("txt2img")
    ui.checkbox("txt2img", "fix_mean_0").check()
    ui.set_number(ui.el("txt2img", "mean_0"), 1.5)
    return ui.generate("txt2img")[1]


def _generate_with(ui: UIPage, preset: str) -> str:
    ui.pick_preset("txt2img", preset)
    return ui.generate("txt2img")[1]


def _our_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(TAG)]


def test_install_from_url_apply_and_restart(installation):
    """Install from URL: the host clones the served repository and runs install.py, which
    finds everything present and installs nothing; after Apply and the restart the
    accordion is in both tabs and a generation applies the leak."""
    result, log = installation.install_and_restart()
    assert "Installed into" in result and str(installation.installed) in result, result
    assert (installation.installed / "scripts").is_dir()
    assert git(installation.installed, "rev-parse", "HEAD") == git(installation.bare,
                                                                   "rev-parse", "HEAD")
    ours = _our_lines(log)
    assert len(ours) == 1 and ours[0].endswith("present; nothing to install"), ours
    assert "for Signal Leak Bias" not in log, log  # the hosts' run_pip: "Installing ... for"

    with installation.host() as server:
        ui = installation.ui(server)  # waits for the accordion in txt2img and img2img
        assert ui.accordion("txt2img").is_visible() and ui.el("img2img", "enabled").count() == 1
        info = _generate_manual(ui)
        started = server.log_path.read_text(errors="replace")
    assert "Signal leak: manual," in info and 'Signal leak means: "0:1.5"' in info, info
    # --skip-install (the suite's flags): the host runs no installer at start
    assert _our_lines(started) == [], _our_lines(started)


def test_check_for_updates_apply_and_restart(installation):
    """A user fits a preset; a new commit (shipping a preset) is pushed to the served
    repository; Check for updates offers it; Apply and the restart load it, and the user's
    preset is still listed and still applies."""
    if not installation.installed.is_dir():
        pytest.fail("needs test_install_from_url_apply_and_restart's installed copy")
    with installation.host() as server:
        images = installation.setup.root / "fit-images"
        images.mkdir(exist_ok=True)
        answer = server.post("/sdapi/v1/txt2img", txt2img_request(batch_size=4, seed=10))
        for index, data in enumerate(answer["images"]):
            (images / f"image{index}.png").write_bytes(base64.b64decode(data))
        fitted = server.post("/signal-leak/v1/fit", {"folder": str(images),
                                                     "name": USER_PRESET, "resolution": 64})
        assert fitted["usable"] is True and fitted["path"] == str(
            installation.user_presets / f"{USER_PRESET}.safetensors"), fitted

        shipped = installation.work / "stats" / f"{SHIPPED_PRESET}.safetensors"
        shutil.copyfile(fitted["path"], shipped)
        git(installation.work, "add", str(shipped))
        git(installation.work, "commit", "-q", "-m", "ship a preset")
        git(installation.work, "push", "-q", "origin", "main")
        before = git(installation.installed, "rev-parse", "HEAD")

        ui = installation.ui(server)
        row = ui.check_for_updates(NAME)
        assert "new commits" in row or "behind" in row, row
        installation.apply_and_quit(ui, server)

    assert git(installation.installed, "rev-parse", "HEAD") == git(
        installation.work, "rev-parse", "HEAD") != before
    with installation.host() as server:
        ui = installation.ui(server)
        ui.open_accordion("txt2img")
        choices = ui.dropdown_choices(ui.el("txt2img", "preset"))
        assert SHIPPED_PRESET in choices and USER_PRESET in choices, choices
        info = _generate_with(ui, USER_PRESET)
    assert f"Signal leak: {USER_PRESET}," in info and f"Signal leak hash: {fitted['hash']}" \
        in info, info


def test_uninstall_and_reinstall_keeps_the_users_presets(installation):
    """Uninstalling (the hosts have no button: the extension's folder is deleted) leaves
    the user's presets where they are; installed again, the extension lists them and
    applies them."""
    preset = installation.user_presets / f"{USER_PRESET}.safetensors"
    if not preset.is_file():
        pytest.fail("needs test_check_for_updates_apply_and_restart's fitted preset")
    digest = hashlib.sha256(preset.read_bytes()).hexdigest()
    shutil.rmtree(installation.installed)

    result, _ = installation.install_and_restart()
    assert "Installed into" in result, result
    assert hashlib.sha256(preset.read_bytes()).hexdigest() == digest
    with installation.host() as server:
        ui = installation.ui(server)
        info = _generate_with(ui, USER_PRESET)
    assert f"Signal leak: {USER_PRESET}," in info, info
