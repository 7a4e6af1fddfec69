import numpy as np
import pytest
import torch
from scipy.fft import dctn, idctn

from slb.dct import (
    dct2,
    dct_matrix,
    idct2,
    lf_coefficients,
    lf_image,
    lowfreq_basis,
    lowfreq_coords,
    paper_lowfreq_coords,
)


@pytest.mark.parametrize("shape", [(4, 8, 8), (2, 4, 13, 9), (1, 64, 48)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dct2_matches_scipy(shape, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    ref = dctn(x.double().numpy(), type=2, norm="ortho", axes=(-2, -1))
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    scale = np.abs(ref).max()
    assert np.abs(dct2(x).double().numpy() - ref).max() <= tol * scale
    back = idctn(ref, type=2, norm="ortho", axes=(-2, -1))
    assert np.abs(idct2(torch.from_numpy(ref).to(dtype)).double().numpy() - back).max() <= (
        tol * np.abs(back).max())


def test_dct_roundtrip_and_orthonormal():
    d = dct_matrix(17, dtype=torch.float64)
    assert torch.allclose(d @ d.T, torch.eye(17, dtype=torch.float64), atol=1e-12)
    x = torch.randn(3, 10, 12, dtype=torch.float64)
    assert torch.allclose(idct2(dct2(x)), x, atol=1e-12)


def test_dc_term_is_channel_mean_times_sqrt_hw():
    x = torch.randn(4, 16, 8, dtype=torch.float64)
    assert torch.allclose(dct2(x)[:, 0, 0], x.mean(dim=(1, 2)) * (16 * 8) ** 0.5)


def test_dct_runs_in_input_dtype():
    x = torch.randn(2, 8, 8, dtype=torch.float16)
    assert dct2(x.float()).dtype == torch.float32
    assert dct2(torch.randn(2, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_lowfreq_order():
    assert lowfreq_coords(1) == [(0, 0)]
    assert lowfreq_coords(3) == [(0, 0), (0, 1), (1, 0)]
    assert lowfreq_coords(6) == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (2, 0)]
    assert lowfreq_coords(10) == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2),
                                  (2, 1), (2, 2), (0, 3)]
    # radius never decreases and ties go row-major, for any n on any grid
    coords = lowfreq_coords(40, 64, 64)
    radii = [u * u + v * v for u, v in coords]
    assert radii == sorted(radii)
    for a, b in zip(coords, coords[1:], strict=False):
        if a[0] ** 2 + a[1] ** 2 == b[0] ** 2 + b[1] ** 2:
            assert a < b


def test_lowfreq_respects_grid_and_rejects_bad_n():
    assert lowfreq_coords(3, 1, 8) == [(0, 0), (0, 1), (0, 2)]
    with pytest.raises(ValueError):
        lowfreq_coords(0)
    with pytest.raises(ValueError):
        lowfreq_coords(5, 2, 2)


@pytest.mark.parametrize("size", [32, 64, 96])
def test_paper_selection_reproduces_numpy_argsort(size):
    # The paper's code: first n of np.argsort of the radius grid (unstable sort).
    x, y = np.meshgrid(np.arange(size), np.arange(size))
    k = np.sqrt(x**2 + y**2)
    rows, cols = np.unravel_index(np.argsort(k, axis=None)[:10], k.shape)
    expected = list(zip(rows.tolist(), cols.tolist(), strict=True))
    got = paper_lowfreq_coords(10, size, size)
    assert got == expected
    # whatever the tie order, the radii are the 10 smallest ones
    ours = lowfreq_coords(10, size, size)
    assert sorted(u * u + v * v for u, v in got) == [u * u + v * v for u, v in ours]


def test_basis_rows_are_dct_coefficients():
    x = torch.randn(2, 4, 12, 10, dtype=torch.float64)
    coords = lowfreq_coords(6, 12, 10)
    basis = lowfreq_basis(coords, 12, 10, dtype=torch.float64)
    assert torch.allclose(basis @ basis.T, torch.eye(6, dtype=torch.float64), atol=1e-12)
    z = lf_coefficients(x, basis)  # (2, 6, 4)
    full = dct2(x)
    for k, (u, v) in enumerate(coords):
        assert torch.allclose(z[:, k, :], full[:, :, u, v], atol=1e-12)
    # lf_image is the IDCT of the DCT restricted to the LF set
    restricted = torch.zeros_like(full)
    for u, v in coords:
        restricted[..., u, v] = full[..., u, v]
    assert torch.allclose(lf_image(z, basis, 12, 10), idct2(restricted), atol=1e-12)
