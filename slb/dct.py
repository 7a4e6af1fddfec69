"""Orthonormal 2-D DCT in torch, and the low-frequency (LF) component sets.

The DCT is two matrix products with cached basis matrices, so it runs on the latent's own
device and dtype (DESIGN 3.2). ``dct2`` equals scipy's ``dctn(x, type=2, norm="ortho",
axes=(-2, -1))`` and ``idct2`` is its inverse (the orthonormal DCT-III).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

Coord = tuple[int, int]


@functools.lru_cache(maxsize=64)
def _dct_matrix_cpu64(n: int) -> torch.Tensor:
    # Row k is the k-th orthonormal DCT-II basis vector: c_k cos(pi (2i+1) k / 2n).
    i = torch.arange(n, dtype=torch.float64)
    k = torch.arange(n, dtype=torch.float64)[:, None]
    mat = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    mat[0] = math.sqrt(1.0 / n)
    return mat


_DEVICE_CACHE: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}


def dct_matrix(n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
               ) -> torch.Tensor:
    """The ``(n, n)`` orthonormal DCT-II matrix ``D`` (so ``D @ x`` is the 1-D DCT of ``x``)."""
    if n < 1:
        raise ValueError(f"DCT size must be positive, got {n}")
    key = (n, str(torch.device(device)), dtype)
    mat = _DEVICE_CACHE.get(key)
    if mat is None:
        if len(_DEVICE_CACHE) > 256:  # bounded: sizes users ask for are few
            _DEVICE_CACHE.clear()
        mat = _dct_matrix_cpu64(n).to(device=device, dtype=dtype)
        _DEVICE_CACHE[key] = mat
    return mat


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two axes."""
    dh = dct_matrix(x.shape[-2], x.device, x.dtype)
    dw = dct_matrix(x.shape[-1], x.device, x.dtype)
    return dh @ x @ dw.T


def idct2(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (orthonormal 2-D DCT-III over the last two axes)."""
    dh = dct_matrix(coeffs.shape[-2], coeffs.device, coeffs.dtype)
    dw = dct_matrix(coeffs.shape[-1], coeffs.device, coeffs.dtype)
    return dh.T @ coeffs @ dw


def lowfreq_coords(n: int, height: int | None = None, width: int | None = None) -> list[Coord]:
    """The ``n`` frequency pairs ``(u, v)`` of smallest radius, ties broken row-major.

    ``u`` is the vertical (row) frequency, ``v`` the horizontal one. ``n=3`` gives
    ``(0,0), (0,1), (1,0)``. With a grid size, pairs outside ``height x width`` are excluded.
    """
    if n < 1:
        raise ValueError(f"the number of LF components must be at least 1, got {n}")
    h = n if height is None else height
    w = n if width is None else width
    if n > h * w:
        raise ValueError(f"{n} LF components do not fit a {h}x{w} latent")
    # The n smallest radii all lie within u, v < n, so a small candidate grid suffices.
    cands = [(u, v) for u in range(min(h, n)) for v in range(min(w, n))]
    cands.sort(key=lambda c: (c[0] * c[0] + c[1] * c[1], c[0], c[1]))
    return cands[:n]


def paper_lowfreq_coords(n: int, height: int, width: int) -> list[Coord]:
    """The LF pairs the paper's code selects for an ``height x width`` latent.

    That code does not store its pairs: it takes the first ``n`` entries of numpy's default
    (unstable) argsort of the radius grid ``sqrt(x^2 + y^2)`` built by ``np.meshgrid`` over the
    latent size. Tied pairs come out in an order that depends on the grid size and numpy's
    sort implementation, so this reproduces the same numpy call rather than a rule.
    """
    x, y = np.meshgrid(np.arange(height), np.arange(width))
    radius = np.sqrt(x**2 + y**2)
    flat = np.argsort(radius, axis=None)[:n]
    rows, cols = np.unravel_index(flat, radius.shape)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]


def lowfreq_basis(coords: list[Coord] | torch.Tensor, height: int, width: int,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                  ) -> torch.Tensor:
    """Basis images of the LF pairs at ``height x width``, flattened: shape ``(n, height*width)``.

    Row ``k`` is the orthonormal DCT basis image of ``(u_k, v_k)``; the rows are orthonormal, so
    ``x.flatten(-2) @ B.T`` gives the LF coefficients and ``z @ B`` rebuilds the LF image.
    """
    pairs = torch.as_tensor(coords, dtype=torch.long).reshape(-1, 2)
    if pairs.numel() and (int(pairs[:, 0].max()) >= height or int(pairs[:, 1].max()) >= width):
        raise ValueError(f"LF pairs {pairs.tolist()} do not fit a {height}x{width} latent")
    dh = _dct_matrix_cpu64(height)[pairs[:, 0]]  # (n, H)
    dw = _dct_matrix_cpu64(width)[pairs[:, 1]]  # (n, W)
    basis = (dh[:, :, None] * dw[:, None, :]).reshape(len(pairs), height * width)
    return basis.to(device=device, dtype=dtype)


def lf_coefficients(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """LF coefficients of ``x`` (``(..., C, H, W)``) as ``(..., n, C)`` (component-major)."""
    flat = x.flatten(-2)  # (..., C, HW)
    return (flat @ basis.T).transpose(-1, -2)


def lf_image(z: torch.Tensor, basis: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The image ``sum_k z[..., k, c] * basis_k`` of LF coefficients ``(..., n, C)``."""
    img = z.transpose(-1, -2) @ basis  # (..., C, HW)
    return img.unflatten(-1, (height, width))
