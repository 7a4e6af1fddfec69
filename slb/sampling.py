"""Drawing a signal leak ``L`` from a preset (DESIGN section 5).

A :class:`LeakSampler` prepares a preset once for a target latent shape, device and dtype
(resized maps, scaled LF statistics, covariance factors, conditional Gaussian for fixed
channel means); each draw then costs one batch of CPU normals, one transfer and a few
small matrix products. Randomness comes only from CPU ``torch.Generator`` objects seeded
from the image seed mixed with a fixed salt, so a leak is identical on every device and
independent of the WebUI's own noise for the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .dct import lowfreq_basis
from .preset import Preset

LF_MODES = ("sampled", "zero")
# Mixed into every seed so the leak's normals differ from the WebUI's noise for that seed.
LEAK_SEED_SALT = 0x5EED_51E1_EA4B_1A55
_MASK64 = (1 << 64) - 1
MAX_SEED = _MASK64  # seeds are 64-bit: larger ones would wrap onto small ones


class IncompatiblePresetError(ValueError):
    """The preset cannot serve this latent (for example another channel count)."""


def leak_seed(seed: int) -> int:
    """The generator seed for an image seed: splitmix64 of ``seed`` xor a fixed salt.

    Seeds must lie in 0..2**64-1: beyond that they would wrap onto other seeds' leaks.
    """
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed {seed} is outside 0..{MAX_SEED}")
    x = (int(seed) ^ LEAK_SEED_SALT) & _MASK64
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from ``low`` (t=0) to ``high`` (t=1), as variation seeds use.

    Falls back to linear interpolation when the two are nearly parallel.
    """
    lo = low.flatten().double()
    hi = high.flatten().double()
    dot = float(torch.dot(lo / lo.norm(), hi / hi.norm()).clamp(-1.0, 1.0))
    if abs(dot) > 0.9995:
        out = (1.0 - t) * lo + t * hi
    else:
        omega = math.acos(dot)
        so = math.sin(omega)
        out = (math.sin((1.0 - t) * omega) / so) * lo + (math.sin(t * omega) / so) * hi
    return out.to(low.dtype).reshape(low.shape)


def leak_normals(count: int, seed: int, subseed: int | None = None,
                 subseed_strength: float = 0.0) -> torch.Tensor:
    """``count`` standard normals (float32, CPU) for one image's leak.

    With a variation seed and ``subseed_strength > 0`` the draws of both seeds are combined
    by :func:`slerp`, so a small strength gives a small change.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(leak_seed(seed))
    xi = torch.randn(count, generator=gen, dtype=torch.float32)
    if subseed is not None and subseed_strength > 0:
        gen.manual_seed(leak_seed(subseed))
        xi = slerp(float(subseed_strength), xi, torch.randn(count, generator=gen))
    return xi


def resize_map(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a per-element map ``(C, h, w)``: bilinear when enlarging, area when shrinking.

    The same size is returned unchanged (bit-exact with the fitted map).
    """
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    y = x[None]
    big = (max(h, height), max(w, width))
    if big != (h, w):
        y = F.interpolate(y, size=big, mode="bilinear", align_corners=False)
    if big != (height, width):
        y = F.interpolate(y, size=(height, width), mode="area")
    return y[0]


def _psd_factor(cov: torch.Tensor) -> torch.Tensor:
    """A factor ``A`` with ``A A^T = cov`` that works for singular matrices (eigenvalues < 0
    from round-off are clamped to 0)."""
    if cov.numel() == 0:
        return cov
    evals, evecs = torch.linalg.eigh((cov + cov.T) / 2)
    return evecs * evals.clamp(min=0).sqrt()


def normalize_means(means: Mapping[int | str, float] | None, channels: int) -> dict[int, float]:
    """Validate fixed channel means: integer channel keys in range, finite values."""
    out: dict[int, float] = {}
    for key, value in (means or {}).items():
        ok = not isinstance(key, bool) and (isinstance(key, int) or (
            isinstance(key, str) and key.strip().isascii() and key.strip().isdigit()))
        if not ok:
            raise ValueError(f"channel {key!r} is not a channel number")
        ch = int(key)
        if not 0 <= ch < channels:
            raise ValueError(f"channel {ch} is out of range for a {channels}-channel latent")
        out[ch] = _finite(value, f"mean for channel {ch}")
    return out


