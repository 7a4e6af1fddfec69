"""Mixing a leak into the sampler's start (DESIGN section 6) and into img2img (7.3).

The target initial latent is ``x_T = sqrt(abar) L + sqrt(1-abar) eps`` (variance preserving)
or equivalently ``L + sigma0 eps`` (variance exploding, k-diffusion units). Each sampler
family scales the tensor it is handed differently, so :func:`sampler_input` returns the
tensor that makes the sampler's own scaling land exactly on the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .dct import lf_coefficients, lf_image

CONVENTIONS = ("ve", "ve_sgm", "vp")
# Below this weight sqrt(abar) on the leak the start carries no usable signal (for example a
# zero-terminal-SNR schedule, sqrt(abar) ~ 2e-4); the leak is then reported as having no effect.
MIN_LEAK_WEIGHT = 1e-3


@dataclass(frozen=True)
class StartConvention:
    """How the sampler turns the tensor it is handed into its first latent.

    ``ve``: k-diffusion, multiplies by ``sigma0``. ``ve_sgm``: k-diffusion with the "SGM noise
    multiplier" option, multiplies by ``sqrt(1 + sigma0^2)``. ``vp``: timestep samplers
    (DDIM, PLMS, UniPC), use it as ``x_T`` at a timestep with cumulative alpha ``abar``.
    """

    kind: str
    sigma0: float
    # What the sampler multiplies the handed tensor by, when it differs from the start level
    # (DPM fast/adaptive scale by the schedule's first sigma but start at the model's largest).
    multiplier: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONVENTIONS:
            raise ValueError(f"unknown sampler convention {self.kind!r}; expected {CONVENTIONS}")
        if not (self.sigma0 > 0 and math.isfinite(self.sigma0)):
            raise ValueError(f"the first noise level must be positive and finite, got "
                             f"{self.sigma0}")
        if self.multiplier is not None and not (self.multiplier > 0
                                                and math.isfinite(self.multiplier)):
            raise ValueError(f"the sampler's multiplier must be positive, got {self.multiplier}")

    @classmethod
    def ve(cls, sigma0: float, sgm_multiplier: bool = False) -> StartConvention:
        return cls("ve_sgm" if sgm_multiplier else "ve", float(sigma0))

    @classmethod
    def vp(cls, abar: float) -> StartConvention:
        if not 0 < abar < 1:
            raise ValueError(f"abar must lie in (0, 1), got {abar}")
        return cls("vp", math.sqrt((1.0 - abar) / abar))

    @property
    def abar(self) -> float:
        """Cumulative alpha of the start: ``1 / (1 + sigma0^2)``."""
        return 1.0 / (1.0 + self.sigma0**2)

    @property
    def leak_weight(self) -> float:
        """``sqrt(abar)``: how much of the leak reaches the VP-form start."""
        return math.sqrt(self.abar)

    @property
    def has_effect(self) -> bool:
        return self.leak_weight >= MIN_LEAK_WEIGHT


def sampler_input(noise: torch.Tensor, leak: torch.Tensor | None, convention: StartConvention,
                  strength: float = 1.0) -> torch.Tensor:
    """The tensor to hand the sampler instead of its unit noise ``eps``.

    ``leak`` is ``L``; the effective leak is ``strength * L``. Strength 0 (or no leak) returns
    ``noise`` itself, exactly the WebUI's own start.
    """
    if leak is None or strength == 0:
        return noise
    leak = leak.to(device=noise.device, dtype=torch.float32)
    eps = noise.to(torch.float32)
    s = float(strength)
    s0 = convention.sigma0
    # written as single fused operations where possible: this runs once per image
    if convention.kind == "vp":
        ab = convention.abar
        out = torch.add(eps * math.sqrt(1.0 - ab), leak, alpha=s * math.sqrt(ab))
    elif convention.kind == "ve" and convention.multiplier is None:
        out = torch.add(eps, leak, alpha=s / s0)
    else:
        m = sampler_scaling(convention)
        out = torch.add(eps * (s0 / m), leak, alpha=s / m)
    return out.to(noise.dtype)


def vp_target(noise: torch.Tensor, leak: torch.Tensor, convention: StartConvention,
              strength: float = 1.0) -> torch.Tensor:
    """The intended start in VP form, ``sqrt(abar) sL + sqrt(1-abar) eps`` (for checks)."""
    ab = convention.abar
    return math.sqrt(ab) * strength * leak + math.sqrt(1.0 - ab) * noise


def sampler_scaling(convention: StartConvention) -> float:
    """What the sampler multiplies the handed tensor by to get its first latent."""
    if convention.multiplier is not None:
        return convention.multiplier
    if convention.kind == "ve":
        return convention.sigma0
    if convention.kind == "ve_sgm":
        return math.sqrt(1.0 + convention.sigma0**2)
    return 1.0


def swap_lowfreq(init: torch.Tensor, leak: torch.Tensor, basis: torch.Tensor,
                 strength: float = 1.0, mask: torch.Tensor | None = None,
                 channels: torch.Tensor | None = None) -> torch.Tensor:
    """img2img: move the init latent's LF content toward the leak's (DESIGN 7.3).

    Returns ``init + s * M * (P(L) - P(init))`` where ``P`` projects onto the rows of
    ``basis`` (``(n, H*W)``, orthonormal), ``M`` is the inpaint mask (1 = regenerated) and
    ``channels`` restricts the move: a bool ``(C,)`` (whole channels) or ``(n, C)`` (single
    components of single channels). Where ``M`` is 0 (and on untouched channels) the result
    is bit-identical to ``init``; the dtype is kept.
    """
    if strength == 0:
        return init
    h, w = init.shape[-2:]
    x = init.to(torch.float32)
    zi = lf_coefficients(x, basis)
    zl = lf_coefficients(leak.to(x), basis)
    keep = torch.zeros((), dtype=torch.bool, device=init.device)
    if channels is not None and channels.ndim == 2:
        moved = channels.to(init.device)
        delta = float(strength) * lf_image((zl - zi) * moved.to(zl.dtype), basis, h, w)
        keep = ~moved.any(dim=0).view(-1, 1, 1)
    else:
        delta = float(strength) * (lf_image(zl, basis, h, w) - lf_image(zi, basis, h, w))
        if channels is not None:
            keep = ~channels.to(init.device).view(-1, 1, 1)
            delta = torch.where(keep, torch.zeros_like(delta), delta)
    if mask is not None:
        m = mask.to(device=init.device, dtype=torch.float32)
        delta = delta * m
        keep = keep | (m <= 0)
    out = (x + delta).to(init.dtype)
    return torch.where(keep, init, out)
