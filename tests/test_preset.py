import json
import os
import struct

import numpy as np
import pytest
import safetensors.torch
import torch

from slb.dct import paper_lowfreq_coords
from slb.library import PresetLibrary
from slb.paper_import import import_paper_dir
from slb.preset import (
    REQUIRED_METADATA,
    Preset,
    PresetError,
    load_preset,
    preset_from_bytes,
    save_preset,
    validate_name,
)
from tests.conftest import make_preset, synthetic_latents


def _write_raw(path, tensors, metadata):
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)


def _broken(preset, tensors=None, drop_meta=None, **meta):
    t = {k: v.clone() for k, v in preset.tensors.items()}
    t.update(tensors or {})
    m = dict(preset.metadata)
    m.update({k: str(v) for k, v in meta.items()})
    if drop_meta:
        m.pop(drop_meta)
    return t, m


def test_roundtrip_is_exact(tmp_path, dct_preset):
    path = save_preset(dct_preset, tmp_path, "my preset-1.0")
    assert path.name == "my preset-1.0.safetensors"
    loaded = load_preset(path)
    assert loaded.name == "my preset-1.0"
    assert loaded.metadata == dct_preset.metadata
    for k, v in dct_preset.tensors.items():
        assert torch.equal(loaded.tensors[k], v)
        assert loaded.tensors[k].dtype == (torch.int64 if k == "lf_coords" else torch.float32)
    assert len(loaded.sha256) == 64 and loaded.short_hash == loaded.sha256[:10]
    assert loaded.coords == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (2, 0)]


def test_metadata_is_complete(dct_preset):
    for key in REQUIRED_METADATA:
        assert key in dct_preset.metadata
    m = dct_preset.metadata
    assert m["slb_format"] == "1" and m["kind"] == "dct+pixel" and m["n_components"] == "6"
    assert m["latent_shape"] == "4,16,16" and m["image_size"] == "128,128"
    assert m["created"].endswith("+00:00")


def test_source_is_base_name_only():
    preset = make_preset(source="/home/someone/secret/photos/")
    assert preset.metadata["source"] == "photos"


def test_refuses_overwrite_unless_asked(tmp_path, dct_preset, pixel_preset):
    save_preset(dct_preset, tmp_path, "a")
    before = (tmp_path / "a.safetensors").read_bytes()
    with pytest.raises(PresetError, match="already exists"):
        save_preset(pixel_preset, tmp_path, "a")
    assert (tmp_path / "a.safetensors").read_bytes() == before
    save_preset(pixel_preset, tmp_path, "a", overwrite=True)
    assert load_preset(tmp_path / "a.safetensors").kind == "pixel"
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors"]  # no temporary file left


def test_failed_save_leaves_nothing(tmp_path, dct_preset, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        save_preset(dct_preset, tmp_path, "x")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["", ".hidden", "../evil", "a/b", "a\\b", "x" * 65, "tab\tname",
                                  "semi;colon", "ünïcode", " lead", "trail ", "dot.", "CON",
                                  "nul.txt", "..", "/abs"])
def test_bad_names_rejected(tmp_path, dct_preset, name):
    with pytest.raises(PresetError):
        validate_name(name)
    with pytest.raises(PresetError):
        save_preset(dct_preset, tmp_path, name)
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "evil.safetensors").exists()


