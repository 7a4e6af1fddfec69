import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slb.cli import main
from slb.images import list_image_files
from slb.preset import load_preset, save_preset
from tests.conftest import photo_folder

ROOT = Path(__file__).resolve().parents[1]
ENC = ["--encoder", "tests.encoders:make_encoder", "--model-family", "sd1"]


@pytest.fixture
def saved(tmp_path, dct_preset):
    return save_preset(dct_preset, tmp_path, "natural")


def test_help_for_every_command():
    for cmd in ("info", "import", "sample", "preview", "fit", "merge", "demo"):
        out = subprocess.run([sys.executable, "-m", "slb", cmd, "--help"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "usage:" in out.stdout, cmd


def test_info_prints_summary(saved, capsys):
    assert main(["info", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "dct+pixel, n=6" in out and "valid: yes" in out and "LF pairs" in out


def test_info_by_name_and_broken_file(saved, tmp_path, capsys):
    assert main(["--presets-dir", str(tmp_path), "info", "natural"]) == 0
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    assert main(["info", str(tmp_path / "bad.safetensors")]) == 1
    assert "unusable" in capsys.readouterr().out


def test_missing_preset_is_a_clear_error(tmp_path, capsys):
    assert main(["--presets-dir", str(tmp_path), "info", "nothing"]) == 2
    assert "no preset 'nothing'" in capsys.readouterr().err


def test_sample_writes_npy_and_is_repeatable(saved, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    for out in (a, b):
        assert main(["sample", str(saved), "--shape", "4,32,24", "--seed", "5",
                     "--means", "0:1.5", "--out", str(out)]) == 0
    x = np.load(a)
    assert x.shape == (4, 32, 24) and x.dtype == np.float32
    assert np.array_equal(x, np.load(b))
    assert abs(x[0].mean() - 1.5) < 1e-5


def test_sample_manual_and_bad_arguments(tmp_path, capsys):
    out = tmp_path / "m.npy"
    assert main(["sample", "manual", "--shape", "4,8,8", "--means", "2:-0.5",
                 "--out", str(out)]) == 0
    assert np.allclose(np.load(out)[2], -0.5)
    with pytest.raises(SystemExit):
        main(["sample", "manual", "--shape", "4,8", "--out", str(out)])
    with pytest.raises(SystemExit):
        main(["sample", "manual", "--shape", "4,8,8", "--means", "zero:1", "--out", str(out)])


def test_preview_writes_png(saved, tmp_path):
    out = tmp_path / "p.png"
    assert main(["preview", str(saved), "--count", "3", "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.mode == "RGB" and img.height == 16 * 4 and img.width > 3 * 16 * 4


def test_fit_with_own_encoder_then_info(coco128, tmp_path, capsys):
    folder = photo_folder(coco128, tmp_path / "imgs", 6, broken="broken.jpg")
    args = ["fit", str(folder), "tiny", *ENC, "--size", "64",
            "--kind", "dct+pixel", "-n", "3", "--out-dir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fitted 6 images (1 skipped)" in out and "broken.jpg" in out
    preset = load_preset(tmp_path / "tiny.safetensors")
    assert preset.metadata["source"] == "imgs" and preset.images == 6
    assert main(args) == 2  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "tiny.safetensors")]) == 0


def test_fit_partials_then_merge(coco128, tmp_path):
    files = list_image_files(coco128)[:8]
    for i, part in enumerate((files[:4], files[4:])):
        d = tmp_path / f"shard{i}"
        d.mkdir()
        for f in part:
            shutil.copy(f, d / f.name)
        assert main(["fit", str(d), "x", *ENC, "--size",
                     "64", "--kind", "pixel", "--partial", str(tmp_path / f"p{i}.st")]) == 0
    assert main(["merge", str(tmp_path / "p0.st"), str(tmp_path / "p1.st"), "--name", "merged",
                 "--out-dir", str(tmp_path)]) == 0
    assert load_preset(tmp_path / "merged.safetensors").images == 8


def test_fit_without_encoder_says_what_to_do(tmp_path, capsys):
    assert main(["fit", str(tmp_path), "x"]) == 2
    assert "--vae" in capsys.readouterr().err


def test_fit_vae_without_diffusers_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # simulate "not installed"
    assert main(["fit", str(tmp_path), "x", "--vae", str(tmp_path)]) == 2
    assert "diffusers" in capsys.readouterr().err


def test_bad_name_refused_before_any_work(tmp_path, capsys):
    assert main(["fit", str(tmp_path), "../evil", *ENC]) == 2
    assert "contains '/'" in capsys.readouterr().err


def test_sample_with_components_and_a_reference_image(coco128, tmp_path):
    """``sample --reference IMAGE``: the image is encoded (here with the try encoder) at the
    leak's size and its DC and first gradients become the leak's; ``--components`` given
    explicitly win over the reference's value for that component."""
    import torch
    from PIL import Image

    from slb.bench import try_encoder
    from slb.lowfreq import amplitudes, reference_components, reference_pixels

    image = sorted(coco128.glob("*.jpg"))[0]
    out = tmp_path / "ref.npy"
    assert main(["sample", "manual", "--shape", "4,16,24", "--reference", str(image),
                 "--encoder", "slb.bench:try_encoder", "--model-family", "sd1",
                 "--components", "1:0,1=0.75", "--out", str(out)]) == 0
    leak = torch.from_numpy(np.load(out))
    with Image.open(image) as img, torch.no_grad():
        latent = try_encoder()(reference_pixels(img.convert("RGB"), 24 * 8, 16 * 8))[0]
    want = {k: min(3.0, max(-3.0, a)) for k, a in reference_components(latent, None).items()}
    want[(1, 0, 1)] = 0.75
    got = amplitudes(leak, list(want))
    assert got == pytest.approx(want, abs=1e-4)
    assert abs(got[(1, 0, 1)] - reference_components(latent, None)[(1, 0, 1)]) > 1e-3
