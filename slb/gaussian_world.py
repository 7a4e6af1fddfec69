"""The Gaussian world: an end-to-end check of the paper's claim that needs no weights.

Latents are exactly Gaussian, independent in the DCT domain, with large low-frequency
variance as in real latents. The ideal denoiser is then known in closed form,
``D(x, sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu)``, applied per DCT coefficient.
We sample with a k-diffusion-style Euler loop on Stable Diffusion's schedule and with a DDIM
loop on the WebUI's DDIM timesteps, once from the WebUI's pure-noise start and once from
the start mixed with a leak drawn from a preset fitted on samples of the data.

Starting from pure noise, the probability-flow ODE keeps ``(x - mu) / sqrt(lambda + sigma^2)``
per coefficient, so a coefficient with data std ``s`` and mean ``m`` comes out with std
``s * sqrt(v0) / sqrt(s^2 + sigma0^2)`` and mean ``m * (1 - s / sqrt(s^2 + sigma0^2))`` when the
start has variance ``v0`` (``sigma0^2`` for k-diffusion) and mean 0: low frequencies shrink
toward zero. With the leak, the start has the right distribution and nothing shrinks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .dct import dct2, idct2
from .fitting import FitAccumulator
from .mixing import StartConvention, sampler_input, sampler_scaling
from .sampling import LeakSampler


def sd_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
                      ) -> torch.Tensor:
    """Stable Diffusion 1.x/2.x/XL training schedule ("scaled linear" betas), float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def uniform_sigmas(alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """k-diffusion's discrete schedule: timesteps evenly spaced from the last to 0, sigma
    interpolated in log space, a final 0 appended (the WebUI's Euler default)."""
    log_sigmas = (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).log()
    t = torch.linspace(len(log_sigmas) - 1, 0, steps, dtype=torch.float64)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=len(log_sigmas) - 1)
    frac = t - lo
    sig = ((1 - frac) * log_sigmas[lo] + frac * log_sigmas[hi]).exp()
    return torch.cat([sig, sig.new_zeros(1)])


