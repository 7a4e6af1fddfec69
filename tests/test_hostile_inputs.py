"""Hostile and careless input: every case gets a clear message, and nothing is lost or written.

Grouped by where the input arrives: preset files (the scan the UI, API and X/Y/Z share),
CLI arguments, partial fits given to ``merge``, API payloads (the ``alwayson_scripts`` dict
and positional forms, and the ``fit``/``sample`` route bodies), image folders, and
operations interrupted or failing half-way. Each CLI case checks exit status 2, a single
``error:`` line on stderr with no traceback, and that the output folder is unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from slb import api
from slb.cli import main
from slb.fitting import FitAccumulator
from slb.library import PresetLibrary
from slb.partials import partial_bytes, save_partial
from slb.preset import (
    MAX_PRESET_BYTES,
    PresetError,
    load_preset,
    preset_from_bytes,
    preset_to_bytes,
    save_preset,
)
from slb.sampling import leak_seed
from slb.settings import SettingsError, settings_from_args, settings_from_dict
from tests.conftest import make_preset, photo_folder, synthetic_latents

ROOT = Path(__file__).resolve().parents[1]
ENCODER = "tests.encoders:make_encoder"
ENC = ["--encoder", ENCODER, "--model-family", "sd1"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove nothing was written or lost)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def cli_error(args: list[str], capsys) -> str:
    """Run the CLI; it must fail with status 2 and end with one ``error:`` line: no traceback,
    no usage block (progress lines may come before it)."""
    with _maybe_exit() as outcome:
        outcome.code = main(args)
    err = capsys.readouterr().err
    assert outcome.code == 2, err
    assert "Traceback" not in err and "usage:" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    last = lines[-1]
    assert last.startswith("error:") or ": error:" in last, err
    return last


class _maybe_exit:
    """argparse exits with SystemExit(2); commands return 2: treat both alike."""

    code: int | None = None

    def __enter__(self) -> _maybe_exit:
        return self

    def __exit__(self, kind, value, tb) -> bool:
        if kind is SystemExit:
            self.code = value.code
            return True
        return False


@pytest.fixture
def preset_file(tmp_path):
    return save_preset(make_preset("dct+pixel", 3, shape=(4, 8, 8)), tmp_path, "good")


# --- preset files ---

def _st_file(meta: dict, tensors: dict[str, torch.Tensor]) -> bytes:
    return safetensors.torch.save(tensors, metadata=meta)


def _good_parts():
    p = make_preset("dct+pixel", 3, shape=(4, 8, 8))
    return dict(p.metadata), {k: v.clone() for k, v in p.tensors.items()}


def _tampered(change) -> bytes:  # noqa: ANN001
    meta, tensors = _good_parts()
    change(meta, tensors)
    return _st_file(meta, tensors)


def _non_psd(meta, tensors):
    cov = tensors["lf_cov"]
    cov[0, 0], cov[0, 1], cov[1, 0], cov[1, 1] = 1.0, 2.0, 2.0, 1.0  # eigenvalue -1


def _header_file(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


PRESET_FILES = {
    "empty": (b"", "too short"),
    "pickle": (b"\x80\x04\x95" + b"cos\nsystem\n" * 3, "not a valid safetensors"),
    "text": (b"hello, this is not a preset at all", "not a valid safetensors"),
    "huge header length": (struct.pack("<Q", 2**62) + b"{}", "bad header length"),
    "header not json": (struct.pack("<Q", 5) + b"{{{{{", "unreadable header"),
    "header is a list": (_header_file([]), "not an object"),  # type: ignore[arg-type]
    "deeply nested header": (struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000,
                             "unreadable header"),
    "metadata not strings": (_header_file({"__metadata__": {"kind": 5}}), "string map"),
    "no metadata": (_header_file({}), "kind"),
    "declared shape differs": (_tampered(lambda m, t: m.update(latent_shape="4,9,8")),
                               "shape"),
    "absurd latent shape": (_tampered(lambda m, t: m.update(latent_shape="4,100000,100000")),
                            "too large"),
    "absurd n_components": (_tampered(lambda m, t: m.update(n_components="99999")),
                            "out of range"),
    "extra tensor": (_tampered(lambda m, t: t.update(evil=torch.zeros(3))), "unexpected"),
    "missing tensor": (_tampered(lambda m, t: t.pop("hf_var")), "missing tensor"),
    "float16 tensor": (_tampered(lambda m, t: t.update(hf_mean=t["hf_mean"].half())),
                       "dtype"),
    "NaN mean": (_tampered(lambda m, t: t["hf_mean"].view(-1).__setitem__(0, float("nan"))),
                 "NaN"),
    "negative variance": (_tampered(lambda m, t: t["hf_var"].view(-1).__setitem__(3, -1.0)),
                          "negative variances"),
    "asymmetric covariance": (_tampered(lambda m, t: t["lf_cov"].__setitem__((0, 1), 9.0)),
                              "not symmetric"),
    "covariance not PSD": (_tampered(_non_psd), "not positive semi-definite"),
    "repeated LF pair": (_tampered(lambda m, t: t["lf_coords"].__setitem__(1, t["lf_coords"][2])),
                         "repeats"),
    "path as source": (_tampered(lambda m, t: m.update(source="/home/me/photos")), "base name"),
    "future format": (_tampered(lambda m, t: m.update(slb_format="99")), "newer"),
    "unknown family": (_tampered(lambda m, t: m.update(model_family="sd9")), "model_family"),
}


@pytest.mark.parametrize("case", sorted(PRESET_FILES))
def test_broken_preset_file_listed_with_reason(tmp_path, preset_file, case):
    data, reason = PRESET_FILES[case]
    (tmp_path / "bad.safetensors").write_bytes(data)
    before = snapshot(tmp_path)
    entries = {e.name: e for e in PresetLibrary([tmp_path]).entries()}
    assert entries["good"].usable  # a broken file never breaks the list
    assert not entries["bad"].usable and reason in entries["bad"].reason, entries["bad"].reason
    json.dumps([e.info() for e in entries.values()])
    with pytest.raises(PresetError, match="bad.safetensors"):
        load_preset(tmp_path / "bad.safetensors")
    assert snapshot(tmp_path) == before


def test_truncated_preset_is_refused_before_reading_tensors(tmp_path, preset_file):
    data = preset_file.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    with pytest.raises(PresetError, match="data bytes"):
        load_preset(tmp_path / "cut.safetensors")


def _scan_in_thread(folder: Path, seconds: float = 20.0) -> dict:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(
        {e.name: e for e in PresetLibrary([folder]).entries()}), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the preset scan hung"
    return out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_fifo_named_like_a_preset_does_not_hang_the_scan(tmp_path, preset_file):
    os.mkfifo(tmp_path / "x.safetensors")
    entries = _scan_in_thread(tmp_path)
    assert entries["good"].usable
    assert "FIFO" in entries["x"].reason


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_link_to_dev_zero_is_refused_without_reading(tmp_path, preset_file):
    (tmp_path / "zero.safetensors").symlink_to("/dev/zero")
    entries = _scan_in_thread(tmp_path)
    assert "character device" in entries["zero"].reason


def test_folder_and_dangling_link_named_like_presets(tmp_path, preset_file):
    (tmp_path / "dir.safetensors").mkdir()
    (tmp_path / "dangling.safetensors").symlink_to(tmp_path / "nowhere")
    entries = _scan_in_thread(tmp_path)
    assert "a folder" in entries["dir"].reason
    assert "cannot read" in entries["dangling"].reason


def test_oversized_checkpoint_like_file_is_refused_from_its_size(tmp_path, preset_file):
    big = tmp_path / "model.safetensors"
    with open(big, "wb") as fh:  # sparse: costs no disk, but a read would cost its size
        fh.truncate(MAX_PRESET_BYTES + 1)
    entries = _scan_in_thread(tmp_path, seconds=5.0)
    assert "MiB" in entries["model"].reason


def test_checkpoint_header_is_refused_before_its_data(tmp_path):
    # a real-looking checkpoint header (UNet tensors) over 200 MB of declared data: the
    # header check refuses it after reading only the header
    header = {"model.diffusion_model.w": {"dtype": "F32", "shape": [50_000_000],
                                          "data_offsets": [0, 200_000_000]}}
    path = tmp_path / "ckpt.safetensors"
    with open(path, "wb") as fh:
        fh.write(_header_file(header))
        fh.truncate(8 + len(json.dumps(header)) + 200_000_000)
    with pytest.raises(PresetError, match="kind"):
        load_preset(path)


def test_non_utf8_preset_name_is_listed_and_serialisable(tmp_path, preset_file):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.safetensors"
    with open(raw, "wb") as fh:
        fh.write(b"junk")
    entries = PresetLibrary([tmp_path]).entries()
    json.dumps([e.info() for e in entries])
    assert sum(not e.usable for e in entries) == 1


# --- settings: the API's dict and positional forms ---

BAD_DICTS = {
    "strength 10**400": ({"strength": 10**400}, "strength must be a number"),
    "strength NaN": ({"strength": float("nan")}, "finite"),
    "strength inf": ({"strength": float("inf")}, "finite"),
    "strength 5": ({"strength": 5}, "strength must lie"),
    "strength string": ({"strength": "lots"}, "strength must be a number"),
    "mean 10**400": ({"means": {"0": 10**400}}, "must be a number"),
    "mean out of range": ({"means": {"0": 50}}, "must lie in"),
    "means key superscript": ({"means": {"²": 1.0}}, "channel number"),
    "means key arabic digit": ({"means": {"٣": 1.0}}, "channel number"),
    "means key channel 7": ({"means": {"7": 1.0}}, "no mean control"),
    "means a list": ({"means": [1, 2]}, "means must be an object"),
    "seed 10**400": ({"seed": 10**400}, "seed must be -1 or"),
    "seed 2**64": ({"seed": 2**64}, "seed must be -1 or"),
    "seed -5": ({"seed": -5}, "seed must be -1 or"),
    "seed 1.5": ({"seed": 1.5}, "integer"),
    "seed NaN": ({"seed": float("nan")}, "finite"),
    "lf bogus": ({"lf": "middle"}, "lf must be one of"),
    "preset a number": ({"preset": 5}, "preset must be a name"),
    "enabled maybe": ({"enabled": "maybe"}, "enabled must be true or false"),
    "unknown key": ({"strenght": 1}, "unknown key"),
}


@pytest.mark.parametrize("case", sorted(BAD_DICTS))
def test_bad_api_dict_is_a_settings_error(case):
    body, message = BAD_DICTS[case]
    with pytest.raises(SettingsError, match=message):
        settings_from_dict(body)


BAD_POSITIONAL = {
    "strength 10**400": ([True, "manual", 10**400], "strength must be a number"),
    "seed NaN": ([True, "manual", 1.0, "sampled", *[False, 0.0] * 4, float("nan")], "finite"),
    "seed too large": ([True, "manual", 1.0, "sampled", *[False, 0.0] * 4, 2**64], "seed must"),
    "mean 10**400": ([True, "manual", 1.0, "sampled", True, 10**400], "must be a number"),
    "too many": ([True] * 33, "takes 32 arguments"),
    "fix flag garbage": ([True, "manual", 1.0, "sampled", "perhaps", 1.0], "fix_mean_0"),
}


@pytest.mark.parametrize("case", sorted(BAD_POSITIONAL))
def test_bad_positional_args_are_a_settings_error(case):
    args, message = BAD_POSITIONAL[case]
    with pytest.raises(SettingsError, match=message):
        settings_from_args(args)


def test_seed_two_to_the_64_is_not_seed_zero():
    with pytest.raises(ValueError, match="outside"):
        leak_seed(2**64)
    assert leak_seed(2**64 - 1) != leak_seed(0)


# --- route bodies ---

FIT_BODIES = {
    "not an object": ([1, 2], "JSON object"),
    "resolution NaN": ({"resolution": float("nan")}, "integer"),
    "resolution inf": ({"resolution": float("inf")}, "integer"),
    "resolution 10**400": ({"resolution": 10**400}, "must lie in"),
    "resolution 100": ({"resolution": 100}, "multiple of 8"),
    "batch NaN": ({"batch_size": float("nan")}, "integer"),
    "batch 0": ({"batch_size": 0}, "must lie in"),
    "n_components 1e400": ({"n_components": float("inf")}, "integer"),
    "crop superscript": ({"crop": "random:²"}, "crop must be"),
    "folder with NUL": ({"folder": "a\0b"}, "NUL"),
    "name traversal": ({"name": "../../evil"}, "contains"),
    "name too long": ({"name": "x" * 65}, "at most 64"),
    "overwrite string": ({"overwrite": "yes"}, "true or false"),
    "unknown key": ({"epochs": 3}, "unknown key"),
}


@pytest.mark.parametrize("case", sorted(FIT_BODIES))
def test_bad_fit_body_is_422(case):
    change, message = FIT_BODIES[case]
    body = change if not isinstance(change, dict) else {"folder": "/x", "name": "n", **change}
    with pytest.raises(api.ApiError, match=message) as caught:
        api.parse_fit_request(body)
    assert caught.value.status == 422


SAMPLE_BODIES = {
    "huge shape": ({"shape": [4, 10**400, 8]}, "too large"),
    "float shape": ({"shape": [4, 8.5, 8]}, "positive integers"),
    "too many channels": ({"shape": [100, 8, 8]}, "too large"),
    "seed 10**400": ({"seed": 10**400}, "seed must be"),
    "strength NaN text": ({"strength": "nan"}, "finite"),
    "means superscript": ({"means": {"²": 1}}, "channel number"),
    "format gif": ({"format": "gif"}, "format must be"),
    "unknown preset": ({"preset": "nothing"}, "no preset"),
}


@pytest.mark.parametrize("case", sorted(SAMPLE_BODIES))
def test_bad_sample_body_is_4xx(tmp_path, case):
    change, message = SAMPLE_BODIES[case]
    with pytest.raises(api.ApiError, match=message) as caught:
        api.sample_payload({"shape": [4, 8, 8], **change}, PresetLibrary([tmp_path]))
    assert 400 <= caught.value.status < 500


# --- CLI ---

CLI_CASES = {
    "sample strength nan": (["sample", "manual", "--shape", "4,8,8", "--strength", "nan"],
                            "strength must lie"),
    "sample strength 3": (["sample", "manual", "--shape", "4,8,8", "--strength", "3"],
                          "strength must lie"),
    "sample mean nan": (["sample", "manual", "--shape", "4,8,8", "--means", "0:nan"], "finite"),
    "sample mean 10": (["sample", "manual", "--shape", "4,8,8", "--means", "0:10"],
                       "must lie in"),
    "sample means superscript": (["sample", "manual", "--shape", "4,8,8", "--means", "²:1"],
                                 "fixed means must look like"),
    "sample seed 2**64": (["sample", "manual", "--shape", "4,8,8", "--seed", str(2**64)],
                          "seed must lie"),
    "sample seed negative": (["sample", "manual", "--shape", "4,8,8", "--seed", "-5"],
                             "seed must lie"),
    "sample seed float": (["sample", "manual", "--shape", "4,8,8", "--seed", "1e3"],
                          "seed must be an integer"),
    "sample huge shape": (["sample", "manual", "--shape", "4,100000,100000"], "too large"),
    "sample zero shape": (["sample", "manual", "--shape", "0,8,8"], "positive"),
    "sample 2-d shape": (["sample", "manual", "--shape", "4,8"], "expected C,H,W"),
    "sample out in missing folder": (["sample", "manual", "--shape", "4,8,8", "--out",
                                      "{tmp}/missing/leak.npy"], "does not exist"),
    "sample out is a folder": (["sample", "manual", "--shape", "4,8,8", "--out", "{tmp}"],
                               "is a folder"),
    "preview strength nan": (["preview", "manual", "--out", "{tmp}/p.png", "--strength", "nan"],
                             "strength must lie"),
    "preview mean inf": (["preview", "manual", "--out", "{tmp}/p.png", "--means", "0:inf"],
                         "finite"),
    "unknown command": (["bogus"], "invalid choice"),
    "preview count 0": (["preview", "manual", "--count", "0"], "count must lie"),
    "preview count 100000": (["preview", "manual", "--count", "100000"], "count must lie"),
    "preview scale 0": (["preview", "manual", "--scale", "0"], "scale must lie"),
    "preview too many pixels": (["preview", "manual", "--shape", "4,512,512", "--count", "64",
                                 "--scale", "16", "--out", "{tmp}/p.png"], "pixels"),
    "fit size 100": (["fit", "{tmp}", "x", *ENC, "--size", "100"],
                     "multiple of 8"),
    "fit size 7": (["fit", "{tmp}", "x", *ENC, "--size", "7"], "size must be"),
    "fit size 10**400": (["fit", "{tmp}", "x", *ENC, "--size", "1" + "0" * 400],
                         "size must be an integer"),
    "fit n 0": (["fit", "{tmp}", "x", *ENC, "-n", "0"], "LF components"),
    "fit batch 0": (["fit", "{tmp}", "x", *ENC, "--batch-size", "0"],
                    "batch size"),
    "fit crop garbage": (["fit", "{tmp}", "x", *ENC, "--crop", "random:x"],
                         "crop must be"),
    "fit device tpu": (["fit", "{tmp}", "x", *ENC, "--device", "tpu"],
                       "unknown device"),
    "fit device cuda:-1": (["fit", "{tmp}", "x", *ENC, "--device", "cuda:-1"],
                           "unknown device"),
    "fit encoder module missing": (["fit", "{tmp}", "x", "--encoder", "no_such_module:f"],
                                   "cannot import module"),
    "fit encoder attribute missing": (["fit", "{tmp}", "x", "--encoder", "slb.bench:nothing"],
                                      "has no callable"),
    "fit encoder without colon": (["fit", "{tmp}", "x", "--encoder", "slb.bench"],
                                  "MODULE:FACTORY"),
    "fit folder missing": (["fit", "{tmp}/nope", "x", *ENC], "does not exist"),
    "fit folder is a file": (["fit", "{tmp}/file.txt", "x", *ENC],
                             "is not a folder"),
    "fit out-dir is a file": (["fit", "{tmp}", "x", *ENC, "--out-dir",
                               "{tmp}/file.txt"], "is not a folder"),
    "fit partial into missing folder": (["fit", "{tmp}", "x", *ENC,
                                         "--partial", "{tmp}/no/p.st"], "does not exist"),
    "fit name traversal": (["fit", "{tmp}", "../evil", *ENC], "contains"),
    "fit no usable images": (["fit", "{tmp}", "x", *ENC], "No usable images"),
    "demo steps 0": (["demo", "--steps", "0"], "steps must lie"),
    "merge garbage": (["merge", "{tmp}/file.txt", "--name", "m", "--out-dir", "{tmp}/out"],
                      "not a partial fit"),
    "merge missing file": (["merge", "{tmp}/nothing.st", "--name", "m"], "cannot read"),
    "info fifo-free missing": (["info", "{tmp}/none.safetensors"], "no such preset file"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, case):
    (tmp_path / "file.txt").write_text("not an image, not a partial")
    monkeypatch.chdir(tmp_path)  # any default output would land here
    args, message = CLI_CASES[case]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    before = snapshot(tmp_path)
    last = cli_error(args, capsys)
    assert message in last, last
    assert snapshot(tmp_path) == before


def test_cli_debug_flag_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        main(["--debug", "fit", str(tmp_path / "nope"), "x", *ENC])


def test_cli_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import slb.sampling

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(slb.sampling.LeakSampler, "draw", no_memory)
    last = cli_error(["sample", "manual", "--shape", "4,8,8", "--out",
                      str(tmp_path / "x.npy")], capsys)
    assert "out of memory" in last and not (tmp_path / "x.npy").exists()


def test_sample_writes_exactly_the_path_given_and_refuses_to_replace(tmp_path, capsys):
    out = tmp_path / "leak"
    assert main(["sample", "manual", "--shape", "4,8,8", "--means", "0:1", "--out",
                 str(out)]) == 0
    assert f"wrote {out}:" in capsys.readouterr().out
    assert not (tmp_path / "leak.npy").exists() and np.load(out, allow_pickle=False).shape == (
        4, 8, 8)
    before = out.read_bytes()
    last = cli_error(["sample", "manual", "--shape", "4,8,8", "--out", str(out)], capsys)
    assert "--overwrite" in last and out.read_bytes() == before
    assert main(["sample", "manual", "--shape", "4,8,8", "--out", str(out), "--overwrite"]) == 0


def test_fit_partial_never_overwrites_a_preset(coco128, tmp_path, capsys, preset_file):
    folder = photo_folder(coco128, tmp_path / "imgs", 3)
    before = preset_file.read_bytes()
    last = cli_error(["fit", str(folder), "x", *ENC, "--size", "64",
                      "--partial", str(preset_file)], capsys)
    assert "--overwrite" in last and preset_file.read_bytes() == before


def test_fit_with_non_utf8_image_name_under_strict_output(coco128, tmp_path):
    folder = photo_folder(coco128, tmp_path / "imgs", 3)
    with open(os.fsencode(folder) + b"/bad\xff.jpg", "wb") as fh:
        fh.write(b"not a jpeg")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "slb", "fit", str(folder), "np",
                           *ENC, "--size", "64", "--out-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"bad\\xff.jpg" in proc.stdout and (tmp_path / "np.safetensors").exists()


def test_progress_line_ends_before_the_error(coco128, tmp_path, capsys, monkeypatch):
    import slb.cli

    folder = photo_folder(coco128, tmp_path / "imgs", 3)

    def failing_fit(*args, progress=None, **kwargs):
        progress(1, 3)
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(slb.cli, "fit", failing_fit)
    assert main(["fit", str(folder), "x", *ENC, "--size", "64",
                 "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "1/3 images\nerror: RuntimeError: encoder crashed" in err


def test_fit_interrupted_by_ctrl_c_saves_nothing(coco128, tmp_path, capsys, monkeypatch):
    import slb.cli

    folder = photo_folder(coco128, tmp_path / "imgs", 3)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(slb.cli, "fit", interrupted)
    assert main(["fit", str(folder), "x", *ENC, "--size", "64",
                 "--out-dir", str(tmp_path / "out")]) == 130
    assert "nothing was saved" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*"))


def test_read_only_output_folder_is_refused_before_work(tmp_path, capsys, monkeypatch):
    # as root the mode bits do not stop writes, so the permission answer is simulated
    import slb.files

    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(slb.files.os, "access",
                        lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    last = cli_error(["fit", str(tmp_path), "x", *ENC, "--out-dir", str(ro)],
                     capsys)
    assert "not writable" in last


# --- partial fits and merge ---

@pytest.fixture
def partials(tmp_path):
    paths = []
    for i in range(2):
        acc = FitAccumulator("pixel", (4, 8, 8))
        acc.update(synthetic_latents(5, (4, 8, 8), seed=i))
        paths.append(save_partial(acc, tmp_path / f"p{i}.st", {"vae": "v", "source": f"s{i}",
                                                               "image_size": "64,64"}))
    return paths


def test_merge_refuses_the_same_partial_twice(partials, tmp_path, capsys):
    last = cli_error(["merge", str(partials[0]), str(partials[0]), "--name", "m",
                      "--out-dir", str(tmp_path)], capsys)
    assert "same shard" in last
    shutil.copy(partials[0], tmp_path / "copy.st")
    last = cli_error(["merge", str(partials[0]), str(tmp_path / "copy.st"), "--name", "m",
                      "--out-dir", str(tmp_path)], capsys)
    assert "same shard" in last and not (tmp_path / "m.safetensors").exists()


def _rewrite_partial(path: Path, **meta_changes: str) -> None:
    parts = safetensors.torch.load(path.read_bytes())
    with safetensors.safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
    meta.update(meta_changes)
    path.write_bytes(safetensors.torch.save(parts, metadata=meta))


@pytest.mark.parametrize(("change", "message"), [
    ({"count": "-5"}, "at least 1"),
    ({"count": "many"}, "not an integer"),
    ({"latent_shape": "4,8"}, "latent_shape"),
    ({"kind": "voxel"}, "kind"),
    ({"format": "other"}, "not a partial fit"),
    ({"vae": "another-vae"}, "shards must be fitted alike"),
])
def test_merge_refuses_tampered_or_mismatched_partials(partials, tmp_path, capsys, change,
                                                      message):
    _rewrite_partial(partials[1], **change)
    last = cli_error(["merge", *map(str, partials), "--name", "m", "--out-dir",
                      str(tmp_path)], capsys)
    assert message in last and not (tmp_path / "m.safetensors").exists()


def test_merge_of_a_truncated_partial_is_one_line(partials, tmp_path, capsys):
    data = partials[1].read_bytes()
    partials[1].write_bytes(data[: len(data) // 2])
    assert "not a partial fit" in cli_error(
        ["merge", *map(str, partials), "--name", "m", "--out-dir", str(tmp_path)], capsys)


def test_merged_preset_keeps_metadata_and_import_refusal_names_flag(partials, tmp_path, capsys):
    assert main(["merge", *map(str, partials), "--name", "m", "--out-dir", str(tmp_path)]) == 0
    preset = load_preset(tmp_path / "m.safetensors")
    assert preset.metadata["vae"] == "v" and preset.metadata["source"] == "s0+s1"
    assert preset.images == 10 and preset.image_size == (64, 64)
    last = cli_error(["merge", *map(str, partials), "--name", "m", "--out-dir",
                      str(tmp_path)], capsys)
    assert "--overwrite" in last


def test_partial_bytes_need_an_image():
    with pytest.raises(ValueError, match="at least one image"):
        partial_bytes(FitAccumulator("pixel", (4, 8, 8)))


# --- saving: atomic, never replacing, normal file mode ---

def test_saved_preset_has_the_users_normal_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_preset(make_preset("pixel", shape=(4, 8, 8)), tmp_path, "m")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch, preset_file):
    import slb.files

    before = snapshot(tmp_path)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(slb.files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_preset(make_preset("pixel", shape=(4, 8, 8)), tmp_path, "good", overwrite=True)
    assert snapshot(tmp_path) == before


def test_round_trip_still_valid():
    preset = make_preset("dct+pixel", 3, shape=(4, 8, 8))
    assert preset_from_bytes(preset_to_bytes(preset)).kind == "dct+pixel"


# --- generations through the stand-in WebUI: invalid settings never crash, never apply ---

SCRIPT = ROOT / "scripts" / "signal_leak_bias.py"


@pytest.fixture
def webui(fresh_host):
    from standin.fixtures import start_with_extension

    start_with_extension(fresh_host, SCRIPT)
    return fresh_host


def _plain(host):
    args = host.api_args("txt2img", {"signal leak bias": {"args": [False]}})
    return host.txt2img(args, api=True, seed=31).record("txt2img")["received_x"]


GENERATION_ARGS = {
    "dict strength 10**400": ([{"strength": 10**400}], "strength must be a number"),
    "dict mean 10**400": ([{"means": {"0": 10**400}}], "must be a number"),
    "dict means key superscript": ([{"means": {"²": 1}}], "channel number"),
    "dict seed 2**64": ([{"seed": 2**64}], "seed must be -1 or"),
    "positional seed NaN": ([True, "manual (no preset)", 1.0, "sampled", *[False, 0.0] * 4,
                             float("nan")], "finite"),
    "positional strength inf": ([True, "manual (no preset)", float("inf")], "finite"),
    "missing preset": ([{"preset": "ghost"}], "no preset named"),
}


@pytest.mark.parametrize("case", sorted(GENERATION_ARGS))
def test_invalid_generation_settings_run_without_the_leak(webui, case):
    script_args, message = GENERATION_ARGS[case]
    base = _plain(webui)
    res = webui.txt2img(webui.api_args("txt2img", {"signal leak bias": {"args": script_args}}),
                        api=True, seed=31)
    assert res.errors == []
    assert torch.equal(res.record("txt2img")["received_x"], base)
    note = res.p.extra_generation_params["Signal leak"]
    assert "not applied" in note and message in note, note
    assert "Signal leak hash" not in res.p.extra_generation_params
    assert "Signal leak strength" not in res.p.extra_generation_params


def test_unexpected_error_in_the_hook_never_fails_the_generation(webui, monkeypatch, capsys):
    import slb.generation

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(slb.generation.LeakEngine, "txt2img_start", broken)
    base = _plain(webui)
    res = webui.txt2img(webui.api_args("txt2img", {"signal leak bias": {"args": [{
        "means": {"0": 1.0}}]}}), api=True, seed=31)
    assert res.errors == [] and torch.equal(res.record("txt2img")["received_x"], base)
    assert "internal error: RuntimeError: simulated failure" in \
        res.p.extra_generation_params["Signal leak"]
    assert "Signal leak hash" not in res.p.extra_generation_params
    assert "[Signal Leak Bias] not applied: internal error" in capsys.readouterr().err


def test_fit_button_stop_saves_nothing(webui, coco128, tmp_path):
    import modules.paths as paths
    import modules.shared as shared

    folder = photo_folder(coco128, tmp_path / "imgs", 4)
    mod = next(m for m in webui.modules if hasattr(m, "PRESETS"))
    fit_button = mod.fit_panel.make_fit_button(mod.PRESETS)
    real_interrupted = mod.HOST.interrupted
    calls = []

    def stop_after_first() -> bool:  # the user presses Stop while the fit runs
        calls.append(1)
        if len(calls) == 2:
            shared.state.interrupt()
        return real_interrupted()

    mod.HOST.interrupted = stop_after_first
    _, message = webui.gpu_call(fit_button, str(folder), "stopped", "pixel", 3, 64, "center",
                                0, False, False, 1, None, extra_outputs=[None])
    assert message.startswith("Stopped: nothing was saved.")
    user = Path(paths.models_path) / "signal_leak"
    assert not (user / "stopped.safetensors").exists()
    assert not [p for p in user.glob("*") if p.name.startswith(".tmp")] if user.exists() else True


def test_fit_button_with_non_utf8_image_reports_it_printably(webui, coco128, tmp_path):
    folder = photo_folder(coco128, tmp_path / "imgs", 3)
    with open(os.fsencode(folder) + b"/bad\xff.png", "wb") as fh:
        fh.write(b"junk")
    mod = next(m for m in webui.modules if hasattr(m, "PRESETS"))
    fit_button = mod.fit_panel.make_fit_button(mod.PRESETS)
    _, message = webui.gpu_call(fit_button, str(folder), "ok", "pixel", 3, 64, "center", 0,
                                False, False, 0, None, extra_outputs=[None])
    assert "Fitted <b>3</b>" in message and "bad\\xff.png" in message
    message.encode("utf-8")


# --- the routes over HTTP (FastAPI test client; CI's pinned environment) ---

@pytest.fixture
def client(fresh_host):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from standin.fixtures import start_with_extension

    return TestClient(start_with_extension(fresh_host, SCRIPT, mode="api", with_app=True))


ROUTE_BODIES = {
    "fit resolution NaN": ("fit", '{"folder": "/tmp", "name": "x", "resolution": NaN}',
                           "integer"),
    "fit batch Infinity": ("fit", '{"folder": "/tmp", "name": "x", "batch_size": Infinity}',
                           "integer"),
    "fit resolution 10**400": ("fit", '{"folder": "/tmp", "name": "x", "resolution": 1'
                               + "0" * 400 + "}", "must lie in"),
    "fit not json": ("fit", "{folder: }", "must be JSON"),
    "fit folder missing": ("fit", '{"folder": "/no/such/folder", "name": "x"}', "not found"),
    "sample seed 10**400": ("sample", '{"shape": [4, 8, 8], "seed": 1' + "0" * 400 + "}",
                            "seed must be"),
    "sample strength 1e400": ("sample", '{"shape": [4, 8, 8], "strength": 1e400}', "finite"),
    "sample means superscript": ("sample", '{"shape": [4, 8, 8], "means": {"\u00b2": 1}}',
                                 "channel number"),
}


@pytest.mark.gradio
@pytest.mark.parametrize("case", sorted(ROUTE_BODIES))
def test_route_errors_are_4xx_with_a_message(client, case):
    route, body, message = ROUTE_BODIES[case]
    r = client.post(f"/signal-leak/v1/{route}", content=body,
                    headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert message in r.json()["detail"], r.text


@pytest.mark.gradio
def test_fit_route_with_non_utf8_image_name_answers_200_and_saves(client, coco128, tmp_path):
    """The route once saved the preset and then failed with HTTP 500 while serialising the
    skipped file's name (not valid UTF-8): it answers 200, with the name escaped."""
    import modules.paths as paths

    folder = photo_folder(coco128, tmp_path / "imgs", 3)
    with open(os.fsencode(folder) + b"/bad\xff.png", "wb") as fh:
        fh.write(b"junk")
    r = client.post("/signal-leak/v1/fit", json={"folder": str(folder), "name": "odd names",
                                                 "kind": "pixel", "resolution": 64})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["images"] == 3 and [s["path"] for s in body["skipped"]] == ["bad\\xff.png"]
    assert (Path(paths.models_path) / "signal_leak" / "odd names.safetensors").is_file()