@pytest.mark.parametrize("name", ["a", "My Preset_2-v1.5", "x" * 64, "0"])
def test_good_names_accepted(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("case, match", [
    ("missing_meta", "missing metadata key.*images"),
    ("missing_tensor", "missing tensor.*hf_var"),
    ("extra_tensor", "unexpected tensor.*junk"),
    ("bad_shape", "hf_mean has shape"),
    ("nan", "NaN"),
    ("inf", "NaN or infinite"),
    ("neg_var", "negative variances"),
    ("asym_cov", "not symmetric"),
    ("neg_diag", "negative variances on its diagonal"),
    ("bad_kind", "kind"),
    ("bad_family", "model_family"),
    ("bad_shape_meta", "latent_shape"),
    ("future_format", "newer"),
    ("float16", "dtype"),
    ("coords_outside", "outside"),
    ("coords_dup", "repeats"),
    ("no_dc", "DC"),
    ("path_source", "base name"),
    ("bad_crop", "crop"),
    ("bad_date", "ISO 8601"),
])
def test_validation_rejects_each_broken_case(tmp_path, dct_preset, case, match):
    p = dct_preset
    cov = p.tensors["lf_cov"].clone()
    if case == "missing_meta":
        t, m = _broken(p, drop_meta="images")
    elif case == "missing_tensor":
        t, m = _broken(p)
        del t["hf_var"]
    elif case == "extra_tensor":
        t, m = _broken(p, {"junk": torch.zeros(3)})
    elif case == "bad_shape":
        t, m = _broken(p, {"hf_mean": torch.zeros(4, 8, 16)})
    elif case == "nan":
        hm = p.tensors["hf_mean"].clone()
        hm[1, 2, 3] = float("nan")
        t, m = _broken(p, {"hf_mean": hm})
    elif case == "inf":
        lm = p.tensors["lf_mean"].clone()
        lm[0] = float("inf")
        t, m = _broken(p, {"lf_mean": lm})
    elif case == "neg_var":
        hv = p.tensors["hf_var"].clone()
        hv[0, 0, 0] = -0.1
        t, m = _broken(p, {"hf_var": hv})
    elif case == "asym_cov":
        cov[0, 1] += 0.5
        t, m = _broken(p, {"lf_cov": cov})
    elif case == "neg_diag":
        cov[2, 2] = -1.0
        t, m = _broken(p, {"lf_cov": cov})
    elif case == "bad_kind":
        t, m = _broken(p, kind="fourier")
    elif case == "bad_family":
        t, m = _broken(p, model_family="sd9")
    elif case == "bad_shape_meta":
        t, m = _broken(p, latent_shape="4,16")
    elif case == "future_format":
        t, m = _broken(p, slb_format=99)
    elif case == "float16":
        t, m = _broken(p, {"hf_var": p.tensors["hf_var"].half()})
    elif case == "coords_outside":
        t, m = _broken(p, {"lf_coords": torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1], [0, 2],
                                                      [16, 0]])})
    elif case == "coords_dup":
        t, m = _broken(p, {"lf_coords": torch.tensor([[0, 0], [0, 1], [0, 1], [1, 1], [0, 2],
                                                      [2, 0]])})
    elif case == "no_dc":
        t, m = _broken(p, {"lf_coords": torch.tensor([[3, 3], [0, 1], [1, 0], [1, 1], [0, 2],
                                                      [2, 0]])})
    elif case == "path_source":
        t, m = _broken(p, source="/home/user/photos")
    elif case == "bad_crop":
        t, m = _broken(p, crop="middle")
    elif case == "bad_date":
        t, m = _broken(p, created="yesterday")
    path = tmp_path / "broken.safetensors"
    _write_raw(path, t, m)
    with pytest.raises(PresetError, match=match) as info:
        load_preset(path)
    assert str(info.value).startswith("broken.safetensors: ")


@pytest.mark.parametrize("content", [b"", b"garbage", b"\xff" * 8 + b"{}",
                                     struct.pack("<Q", 5) + b"{nope"])
def test_corrupt_files_rejected(tmp_path, content):
    path = tmp_path / "c.safetensors"
    path.write_bytes(content)
    with pytest.raises(PresetError, match="c.safetensors: .*safetensors"):
        load_preset(path)


def test_truncated_file_rejected(tmp_path, dct_preset):
    data = (save_preset(dct_preset, tmp_path, "ok")).read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(PresetError, match="cut.safetensors"):
        load_preset(tmp_path / "cut.safetensors")


def test_never_unpickles(tmp_path):
    # a pickle disguised as a preset is rejected as not-safetensors, never executed
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(PresetError):
        load_preset(tmp_path / "evil.safetensors")
    assert not (tmp_path / "pwned").exists()


def test_library_lists_broken_with_reason_and_keeps_good(tmp_path, dct_preset, pixel_preset):
    stats, user = tmp_path / "stats", tmp_path / "user"
    save_preset(dct_preset, stats, "natural")
    save_preset(pixel_preset, user, "style")
    save_preset(pixel_preset, user, "natural")  # same name as in stats/: shadowed
    (user / "junk.safetensors").write_bytes(b"junk")
    (user / ".hidden.safetensors").write_bytes(b"junk")
    (user / "notes.txt").write_text("ignored")
    lib = PresetLibrary([stats, user, tmp_path / "missing"])
    entries = {(e.name, e.path.parent.name): e for e in lib.entries()}
    assert set(entries) == {("natural", "stats"), ("style", "user"), ("natural", "user"),
                            ("junk", "user")}
    assert entries[("natural", "stats")].usable
    assert entries[("style", "user")].usable
    assert not entries[("natural", "user")].usable
    assert "duplicate" in entries[("natural", "user")].reason
    assert "safetensors" in entries[("junk", "user")].reason
    assert lib.get("natural").kind == "dct+pixel"
    with pytest.raises(PresetError, match="unusable"):
        lib.get("junk")
    with pytest.raises(PresetError, match="no preset"):
        lib.get("nothing")
    info = entries[("natural", "stats")].info()
    assert info == {"name": "natural", "kind": "dct+pixel", "n_components": 6,
                    "latent_shape": [4, 16, 16], "image_size": [128, 128],
                    "model_family": "unknown", "hash": lib.get("natural").short_hash,
                    "usable": True, "reason": ""}
    json.dumps([e.info() for e in lib.entries()])


