"""``python -m slb demo``: the Gaussian world as numbers and a figure."""

from __future__ import annotations

import io
import time
from pathlib import Path

from .files import atomic_write
from .gaussian_world import WorldReport, run_gaussian_world


def _figure(reports: list[WorldReport], out: Path, overwrite: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(6 * len(reports), 4.2))
    for ax, rep in zip(axes, reports, strict=True):
        lo = min(rep.data_dc.min(), rep.plain_dc.min(), rep.leak_dc.min())
        hi = max(rep.data_dc.max(), rep.plain_dc.max(), rep.leak_dc.max())
        bins = 60
        kw = {"bins": bins, "range": (lo, hi), "density": True, "histtype": "step", "lw": 2}
        ax.hist(rep.data_dc, color="black", label="data", **kw)
        ax.hist(rep.plain_dc, color="tab:red", label="plain-noise start", **kw)
        ax.hist(rep.leak_dc, color="tab:blue", label="signal-leak start", ls="--", **kw)
        ax.set_title(f"{rep.sampler}, sigma0 = {rep.sigma0:.2f}\nFréchet distance: plain "
                     f"{rep.fd_plain:.1f}, leak {rep.fd_leak:.1f}", fontsize=10)
        ax.set_xlabel("DC coefficient of channel 0 (brightness)")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    fig.suptitle("Gaussian world: a plain-noise start shrinks the low frequencies; the leak "
                 "restores them", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(out, buf.getvalue(), overwrite=overwrite)


def run_demo(out: Path, steps: int = 30, seed: int = 0, overwrite: bool = False
             ) -> list[WorldReport]:
    """Run the experiment, print its numbers and write the figure (needs matplotlib)."""
    start = time.perf_counter()
    reports = run_gaussian_world(steps=steps, seed=seed)
    for rep in reports:
        print("\n".join(rep.lines()))
    try:
        _figure(reports, out, overwrite)
    except ImportError:
        print("matplotlib is not installed: no figure written (pip install matplotlib)")
    else:
        print(f"figure: {out}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return reports


def lowfreq_figure(out: Path, overwrite: bool = False, seed: int = 0) -> None:
    """The Gaussian world with low-frequency control: generated brightness (channel 0) for a
    fixed DC term and fixed gradients, and for a reference's low frequencies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from .dct import dct2, idct2
    from .fitting import FitAccumulator
    from .gaussian_world import GaussianWorld, euler_sample, sd_alphas_cumprod, uniform_sigmas
    from .lowfreq import reference_components
    from .mixing import StartConvention, sampler_input
    from .sampling import LeakSampler

    world = GaussianWorld.default(shape=(4, 32, 32))
    gen = torch.Generator().manual_seed(seed)
    acc = FitAccumulator("dct+pixel", world.shape, 6)
    acc.update(world.sample(2048, gen))
    preset = acc.to_preset(image_size=(256, 256))
    sigmas = uniform_sigmas(sd_alphas_cumprod(), 30)
    conv = StartConvention.ve(float(sigmas[0]))
    reference = world.sample(1, gen)[0]
    rows = [("plain noise start", None), ("DC +1.5 (brighter)", {(0, 0, 0): 1.5}),
            ("DC -1.5 (darker)", {(0, 0, 0): -1.5}),
            ("left-right +1.5 (0,1)", {(0, 0, 1): 1.5}),
            ("top-bottom +1.5 (1,0)", {(0, 1, 0): 1.5}),
            ("reference's LF", reference_components(reference, preset.coords))]
    eps = torch.randn((4, *world.shape), generator=gen, dtype=torch.float64)
    fig, axes = plt.subplots(len(rows), 5, figsize=(7.5, 1.6 * len(rows)))
    for r, (label, comps) in enumerate(rows):
        if comps is None:
            start = eps
        else:
            leaks = LeakSampler(preset, world.shape, dtype=torch.float64,
                                components=comps).draw(list(range(4)))
            start = sampler_input(eps, leaks, conv)
        out_x = idct2(euler_sample(world.denoise_dct, dct2(start * conv.sigma0), sigmas))
        first = reference if label == "reference's LF" else None
        images = [first, *out_x] if first is not None else [None, *out_x]
        for col, img in enumerate(images):
            ax = axes[r, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.axis("off")
                if col == 0:
                    ax.text(0.5, 0.5, label, ha="center", va="center", fontsize=8, wrap=True)
                continue
            ax.imshow(img[0].numpy(), cmap="gray", vmin=-2.5, vmax=2.5)
            if col == 0:
                ax.set_title("reference", fontsize=8)
    fig.suptitle("Gaussian world, Euler: channel 0 of 4 generated latents per row", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write(out, buf.getvalue(), overwrite=overwrite)
