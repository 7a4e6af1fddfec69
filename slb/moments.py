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


class _Moments:
    """Count, mean and summed deviation products, merged with Chan et al.'s update.

    Subclasses say how a batch is reduced and what the cross term of two means is (a square
    per element, or an outer product).
    """

    def __init__(self, mean: torch.Tensor, m2: torch.Tensor) -> None:
        self.count = 0
        self.mean, self.m2 = mean, m2

    def _cross(self, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _merge(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + self._cross(delta) * (n_a * n_b / n)
        self.count = n

    def _merge_other(self, other: _Moments) -> None:
        if other.count:
            self._merge(other.count, other.mean.to(self.mean.device),
                        other.m2.to(self.m2.device))

    def _scaled(self) -> torch.Tensor:
        """The unbiased estimate ``m2 / (N - 1)``; zero below two samples."""
        if self.count < 2:
            return torch.zeros_like(self.m2)
        return self.m2 / (self.count - 1)


class ElementMoments(_Moments):
    """Per-element count, mean and sum of squared deviations of same-shaped samples."""

    def __init__(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
        self.shape = tuple(shape)
        self.device = _acc_device(torch.device(device))
        zeros = torch.zeros(self.shape, dtype=torch.float64, device=self.device)
        super().__init__(zeros, zeros.clone())

    def _cross(self, delta: torch.Tensor) -> torch.Tensor:
        return delta**2

    def update(self, batch: torch.Tensor) -> None:
        """Add a batch ``(B, *shape)`` of samples."""
        if tuple(batch.shape[1:]) != self.shape:
            raise ValueError(f"sample shape {tuple(batch.shape[1:])} does not match {self.shape}")
        if batch.shape[0] == 0:
            return
        x = batch.to(device=self.device, dtype=torch.float64)
        mean_b = x.mean(dim=0)
        self._merge(x.shape[0], mean_b, ((x - mean_b) ** 2).sum(dim=0))

    def merge(self, other: ElementMoments) -> None:
        """Fold another accumulator over a disjoint set of samples into this one."""
        if other.shape != self.shape:
            raise ValueError(f"cannot merge moments of shape {other.shape} into {self.shape}")
        self._merge_other(other)

    def variance(self) -> torch.Tensor:
        """Unbiased variance (divides by N-1); zero when fewer than two samples."""
        return self._scaled()


class VectorMoments(_Moments):
    """Count, mean and sum of outer products of deviations of vectors of length ``dim``."""

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.dim = int(dim)
        self.device = _acc_device(torch.device(device))
        super().__init__(torch.zeros(self.dim, dtype=torch.float64, device=self.device),
                         torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.device))

    @property
    def c2(self) -> torch.Tensor:
        return self.m2

    @c2.setter
    def c2(self, value: torch.Tensor) -> None:
        self.m2 = value

    def _cross(self, delta: torch.Tensor) -> torch.Tensor:
        return torch.outer(delta, delta)

    def update(self, batch: torch.Tensor) -> None:
        """Add a batch ``(B, dim)`` of vectors."""
        if batch.ndim != 2 or batch.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (B, {self.dim}), got {tuple(batch.shape)}")
        if batch.shape[0] == 0:
            return
        x = batch.to(device=self.device, dtype=torch.float64)
        dev = x - x.mean(dim=0)
        self._merge(x.shape[0], x.mean(dim=0), dev.T @ dev)

    def merge(self, other: VectorMoments) -> None:
        """Fold another accumulator over a disjoint set of samples into this one."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge {other.dim}-vectors into {self.dim}-vectors")
        self._merge_other(other)

    def covariance(self) -> torch.Tensor:
        """Unbiased covariance (divides by N-1), exactly symmetric; zero below two samples."""
        cov = self._scaled()
        return (cov + cov.T) / 2
