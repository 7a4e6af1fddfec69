import warnings

import numpy as np
import pytest
import torch
from scipy.fft import dctn, idctn

from slb.dct import lowfreq_coords
from slb.fitting import FitAccumulator, FitInterrupted, fit
from slb.images import ImageBatches, NoUsableImagesError, list_image_files
from slb.partials import merge_partials, save_partial
from tests.conftest import synthetic_latents

SIZE = 64  # 8x8 latents keep the coco128 tests quick


@pytest.fixture(scope="module")
def coco_latents(coco128, encoder):
    """Latents of every coco128 image, encoded in one go (the two-pass reference input)."""
    batches = ImageBatches(coco128, size=SIZE, batch_size=32)
    return torch.cat([encoder(b) for b, _ in batches]).double()


def _rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


def test_pixel_fit_matches_two_pass_float64(coco128, encoder, coco_latents):
    result = fit(coco128, encoder, "pixel", size=SIZE, batch_size=5)
    x = coco_latents.numpy()
    assert result.images == x.shape[0] == 128
    assert result.skipped == []
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).sum(axis=0) / (x.shape[0] - 1)
    t = result.preset.tensors
    # the preset stores float32: compare at float32 precision, and the float64
    # accumulators themselves at 1e-6 relative
    assert _rel_err(result.accumulator.pixel.mean.numpy(), mean) < 1e-6
    assert _rel_err(result.accumulator.pixel.variance().numpy(), var) < 1e-6
    assert _rel_err(t["mean"].numpy(), mean) < 1e-6
    assert _rel_err(t["var"].numpy(), var) < 1e-6
    assert result.preset.metadata["source"] == "coco128"
    assert result.preset.image_size == (SIZE, SIZE)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_dct_fit_matches_two_pass_float64_scipy(coco128, encoder, coco_latents, n):
    result = fit(coco128, encoder, "dct+pixel", n, size=SIZE, batch_size=7)
    x = coco_latents.numpy()  # (N, C, h, w)
    n_img, c, h, w = x.shape
    coords = lowfreq_coords(n, h, w)
    spec = dctn(x, type=2, norm="ortho", axes=(-2, -1))
    z = np.stack([spec[:, :, u, v] for u, v in coords], axis=1).reshape(n_img, n * c)
    restricted = np.zeros_like(spec)
    for u, v in coords:
        restricted[:, :, u, v] = spec[:, :, u, v]
    rem = x - idctn(restricted, type=2, norm="ortho", axes=(-2, -1))
    zc = z - z.mean(axis=0)
    cov = zc.T @ zc / (n_img - 1)
    rem_mean = rem.mean(axis=0)
    rem_var = ((rem - rem_mean) ** 2).sum(axis=0) / (n_img - 1)
    acc = result.accumulator
    assert acc.coords == coords
    assert _rel_err(acc.lf.mean.numpy(), z.mean(axis=0)) < 1e-6
    assert _rel_err(acc.lf.covariance().numpy(), cov) < 1e-6
    assert _rel_err(acc.hf.mean.numpy(), rem_mean) < 1e-6
    assert _rel_err(acc.hf.variance().numpy(), rem_var) < 1e-6
    t = result.preset.tensors
    assert t["lf_coords"].tolist() == [list(p) for p in coords]
    assert _rel_err(t["lf_cov"].numpy(), cov) < 1e-6
    assert np.array_equal(t["lf_cov"].numpy(), t["lf_cov"].numpy().T)


def test_merge_of_two_shards_equals_whole(coco128, encoder, tmp_path):
    files = list_image_files(coco128)
    half = len(files) // 2
    whole = fit(ImageBatches(coco128, SIZE, 8, files=files), encoder, "dct+pixel", 3, size=SIZE)
    a = fit(ImageBatches(coco128, SIZE, 8, files=files[:half]), encoder, "dct+pixel", 3,
            size=SIZE)
    b = fit(ImageBatches(coco128, SIZE, 8, files=files[half:]), encoder, "dct+pixel", 3,
            size=SIZE)
    # shards written to disk and read back, as a multi-machine fit would
    save_partial(a.accumulator, tmp_path / "a.safetensors")
    save_partial(b.accumulator, tmp_path / "b.safetensors")
    merged = merge_partials([tmp_path / "a.safetensors", tmp_path / "b.safetensors"]).accumulator
    assert merged.count == whole.images == 128
    w, m = whole.accumulator, merged
    for got, want in ((m.lf.mean, w.lf.mean), (m.lf.covariance(), w.lf.covariance()),
                      (m.hf.mean, w.hf.mean), (m.hf.variance(), w.hf.variance())):
        assert _rel_err(got.numpy(), want.numpy()) < 1e-12
    assert torch.equal(m.to_preset(image_size=(SIZE, SIZE)).tensors["lf_coords"],
                       whole.preset.tensors["lf_coords"])