def test_library_rereads_changed_files(tmp_path, dct_preset, pixel_preset):
    save_preset(dct_preset, tmp_path, "p")
    lib = PresetLibrary([tmp_path])
    assert lib.get("p").kind == "dct+pixel"
    save_preset(pixel_preset, tmp_path, "p", overwrite=True)
    os.utime(tmp_path / "p.safetensors", ns=(1, 10**18))  # make sure the mtime differs
    assert lib.get("p").kind == "pixel"


def _paper_dir(tmp_path, kind, x, n=None, coords=None):
    """Write statistics the way the paper's code lays them out (its computation, redone)."""
    folder = tmp_path / f"paper_{kind.replace('+', '_')}"
    folder.mkdir()
    (folder / "statistic_type.txt").write_text(kind)
    from scipy.fft import dctn, idctn

    xn = x.double().numpy()
    if kind == "pixel":
        tensors = {"mean_pixels": torch.from_numpy(xn.mean(0)).float(),
                   "var_pixels": torch.from_numpy(xn.var(0, ddof=1)).float()}
    else:
        spec = dctn(xn, type=2, norm="ortho", axes=(-2, -1))
        rows = [u for u, _ in coords]
        cols = [v for _, v in coords]
        lf = spec[:, :, rows, cols]  # (N, C, n)
        z = np.swapaxes(lf, 1, 2).reshape(len(xn), -1)  # component-major
        restricted = np.zeros_like(spec)
        restricted[:, :, rows, cols] = lf
        rem = xn - idctn(restricted, type=2, norm="ortho", axes=(-2, -1))
        tensors = {"mean_lf_components": torch.from_numpy(z.mean(0)).float(),
                   "cov_lf_components": torch.from_numpy(np.cov(z, rowvar=False)).float(),
                   "mean_hf_remainder": torch.from_numpy(rem.mean(0)).float(),
                   "var_hf_remainder": torch.from_numpy(rem.var(0, ddof=1)).float()}
    safetensors.torch.save_file(tensors, str(folder / "stats.safetensors"))
    return folder, tensors


def test_import_paper_pixel(tmp_path):
    x = synthetic_latents(30, (4, 8, 8))
    folder, raw = _paper_dir(tmp_path, "pixel", x)
    preset = import_paper_dir(folder, model_family="sd1")
    assert preset.kind == "pixel" and preset.latent_shape == (4, 8, 8)
    assert torch.equal(preset.tensors["mean"], raw["mean_pixels"])
    assert preset.image_size == (64, 64) and preset.model_family == "sd1"
    assert "unknown" in preset.metadata["description"]


@pytest.mark.parametrize("size", [8, 32])
def test_import_paper_dct_reproduces_its_lf_selection(tmp_path, size):
    x = synthetic_latents(60, (4, size, size))
    coords = paper_lowfreq_coords(6, size, size)
    folder, raw = _paper_dir(tmp_path, "dct+pixel", x, 6, coords)
    preset = import_paper_dir(folder)
    assert preset.coords == coords
    assert torch.equal(preset.tensors["lf_mean"], raw["mean_lf_components"])
    assert "assumption" in preset.metadata["description"]
    assert save_preset(preset, tmp_path, "imported").exists()


def test_import_detects_a_cut_tie_group(tmp_path):
    # n = 2 cuts the tie {(0,1), (1,0)}: whichever the file used is found from its remainder
    x = synthetic_latents(60, (4, 8, 8))
    for coords in ([(0, 0), (0, 1)], [(0, 0), (1, 0)]):
        sub = tmp_path / str(coords[1])
        sub.mkdir()
        folder, _ = _paper_dir(sub, "dct+pixel", x, 2, coords)
        assert import_paper_dir(folder).coords == coords


def test_import_rejects_bad_directories(tmp_path):
    with pytest.raises(PresetError, match="not a directory"):
        import_paper_dir(tmp_path / "nope")
    (tmp_path / "statistic_type.txt").write_text("wavelets")
    (tmp_path / "stats.safetensors").write_bytes(b"junk")
    with pytest.raises(PresetError, match="wavelets"):
        import_paper_dir(tmp_path)
    (tmp_path / "statistic_type.txt").write_text("pixel\n")
    with pytest.raises(PresetError, match="unreadable"):
        import_paper_dir(tmp_path)
    safetensors.torch.save_file({"mean_pixels": torch.zeros(4, 8, 8)},
                                str(tmp_path / "stats.safetensors"))
    with pytest.raises(PresetError, match="var_pixels"):
        import_paper_dir(tmp_path)


def test_preset_from_bytes_and_summary(dct_preset):
    from slb.preset import preset_to_bytes

    again = preset_from_bytes(preset_to_bytes(dct_preset), name="x")
    assert again.summary() == ("dct+pixel, n=6, latent 4x16x16 (128x128 px), 400 images, "
                               "family unknown")
    assert isinstance(again, Preset)
