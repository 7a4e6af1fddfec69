"""Streaming, mergeable float64 moments (DESIGN 3.3).

Each batch is reduced with a two-pass float64 computation and merged with Chan et al.'s
pairwise update, so the result matches a two-pass computation over all samples to float64
round-off, memory does not grow with the number of samples, and partial results over
disjoint shards merge exactly into the result over their union.
"""

from __future__ import annotations

import torch


def _acc_device(device: torch.device) -> torch.device:
    # MPS has no float64: accumulate on the CPU there.
    return torch.device("cpu") if device.type == "mps" else device


class ElementMoments:
    """Per-element count, mean and sum of squared deviations of same-shaped samples."""

    def __init__(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
        self.shape = tuple(shape)
        self.device = _acc_device(torch.device(device))
        self.count = 0
        self.mean = torch.zeros(self.shape, dtype=torch.float64, device=self.device)
        self.m2 = torch.zeros(self.shape, dtype=torch.float64, device=self.device)

    def update(self, batch: torch.Tensor) -> None:
        """Add a batch ``(B, *shape)`` of samples."""
        if tuple(batch.shape[1:]) != self.shape:
            raise ValueError(f"sample shape {tuple(batch.shape[1:])} does not match {self.shape}")
        b = batch.shape[0]
        if b == 0:
            return
        x = batch.to(device=self.device, dtype=torch.float64)
        mean_b = x.mean(dim=0)
        m2_b = ((x - mean_b) ** 2).sum(dim=0)
        self._merge(b, mean_b, m2_b)

    def _merge(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (n_a * n_b / n)
        self.count = n

    def merge(self, other: ElementMoments) -> None:
        """Fold another accumulator over a disjoint set of samples into this one."""
        if other.shape != self.shape:
            raise ValueError(f"cannot merge moments of shape {other.shape} into {self.shape}")
        if other.count:
            self._merge(other.count, other.mean.to(self.device), other.m2.to(self.device))

    def variance(self) -> torch.Tensor:
        """Unbiased variance (divides by N-1); zero when fewer than two samples."""
        if self.count < 2:
            return torch.zeros_like(self.m2)
        return self.m2 / (self.count - 1)


class VectorMoments:
    """Count, mean and sum of outer products of deviations of vectors of length ``dim``."""

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.dim = int(dim)
        self.device = _acc_device(torch.device(device))
        self.count = 0
        self.mean = torch.zeros(self.dim, dtype=torch.float64, device=self.device)
        self.c2 = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.device)

    def update(self, batch: torch.Tensor) -> None:
        """Add a batch ``(B, dim)`` of vectors."""
        if batch.ndim != 2 or batch.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (B, {self.dim}), got {tuple(batch.shape)}")
        b = batch.shape[0]
        if b == 0:
            return
        x = batch.to(device=self.device, dtype=torch.float64)
        mean_b = x.mean(dim=0)
        dev = x - mean_b
        self._merge(b, mean_b, dev.T @ dev)

    def _merge(self, n_b: int, mean_b: torch.Tensor, c2_b: torch.Tensor) -> None:
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.c2 = self.c2 + c2_b + torch.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def merge(self, other: VectorMoments) -> None:
        """Fold another accumulator over a disjoint set of samples into this one."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge {other.dim}-vectors into {self.dim}-vectors")
        if other.count:
            self._merge(other.count, other.mean.to(self.device), other.c2.to(self.device))

    def covariance(self) -> torch.Tensor:
        """Unbiased covariance (divides by N-1), exactly symmetric; zero below two samples."""
        if self.count < 2:
            return torch.zeros_like(self.c2)
        cov = self.c2 / (self.count - 1)
        return (cov + cov.T) / 2