def test_random_crop_shards_merge_exactly(coco128, encoder):
    files = list_image_files(coco128)[:20]
    crop = "random:7"
    whole = fit(ImageBatches(coco128, SIZE, 4, crop=crop, files=files), encoder, "pixel",
                size=SIZE, crop=crop)
    a = fit(ImageBatches(coco128, SIZE, 4, crop=crop, files=files[:9]), encoder, "pixel",
            size=SIZE, crop=crop)
    b = fit(ImageBatches(coco128, SIZE, 4, crop=crop, files=files[9:]), encoder, "pixel",
            size=SIZE, crop=crop)
    a.accumulator.merge(b.accumulator)
    assert _rel_err(a.accumulator.pixel.mean.numpy(), whole.accumulator.pixel.mean.numpy()) < 1e-12
    assert whole.preset.metadata["crop"] == "random:7"


def test_batch_size_does_not_change_result():
    x = synthetic_latents(50)
    accs = []
    for bs in (1, 7, 50):
        acc = FitAccumulator("dct+pixel", (4, 16, 16), 6)
        for i in range(0, 50, bs):
            acc.update(x[i:i + bs])
        accs.append(acc)
    for other in accs[1:]:
        assert _rel_err(other.lf.covariance().numpy(), accs[0].lf.covariance().numpy()) < 1e-12
        assert _rel_err(other.hf.variance().numpy(), accs[0].hf.variance().numpy()) < 1e-12


def test_large_offset_is_numerically_stable():
    # a naive sum-of-squares accumulator loses all precision here; Chan's merge does not
    x = synthetic_latents(64).double() * 1e-3 + 1e4
    acc = FitAccumulator("pixel", (4, 16, 16))
    for i in range(0, 64, 8):
        acc.update(x[i:i + 8])
    ref = x.var(dim=0)
    assert _rel_err(acc.pixel.variance().numpy(), ref.numpy()) < 1e-6


def test_accumulator_memory_is_flat():
    acc = FitAccumulator("dct+pixel", (4, 16, 16), 3)
    sizes = []
    for i in range(3):
        acc.update(synthetic_latents(10, seed=i))
        sizes.append(sum(t.numel() for t in (acc.lf.mean, acc.lf.c2, acc.hf.mean, acc.hf.m2)))
    assert sizes[0] == sizes[-1]


def test_singular_covariance_warns_but_fits():
    x = synthetic_latents(5)  # 5 images, 6*4 = 24 LF values
    with pytest.warns(UserWarning, match="singular"):
        result = fit(x, lambda b: b, "dct+pixel", 6, batch_size=2)
    assert result.images == 5
    assert result.warnings and "singular" in result.warnings[0]
    evals = torch.linalg.eigvalsh(result.preset.tensors["lf_cov"].double())
    assert (evals > 1e-4 * evals.max()).sum() <= 4  # rank <= N - 1


def test_out_of_memory_halves_the_batch_and_retries():
    calls = []

    def picky_encoder(batch):
        calls.append(batch.shape[0])
        if batch.shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch

    x = synthetic_latents(16)
    result = fit(x, picky_encoder, "pixel", batch_size=8)
    assert result.images == 16
    assert calls[:3] == [8, 4, 2]  # halved until it fits...
    assert all(c <= 2 for c in calls[2:])  # ...and stays small for the rest of the fit
    ref = FitAccumulator("pixel", (4, 16, 16))
    ref.update(x)
    assert _rel_err(result.accumulator.pixel.mean.numpy(), ref.pixel.mean.numpy()) < 1e-12