def _finite(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} is not a finite number")
    return number


class LeakSampler:
    """A preset (or manual mode, ``preset=None``) prepared for one latent shape and device.

    ``shape`` is ``(C, H, W)``; ``means`` maps channel -> fixed spatial mean of the leak;
    ``components`` maps ``(channel, u, v)`` -> the fixed amplitude of that low-frequency
    DCT pattern (DESIGN 5: resolution-independent; ``(c, 0, 0)`` is the mean);
    ``lf_mode`` is ``"sampled"`` or ``"zero"`` (only the high-frequency remainder is drawn).
    """

    def __init__(self, preset: Preset | None, shape: Sequence[int],
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 lf_mode: str = "sampled", means: Mapping[int | str, float] | None = None,
                 components: Mapping[tuple[int, int, int], float] | None = None) -> None:
        if lf_mode not in LF_MODES:
            raise ValueError(f"LF mode must be one of {LF_MODES}, not {lf_mode!r}")
        c, h, w = (int(s) for s in shape)
        self.shape = (c, h, w)
        self.device = torch.device(device)
        self.dtype = dtype
        self.preset = preset
        self.lf_mode = lf_mode
        self.means = normalize_means(means, c)
        self.components = normalize_components(components, self.shape)
        for ch, u, v in list(self.components):
            if (u, v) == (0, 0):  # a DC component is a channel mean
                self.means[ch] = self.components.pop((ch, u, v))
        if preset is not None and preset.channels != c:
            raise IncompatiblePresetError(
                f"preset {preset.name or '(unsaved)'} has {preset.channels} latent channels; "
                f"this model's latents have {c}")
        put = {"device": self.device, "dtype": dtype}
        self._fixed = torch.zeros(c, **put)
        self._fixed_mask = torch.zeros(c, dtype=torch.bool, device=self.device)
        for ch, val in self.means.items():
            self._fixed[ch] = val
            self._fixed_mask[ch] = True
        self.lf_draws = 0
        if preset is None:
            self.kind, self.draw_size = "manual", 0
        elif preset.kind == "pixel":
            self.kind = "pixel"
            self._mean = resize_map(preset.tensors["mean"].double(), h, w).to(**put)
            self._std = resize_map(preset.tensors["var"].double(), h, w).clamp(min=0).sqrt().to(
                **put)
            self.draw_size = c * h * w
        else:
            self.kind = "dct+pixel"
            self._prepare_dct(preset, put)

    def _prepare_dct(self, preset: Preset, put: dict) -> None:
        c, h, w = self.shape
        ph, pw = preset.latent_shape[1:]
        coords = preset.coords
        if any(u >= h or v >= w for u, v in coords):
            raise IncompatiblePresetError(f"preset {preset.name} has LF pairs that do not fit "
                                          f"a {h}x{w} latent")
        n = len(coords)
        # The same spatial pattern at the same amplitude needs coefficients scaled by
        # sqrt(HW / hw) for the orthonormal DCT.
        scale = math.sqrt((h * w) / (ph * pw))
        mu = preset.tensors["lf_mean"].double() * scale
        cov = preset.tensors["lf_cov"].double() * scale**2
        outside = sorted({(u, v) for _, u, v in self.components} - set(coords))
        if outside:
            raise IncompatiblePresetError(
                f"component(s) {', '.join(f'({u},{v})' for u, v in outside)} are not in preset "
                f"{preset.name or '(unsaved)'}'s low-frequency set {coords}; fix only those, "
                "or use a preset fitted with more components")
        fixed = {(ch, 0, 0): m for ch, m in self.means.items()} | self.components
        keys = sorted(fixed, key=lambda k: (coords.index(k[1:]), k[0]))
        fixed_idx = [coords.index((u, v)) * c + ch for ch, u, v in keys]
        fixed_val = torch.tensor([fixed[k] / amplitude_scale(k[1], k[2], h, w) for k in keys],
                                 dtype=torch.float64)
        free_idx = [i for i in range(n * c) if i not in set(fixed_idx)]
        # z = mu_full + F_full @ xi covers every case in one product: fixed entries have their
        # value in mu_full and a zero row in F_full; "zero" mode has no free draws at all.
        mu_full = torch.zeros(n * c, dtype=torch.float64)
        factor = torch.zeros(n * c, len(free_idx), dtype=torch.float64)
        if fixed_idx:
            mu_full[fixed_idx] = fixed_val
        if self.lf_mode == "sampled":
            ri = torch.tensor(free_idx, dtype=torch.long)
            if fixed_idx:
                # Conditional Gaussian of the free LF values given the fixed DC terms (Schur
                # complement), with a pseudo-inverse so singular covariances work.
                fi = torch.tensor(fixed_idx)
                s_ff = cov[fi][:, fi]
                s_rf = cov[ri][:, fi]
                gain = s_rf @ torch.linalg.pinv(s_ff, hermitian=True)
                cond_mu = mu[ri] + gain @ (fixed_val - mu[fi])
                cond_cov = cov[ri][:, ri] - gain @ s_rf.T
            else:
                cond_mu, cond_cov = mu, cov
            mu_full[ri] = cond_mu
            factor[ri] = _psd_factor(cond_cov)
            self.lf_draws = len(free_idx)
        else:
            self.lf_draws = 0
        # Stored channel-major ((c, k) order), so the LF image is one matrix product with the
        # basis; the file's component-major order is z[k * C + c].
        to_cm = torch.tensor([k * c + ch for ch in range(c) for k in range(n)])
        self._lf_mu = mu_full[to_cm].to(**put)
        self._lf_factor_t = factor[to_cm].T.contiguous().to(**put)  # (free, C * n)
        self._n = n
        self._basis = lowfreq_basis(coords, h, w, **put)
        self._basis_t = self._basis.T.contiguous()
        self._hf_mean = resize_map(preset.tensors["hf_mean"].double(), h, w).to(**put)
        self._hf_std = resize_map(preset.tensors["hf_var"].double(), h, w).clamp(
            min=0).sqrt().to(**put)
        self.draw_size = c * h * w + self.lf_draws

    # --- drawing ------------------------------------------------------------------------
    def normals(self, seeds: Sequence[int], subseeds: Sequence[int] | None = None,
                subseed_strength: float = 0.0) -> torch.Tensor:
        """The standard normals for each seed: ``(B, draw_size)`` float32 on the CPU."""
        subs = list(subseeds) if subseeds is not None else [None] * len(seeds)
        if len(subs) != len(seeds):
            raise ValueError("need one variation seed per seed")
        if self.draw_size == 0:
            return torch.zeros(len(seeds), 0)
        return torch.stack([leak_normals(self.draw_size, s, sub, subseed_strength)
                            for s, sub in zip(seeds, subs, strict=True)])

    def from_normals(self, xi: torch.Tensor) -> torch.Tensor:
        """Turn normals ``(B, draw_size)`` into leaks ``(B, C, H, W)`` on the device."""
        c, h, w = self.shape
        b = xi.shape[0]
        xi = xi.to(device=self.device, dtype=self.dtype)
        if self.kind == "manual":
            leak = self._fixed.view(1, c, 1, 1).expand(b, c, h, w).clone()
            if self.components:
                leak = leak + self._manual_patterns()
            return leak
        # LF normals come first, so a seed gives the same low frequencies at any resolution.
        lf_xi, spatial = xi[:, :self.lf_draws], xi[:, self.lf_draws:].view(b, c, h, w)
        if self.kind == "pixel":
            leak = torch.addcmul(self._mean, self._std, spatial)
            if self.lf_mode == "zero":
                leak = leak - leak.mean(dim=(-2, -1), keepdim=True)
            if self.means:
                shift = self._fixed - leak.mean(dim=(-2, -1))
                leak = leak + torch.where(self._fixed_mask, shift, torch.zeros_like(shift))[
                    ..., None, None]
            for (ch, u, v), amp in self.components.items():
                # replace the drawn coefficient exactly (the basis is orthonormal, so the
                # other components stay as drawn)
                basis = self._pattern_basis(u, v)
                now = leak[:, ch].flatten(1) @ basis
                target = amp / amplitude_scale(u, v, h, w)
                leak[:, ch] += ((target - now)[:, None] * basis).view(b, h, w)
            return leak
        # dct+pixel, in four fused products. The remainder has no LF content by construction;
        # the per-element draw puts a little back, which is removed so fixed means and LF
        # "zero" hold exactly: leak = hf + (z - P(hf)) @ B, with P(hf) = hf @ B^T.
        n = self._n
        hf = torch.addcmul(self._hf_mean, self._hf_std, spatial).view(b * c, h * w)
        if self.lf_draws:
            z = torch.addmm(self._lf_mu, lf_xi, self._lf_factor_t)
        else:
            z = self._lf_mu.expand(b, c * n)
        correction = torch.addmm(z.reshape(b * c, n), hf, self._basis_t, alpha=-1.0)
        return torch.addmm(hf, correction, self._basis).view(b, c, h, w)

    def draw(self, seeds: Sequence[int], subseeds: Sequence[int] | None = None,
             subseed_strength: float = 0.0) -> torch.Tensor:
        """One independent leak per seed: ``(B, C, H, W)`` on the sampler's device and dtype."""
        return self.from_normals(self.normals(seeds, subseeds, subseed_strength))

    def draw_one(self, seed: int) -> torch.Tensor:
        """The leak ``(C, H, W)`` for a single seed."""
        return self.draw([seed])[0]

    def _pattern_basis(self, u: int, v: int) -> torch.Tensor:
        """The orthonormal DCT basis image of ``(u, v)`` at this size, flattened."""
        _, h, w = self.shape
        return lowfreq_basis([(u, v)], h, w, device=self.device, dtype=self.dtype)[0]

    def _manual_patterns(self) -> torch.Tensor:
        """Manual mode's non-DC part: the sum of ``a * cos(..) cos(..)`` of each component."""
        c, h, w = self.shape
        out = torch.zeros(c, h * w, device=self.device, dtype=self.dtype)
        for (ch, u, v), amp in self.components.items():
            out[ch] += self._pattern_basis(u, v) * (amp / amplitude_scale(u, v, h, w))
        return out.view(1, c, h, w)

    def lowfreq_projector(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The LF basis the img2img swap moves (DESIGN 7.3) and which of its components move.

        Returns ``(basis (n, H*W), mask)`` with ``mask`` a bool ``(n, C)`` (None: all).
        ``dct+pixel``: the preset's LF set at this size, all channels. ``pixel``: the DC term
        (channel means) of all channels plus any fixed component. Manual: exactly the fixed
        components (a fixed mean is the DC term of its channel).
        """
        c, h, w = self.shape
        if self.kind == "dct+pixel":
            return self._basis, None
        pairs = sorted({(0, 0)} | {(u, v) for _, u, v in self.components})
        basis = lowfreq_basis(pairs, h, w, device=self.device, dtype=self.dtype)
        mask = torch.zeros(len(pairs), c, dtype=torch.bool, device=self.device)
        if self.kind == "pixel":
            mask[0] = True
        else:
            mask[0] = self._fixed_mask
        for ch, u, v in self.components:
            mask[pairs.index((u, v)), ch] = True
        return basis, mask


def amplitude_scale(u: int, v: int, height: int, width: int) -> float:
    """``alpha_u(H) alpha_v(W)``: a coefficient ``z`` of ``(u, v)`` draws the pattern
    ``cos(pi (2y+1) u / 2H) cos(pi (2x+1) v / 2W)`` at amplitude ``z * alpha_u alpha_v``
    (``alpha_0(N) = sqrt(1/N)``, else ``sqrt(2/N)``; DESIGN 5)."""
    return math.sqrt((1.0 if u == 0 else 2.0) / height) * math.sqrt(
        (1.0 if v == 0 else 2.0) / width)


def normalize_components(components: Mapping[tuple[int, int, int], float] | None,
                         shape: tuple[int, int, int]) -> dict[tuple[int, int, int], float]:
    """Validate fixed LF components: ``(channel, u, v)`` in range for ``shape``, finite."""
    c, h, w = shape
    out: dict[tuple[int, int, int], float] = {}
    for key, value in (components or {}).items():
        try:
            ch, u, v = (int(k) for k in key)
        except (TypeError, ValueError):
            raise ValueError(f"component {key!r} is not (channel, u, v)") from None
        if not 0 <= ch < c:
            raise ValueError(f"channel {ch} is out of range for a {c}-channel latent")
        if not (0 <= u < h and 0 <= v < w):
            raise ValueError(f"component ({u},{v}) does not fit a {h}x{w} latent")
        out[(ch, u, v)] = _finite(value, f"component ({ch}:{u},{v})")
    return out
