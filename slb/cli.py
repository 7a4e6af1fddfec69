"""``python -m slb``: presets outside the WebUI (DESIGN section 9)."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .fitting import FitAccumulator, FitInterrupted, fit
from .images import NoUsableImagesError
from .paper_import import import_paper_dir
from .preset import PRESET_SUFFIX, Preset, PresetError, load_preset, save_preset, validate_name
from .sampling import LF_MODES, IncompatiblePresetError, LeakSampler
from .settings import SettingsError, parse_means

REPO_STATS = Path(__file__).resolve().parents[1] / "stats"


class CliError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def _shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 4,64,64), got {text!r}") from None
    if min(c, h, w) < 1:
        raise argparse.ArgumentTypeError(f"shape {text!r} must be positive")
    return c, h, w


def _means(text: str) -> dict[int, float]:
    try:
        return parse_means(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolve_preset(arg: str, folders: Sequence[Path]) -> Preset | None:
    """A preset file path, a preset name in ``folders``, or ``manual`` (None)."""
    if arg.lower() in ("manual", "none"):
        return None
    path = Path(arg)
    if path.suffix == PRESET_SUFFIX or path.exists():
        if not path.is_file():
            raise CliError(f"{arg}: no such preset file")
        return load_preset(path)
    for folder in folders:
        candidate = folder / f"{arg}{PRESET_SUFFIX}"
        if candidate.is_file():
            return load_preset(candidate)
    raise CliError(f"no preset {arg!r}: give a .safetensors path or a name in "
                   f"{', '.join(map(str, folders))}")


def _sampler(args: argparse.Namespace, shape: tuple[int, int, int] | None) -> LeakSampler:
    preset = resolve_preset(args.preset, args.presets_dir)
    if shape is None:
        shape = preset.latent_shape if preset is not None else (4, 64, 64)
    return LeakSampler(preset, shape, lf_mode=args.lf, means=args.means)


# --- commands --------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    try:
        preset = resolve_preset(args.preset, args.presets_dir)
    except PresetError as exc:
        print(f"unusable: {exc}")
        return 1
    if preset is None:
        raise CliError("'manual' is not a preset file")
    print(f"{preset.name}: {preset.summary()}")
    print(f"  file: {preset.path}  sha256: {preset.sha256[:10]}")
    if preset.coords:
        print(f"  LF pairs (u, v): {preset.coords}")
    for key in sorted(preset.metadata):
        print(f"  {key}: {preset.metadata[key]}")
    print("  valid: yes")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    validate_name(args.name)
    preset = import_paper_dir(args.dir, model_family=args.model_family)
    path = save_preset(preset, args.out_dir, args.name, overwrite=args.overwrite)
    print(f"imported {args.dir} as {path}: {preset.summary()}")
    print(f"  note: {preset.metadata.get('description', '')}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    sampler = _sampler(args, args.shape)
    subseeds = [args.subseed] if args.subseed is not None else None
    leak = sampler.draw([args.seed], subseeds, args.subseed_strength)[0] * args.strength
    np.save(args.out, leak.numpy().astype(np.float32))
    print(f"wrote {args.out}: leak {tuple(leak.shape)}, channel means "
          f"{[round(float(m), 4) for m in leak.mean(dim=(1, 2))]}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .preview import preview_image

    sampler = _sampler(args, args.shape)
    leaks = sampler.draw([args.seed + i for i in range(args.count)]) * args.strength
    family = sampler.preset.model_family if sampler.preset is not None else "sd1"
    preview_image(list(leaks), family, scale=args.scale).save(args.out)
    print(f"wrote {args.out}: {args.count} leak(s) from seed {args.seed}")
    return 0


def _load_encoder(args: argparse.Namespace) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    device = torch.device(args.device)
    if args.encoder:
        module_name, _, attr = args.encoder.partition(":")
        if not attr:
            raise CliError("--encoder takes MODULE:FACTORY, e.g. mypkg.encoders:make_encoder")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(device), {"vae": attr, "encode_mode": "mean"}
    if not args.vae:
        raise CliError("fit needs an encoder: --vae DIR (a diffusers AutoencoderKL folder) or "
                       "--encoder MODULE:FACTORY")
    try:
        from diffusers import AutoencoderKL  # optional dependency
    except ImportError:
        raise CliError("--vae needs the optional package 'diffusers' (pip install diffusers); "
                       "or pass --encoder MODULE:FACTORY") from None
    vae = AutoencoderKL.from_pretrained(args.vae).to(device).eval()
    scale = float(vae.config.scaling_factor)

    def encode(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device=device, dtype=vae.dtype)
        return vae.encode(batch).latent_dist.mode().float() * scale

    guess = "sdxl" if abs(scale - 0.13025) < 1e-6 else "unknown"
    return encode, {"vae": Path(args.vae).name, "scale_factor": scale, "encode_mode": "mean",
                    "model_family": guess}


def cmd_fit(args: argparse.Namespace) -> int:
    validate_name(args.name)
    target = Path(args.out_dir) / f"{args.name}{PRESET_SUFFIX}"
    if target.exists() and not args.overwrite and not args.partial:
        raise CliError(f"{target} exists; pass --overwrite to replace it")
    encode, meta = _load_encoder(args)
    if args.model_family != "auto":
        meta["model_family"] = args.model_family
    meta.setdefault("model_family", "unknown")
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 1.0 or done == total:
            last[0] = time.perf_counter()
            print(f"\r  {done}/{total} images", end="", file=sys.stderr, flush=True)

    result = fit(args.folder, encode, args.kind, args.n_components, size=args.size,
                 crop=args.crop, recursive=args.recursive, batch_size=args.batch_size,
                 progress=progress, description=args.description, **meta)
    print(file=sys.stderr)
    for skip in result.skipped:
        print(f"  skipped {skip.path}: {skip.reason}")
    for note in result.warnings:
        print(f"  warning: {note}")
    if args.partial:
        result.accumulator.save_partial(args.partial, {"image_size": str(args.size)})
        print(f"wrote partial fit {args.partial}: {result.images} images")
        return 0
    path = save_preset(result.preset, args.out_dir, args.name, overwrite=args.overwrite)
    print(f"fitted {result.images} images ({len(result.skipped)} skipped) in "
          f"{result.seconds:.1f} s -> {path}")
    print(f"  {result.preset.summary()}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    validate_name(args.name)
    merged, meta = FitAccumulator.load_partial(args.partials[0])
    for extra in args.partials[1:]:
        part, _ = FitAccumulator.load_partial(extra)
        merged.merge(part)
    size = int(meta.get("image_size", merged.latent_shape[1] * 8))
    preset = merged.to_preset(image_size=(size, size), model_family=args.model_family,
                              description=f"merged from {len(args.partials)} partial fits")
    path = save_preset(preset, args.out_dir, args.name, overwrite=args.overwrite)
    print(f"merged {len(args.partials)} partial fits ({merged.count} images) -> {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), steps=args.steps, seed=args.seed)
    return 0


# --- parser ----------------------------------------------------------------------------

def _add_leak_options(p: argparse.ArgumentParser, shape_required: bool) -> None:
    p.add_argument("preset", help="preset file (.safetensors), preset name, or 'manual'")
    p.add_argument("--shape", type=_shape, required=shape_required,
                   help="latent shape C,H,W (default: the preset's own)")
    p.add_argument("--seed", type=int, default=0, help="image seed (default 0)")
    p.add_argument("--strength", type=float, default=1.0, help="leak strength s (default 1)")
    p.add_argument("--lf", choices=LF_MODES, default="sampled",
                   help="low frequencies: sampled from the preset, or zero")
    p.add_argument("--means", type=_means, default={},
                   help="fixed channel means, e.g. 0:1.5,2:-0.5")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m slb", description="Signal-leak bias presets: inspect, import, sample, "
        "preview and fit them outside the WebUI.")
    parser.add_argument("--version", action="version", version=f"slb {__version__}")
    parser.add_argument("--presets-dir", type=Path, action="append", default=None,
                        help="folder to look up preset names in (repeatable; default: stats/)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="summary and validation of a preset")
    p.add_argument("preset", help="preset file (.safetensors) or preset name")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("import", help="convert the paper's statistics directory to a preset")
    p.add_argument("dir", help="folder with stats.safetensors and statistic_type.txt")
    p.add_argument("name", help="name of the new preset")
    p.add_argument("--out-dir", default=".", help="where to write the preset (default: .)")
    p.add_argument("--model-family", choices=("sd1", "sd2", "sdxl", "unknown"),
                   default="unknown", help="latent space the statistics were computed in")
    p.add_argument("--overwrite", action="store_true", help="replace an existing preset")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("sample", help="draw a leak and save it as .npy")
    _add_leak_options(p, shape_required=True)
    p.add_argument("--subseed", type=int, default=None, help="variation seed")
    p.add_argument("--subseed-strength", type=float, default=0.0, help="variation strength")
    p.add_argument("--out", required=True, help="output .npy file")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("preview", help="draw leaks and save them as a PNG (linear RGB approx.)")
    _add_leak_options(p, shape_required=False)
    p.add_argument("--count", type=int, default=4, help="how many seeds side by side")
    p.add_argument("--scale", type=int, default=4, help="enlargement of each latent pixel")
    p.add_argument("--out", required=True, help="output .png file")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("fit", help="fit a preset from an image folder with your own encoder")
    p.add_argument("folder", help="image folder")
    p.add_argument("name", help="name of the new preset")
    enc = p.add_mutually_exclusive_group()
    enc.add_argument("--vae", help="a diffusers AutoencoderKL folder (needs diffusers)")
    enc.add_argument("--encoder", help="MODULE:FACTORY; FACTORY(device) returns a callable "
                     "mapping (B,3,S,S) in [-1,1] to scaled latents")
    p.add_argument("--kind", choices=("pixel", "dct+pixel"), default="dct+pixel")
    p.add_argument("-n", "--n-components", type=int, default=3,
                   help="LF components for dct+pixel (default 3)")
    p.add_argument("--size", type=int, default=512, help="crop size in pixels (default 512)")
    p.add_argument("--crop", default="center", help="center or random:<seed>")
    p.add_argument("--recursive", action="store_true", help="include sub-folders")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model-family", choices=("auto", "sd1", "sd2", "sdxl", "unknown"),
                   default="auto")
    p.add_argument("--description", default="", help="free text stored in the preset")
    p.add_argument("--out-dir", default=".", help="where to write the preset (default: .)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing preset")
    p.add_argument("--partial", help="write a mergeable partial fit here instead of a preset "
                   "(for fitting shards on several machines; see 'merge')")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("merge", help="merge partial fits (from 'fit --partial') into a preset")
    p.add_argument("partials", nargs="+", help="partial fit files")
    p.add_argument("--name", required=True, help="name of the new preset")
    p.add_argument("--model-family", choices=("sd1", "sd2", "sdxl", "unknown"),
                   default="unknown")
    p.add_argument("--out-dir", default=".", help="where to write the preset (default: .)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing preset")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("demo", help="the Gaussian world: see the effect without any weights")
    p.add_argument("--out", default="gaussian_world.png", help="figure to write (PNG)")
    p.add_argument("--steps", type=int, default=30, help="sampling steps (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.presets_dir is None:
        args.presets_dir = [REPO_STATS]
    try:
        return int(args.func(args))
    except (CliError, PresetError, IncompatiblePresetError, NoUsableImagesError, FitInterrupted,
            SettingsError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; nothing was saved", file=sys.stderr)
        return 130