def test_other_encoder_errors_propagate():
    def broken(batch):
        raise RuntimeError("shape mismatch in conv")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        fit(synthetic_latents(4), broken, "pixel")


def test_interrupt_stops_and_discards():
    seen = []

    def stop():
        return len(seen) >= 2

    def enc(batch):
        seen.append(batch.shape[0])
        return batch

    with pytest.raises(FitInterrupted):
        fit(synthetic_latents(20), enc, "pixel", batch_size=4, should_stop=stop)
    assert len(seen) == 2


def test_nonfinite_latents_are_skipped_with_reason():
    x = synthetic_latents(10)

    def enc(batch):
        out = batch.clone()
        out[0, 0, 0, 0] = float("nan")  # first image of every batch breaks
        return out

    result = fit(x, enc, "pixel", batch_size=5)
    assert result.images == 8
    assert len(result.skipped) == 2
    assert all("NaN" in s.reason for s in result.skipped)
    assert torch.isfinite(result.preset.tensors["mean"]).all()


def test_folder_with_bad_files_reports_them(tmp_path, coco128, encoder):
    import shutil

    for f in list_image_files(coco128)[:3]:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    progress = []
    result = fit(tmp_path, encoder, "pixel", size=SIZE, batch_size=2,
                 progress=lambda d, t: progress.append((d, t)))
    assert result.images == 3
    assert sorted(s.path for s in result.skipped) == ["broken.png", "empty.jpg"]
    assert result.preset.metadata["skipped"] == "2"
    assert progress and progress[-1][0] == progress[-1][1]


def test_no_usable_images_is_a_clear_error(tmp_path, encoder):
    (tmp_path / "a.png").write_bytes(b"junk")
    with pytest.raises(NoUsableImagesError, match="a.png"):
        fit(tmp_path, encoder, "pixel", size=SIZE)


def test_fit_passes_batches_to_device_and_dtype():
    seen = []

    def enc(batch):
        seen.append(batch.dtype)
        return batch.float()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(synthetic_latents(4), enc, "pixel", dtype=torch.float64, device="cpu")
    assert seen and all(d == torch.float64 for d in seen)


# --- the batch size when the caller does not choose one (issue: fit memory on CPU) ---


def test_auto_batch_size_is_one_on_the_cpu():
    from slb.fitting import auto_batch_size

    for size in (64, 512, 1024):
        assert auto_batch_size("cpu", size) == 1
        assert auto_batch_size(None, size) == 1


def test_auto_batch_size_on_cuda_follows_free_memory(monkeypatch):
    from slb import fitting

    free = {"bytes": 80e9}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (free["bytes"], 80e9))
    # fp16 at 512 px: 2.5 GB an image against half of the free memory, at most 8
    assert fitting.auto_batch_size("cuda", 512, torch.float16) == fitting.MAX_AUTO_BATCH
    free["bytes"] = 12e9
    assert fitting.auto_batch_size("cuda", 512, torch.float16) == 2  # 6 GB // 2.5 GB
    assert fitting.auto_batch_size("cuda", 512, torch.float32) == 1  # 5 GB an image
    assert fitting.auto_batch_size("cuda", 256, torch.float16) == 8  # a quarter of the pixels
    free["bytes"] = 1e9
    assert fitting.auto_batch_size("cuda", 512, torch.float16) == 1  # never below one


def test_auto_batch_size_survives_a_failing_memory_query(monkeypatch):
    from slb import fitting

    def broken(dev=None):
        raise RuntimeError("CUDA driver gone")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", broken)
    assert fitting.auto_batch_size("cuda", 512) == 1


@pytest.mark.parametrize(("chosen", "expected"), [(None, [1] * 5), (2, [2, 2, 1]), (5, [5])])
def test_fit_keeps_an_explicit_batch_size_and_defaults_to_one_on_cpu(chosen, expected):
    images = torch.rand(5, 3, 64, 64)
    seen = []

    def encode(batch):
        seen.append(batch.shape[0])
        return torch.nn.functional.avg_pool2d(batch, 8)[:, :3].repeat(1, 2, 1, 1)[:, :4]

    fit(images, encode, "pixel", size=64, batch_size=chosen, device="cpu")
    assert seen == expected