def ddim_timesteps(steps: int, total: int = 1000) -> torch.Tensor:
    """The WebUI's DDIM timesteps (ascending; sampling starts at the last one)."""
    return (torch.arange(0, total, total // steps) + 1).clamp(0, total - 1)


@dataclass
class GaussianWorld:
    """Latents ``mu + IDCT(sqrt(lam) * xi)``: independent Gaussian DCT coefficients."""

    mean: torch.Tensor  # (C, h, w), latent-space mean
    dct_var: torch.Tensor  # (C, h, w), variance of each DCT coefficient

    @classmethod
    def default(cls, shape: tuple[int, int, int] = (4, 16, 16), dc_std: float = 20.0
                ) -> GaussianWorld:
        """Real-latent-like: strong DC (per-channel brightness/colour), decaying spectrum."""
        c, h, w = shape
        u = torch.arange(h, dtype=torch.float64)[:, None]
        v = torch.arange(w, dtype=torch.float64)[None, :]
        decay = 1.0 / (1.0 + u**2 + v**2) ** 1.5
        chan = torch.tensor([1.0, 0.8, 0.6, 0.7], dtype=torch.float64)[:c, None, None]
        lam = (dc_std * chan) ** 2 * decay + 0.04
        chan_means = torch.tensor([0.6, -0.5, 0.4, -0.7], dtype=torch.float64)[:c]
        mean = chan_means[:, None, None].expand(c, h, w).clone()
        return cls(mean=mean, dct_var=lam)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.mean.shape)  # type: ignore[return-value]

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        xi = torch.randn((n, *self.shape), generator=generator, dtype=torch.float64)
        return self.mean + idct2(self.dct_var.sqrt() * xi)

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """The exact posterior mean ``E[x0 | x0 + sigma * eps = x]``."""
        gain = self.dct_var / (self.dct_var + sigma * sigma)
        return self.mean + idct2(gain * dct2(x.double() - self.mean))

    def denoise_dct(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        """:meth:`denoise` in DCT coordinates (``z = dct2(x)``), where it is elementwise."""
        gain = self.dct_var / (self.dct_var + sigma * sigma)
        return self._dct_mean + gain * (z - self._dct_mean)

    @property
    def _dct_mean(self) -> torch.Tensor:
        return dct2(self.mean)

    def dct_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (diagonal) variance of the data in DCT coordinates."""
        return dct2(self.mean), self.dct_var


Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


def euler_sample(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Deterministic Euler on the probability-flow ODE (k-diffusion ``sample_euler``)."""
    x = x.double()
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        d = (x - denoise(x, s)) / s
        x = x + d * (s_next - s)
    return x


def ddim_sample(denoise: Denoiser, x: torch.Tensor, alphas_cumprod: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM (eta 0) from ``timesteps[-1]`` down, VP units throughout."""
    x = x.double()
    prev = torch.cat([timesteps.new_zeros(1), timesteps[:-1]])
    for i in reversed(range(len(timesteps))):
        a, a_prev = float(alphas_cumprod[timesteps[i]]), float(alphas_cumprod[prev[i]])
        sigma = math.sqrt((1 - a) / a)
        x0 = denoise(x / math.sqrt(a), sigma)
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return x


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray
                     ) -> float:
    """Fréchet distance between two Gaussians (as in FID).

    Uses ``tr sqrt(C1 C2) = tr sqrt(C2^1/2 C1 C2^1/2)``, a symmetric eigenvalue problem.
    """
    evals, evecs = np.linalg.eigh(cov2)
    root2 = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
    inner = np.linalg.eigvalsh(root2 @ cov1 @ root2)
    tr_covmean = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_covmean)


def _sample_fd(world: GaussianWorld, x: torch.Tensor) -> float:
    # FD is invariant under the orthonormal DCT; there the data covariance is diagonal.
    z = dct2(x.double()).flatten(1).numpy()
    mu_d, var_d = (t.flatten().numpy() for t in world.dct_moments())
    return frechet_distance(z.mean(0), np.cov(z, rowvar=False), mu_d, np.diag(var_d))


@dataclass
class WorldReport:
    """Numbers for one sampler: DC (channel 0) mean/std and Fréchet distances."""

    sampler: str
    sigma0: float
    data_dc_mean: float
    data_dc_std: float
    plain_dc_mean: float
    plain_dc_std: float
    leak_dc_mean: float
    leak_dc_std: float
    predicted_plain_dc_mean: float
    predicted_plain_dc_std: float
    fd_plain: float
    fd_leak: float
    plain_dc: np.ndarray
    leak_dc: np.ndarray
    data_dc: np.ndarray

    def lines(self) -> list[str]:
        return [
            f"[{self.sampler}] sigma0 = {self.sigma0:.4f}",
            f"  DC of channel 0 (data):  mean {self.data_dc_mean:+.3f}  std {self.data_dc_std:.3f}",
            f"  plain-noise start:       mean {self.plain_dc_mean:+.3f}  std "
            f"{self.plain_dc_std:.3f}  (closed form: mean {self.predicted_plain_dc_mean:+.3f}"
            f", std {self.predicted_plain_dc_std:.3f})",
            f"  leak start:              mean {self.leak_dc_mean:+.3f}  std {self.leak_dc_std:.3f}",
            f"  Frechet distance to data: plain {self.fd_plain:.2f}, leak {self.fd_leak:.2f} "
            f"({self.fd_plain / max(self.fd_leak, 1e-12):.1f}x lower with the leak)",
        ]


def run_gaussian_world(world: GaussianWorld | None = None, n_fit: int = 4096,
                       n_gen: int = 4096, steps: int = 30, n_components: int = 10,
                       seed: int = 0) -> list[WorldReport]:
    """Fit a preset on data samples, then sample with Euler and DDIM, with and without it."""
    world = world or GaussianWorld.default()
    gen = torch.Generator().manual_seed(seed)
    data = world.sample(n_fit, gen)
    acc = FitAccumulator("dct+pixel", world.shape, n_components)
    acc.update(data)
    preset = acc.to_preset(image_size=(world.shape[1] * 8, world.shape[2] * 8))
    leaks = LeakSampler(preset, world.shape, dtype=torch.float64).draw(
        list(range(seed * 100_000, seed * 100_000 + n_gen)))
    eps = torch.randn((n_gen, *world.shape), generator=gen, dtype=torch.float64)
    ac = sd_alphas_cumprod()
    s_dc = math.sqrt(float(world.dct_var[0, 0, 0]))
    m_dc = float(dct2(world.mean)[0, 0, 0])
    reference = world.sample(n_gen, gen)

    reports = []
    sigmas = uniform_sigmas(ac, steps)
    timesteps = ddim_timesteps(steps)
    a0 = float(ac[timesteps[-1]])
    # The samplers are linear in x apart from the denoiser, and the DCT is orthonormal, so
    # each loop runs in DCT coordinates where the exact denoiser is elementwise (fast); the
    # starts are mixed in latent space exactly as the extension does.
    den = world.denoise_dct
    runs = [("Euler (k-diffusion)", StartConvention.ve(float(sigmas[0])),
             lambda x: idct2(euler_sample(den, dct2(x), sigmas))),
            ("DDIM (timesteps)", StartConvention.vp(a0),
             lambda x: idct2(ddim_sample(den, dct2(x), ac, timesteps)))]
    for name, conv, run in runs:
        scale = sampler_scaling(conv)
        plain = run(eps * scale)
        leak = run(sampler_input(eps, leaks, conv) * scale)
        # The sampler's own start has variance (scale^2) in its units; in VE units that is
        # v0 = scale^2 / abar for timestep samplers and sigma0^2 for k-diffusion.
        v0 = scale**2 / (conv.abar if conv.kind == "vp" else 1.0)
        r = s_dc / math.sqrt(s_dc**2 + conv.sigma0**2)
        dcs = [dct2(t)[:, 0, 0, 0].numpy() for t in (reference, plain, leak)]
        reports.append(WorldReport(
            sampler=name, sigma0=conv.sigma0,
            data_dc_mean=float(dcs[0].mean()), data_dc_std=float(dcs[0].std()),
            plain_dc_mean=float(dcs[1].mean()), plain_dc_std=float(dcs[1].std()),
            leak_dc_mean=float(dcs[2].mean()), leak_dc_std=float(dcs[2].std()),
            predicted_plain_dc_mean=m_dc * (1 - r), predicted_plain_dc_std=r * math.sqrt(v0),
            fd_plain=_sample_fd(world, plain), fd_leak=_sample_fd(world, leak),
            data_dc=dcs[0], plain_dc=dcs[1], leak_dc=dcs[2]))
    return reports
