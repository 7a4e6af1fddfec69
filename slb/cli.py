"""``python -m slb``: presets outside the WebUI (DESIGN section 9).

Every error is one line on stderr and exit status 2 (``--debug`` shows the traceback). Values
are checked while parsing (:mod:`slb.cli_args`), output files and folders before any work;
outputs are written atomically and never replace a file without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import importlib
import io
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .cli_parser import build_parser
from .files import atomic_write, check_new_file, check_writable_folder, printable
from .fitting import fit
from .generation import LeakPlan, plan_generation, resolve_reference
from .image_source import names_an_archive, open_image_source
from .limits import MAX_PREVIEW_PIXELS
from .lowfreq import LowFreqError, decode_reference, reference_hash, reference_pixels
from .paper_import import import_paper_dir
from .partials import merge_partials, preset_from_partial, save_partial
from .preset import PRESET_SUFFIX, Preset, PresetError, load_preset, save_preset, validate_name
from .sampling import LeakSampler
from .settings import MANUAL, LeakSettings, SettingsError

REPO_STATS = Path(__file__).resolve().parents[1] / "stats"


class CliError(Exception):
    """A user error: printed without a traceback, exit status 2."""


class _Progress:
    """A ``\\r`` progress line on stderr, ended before anything else is printed."""

    open = False

    def show(self, text: str) -> None:
        print(f"\r{text}", end="", file=sys.stderr, flush=True)
        _Progress.open = True

    @staticmethod
    def end() -> None:
        if _Progress.open:
            print(file=sys.stderr, flush=True)
            _Progress.open = False


def resolve_preset(arg: str, folders: Sequence[Path]) -> Preset | None:
    """A preset file path, a preset name in ``folders``, or ``manual`` (None)."""
    if arg.lower() in ("manual", "none"):
        return None
    path = Path(arg)
    if path.suffix == PRESET_SUFFIX or path.exists():
        if not path.exists():
            raise CliError(f"{printable(arg)}: no such preset file")
        return load_preset(path)
    for folder in folders:
        candidate = folder / f"{arg}{PRESET_SUFFIX}"
        if candidate.exists():
            return load_preset(candidate)
    raise CliError(f"no preset {printable(arg)!r}: give a .safetensors path or a name in "
                   f"{', '.join(map(str, folders))}")


def _sampler(args: argparse.Namespace, shape: tuple[int, int, int] | None) -> LeakSampler:
    """The leak the arguments describe, with components, colour and reference resolved."""
    preset = resolve_preset(args.preset, args.presets_dir)
    if shape is None:
        shape = preset.latent_shape if preset is not None else (4, 64, 64)
    dc = {c: a for (c, u, v), a in args.components.items() if (u, v) == (0, 0)}
    comps = {k: a for k, a in args.components.items() if k[1:] != (0, 0)}
    try:
        settings = LeakSettings(enabled=True, preset=MANUAL if preset is None else "preset",
                                strength=args.strength, lf=args.lf, means={**dc, **args.means},
                                components=comps, colour=args.colour or "")
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    family = args.model_family
    if family == "auto":
        family = preset.model_family if preset is not None else "sd1"
    plan = plan_generation(settings, lambda _name: preset, model_channels=shape[0],
                           model_family=family, allow_other_families=True)
    if plan.reason:
        raise CliError(plan.reason)
    if args.reference is not None:
        plan = _with_reference(args, plan, shape)
    s = plan.settings
    return LeakSampler(plan.preset, shape, lf_mode=s.lf, means=s.means, components=s.components)


def _with_reference(args: argparse.Namespace, plan: LeakPlan, shape: tuple[int, int, int]
                    ) -> LeakPlan:
    from PIL import Image

    if not (args.vae or args.encoder):
        raise CliError("--reference needs an encoder: --vae DIR or --encoder MODULE:FACTORY")
    try:
        with Image.open(args.reference) as img:
            image = decode_reference(img.convert("RGB"))
    except (OSError, LowFreqError) as exc:
        raise CliError(f"--reference {printable(args.reference)}: {printable(exc)}") from None
    encode, _ = _load_encoder(args)
    with torch.no_grad():
        latent = encode(reference_pixels(image, shape[2] * 8, shape[1] * 8).to(args.device))
    return resolve_reference(plan, latent[0].float().cpu(), reference_hash(image))


# --- commands --------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    try:
        preset = resolve_preset(args.preset, args.presets_dir)
    except PresetError as exc:
        print(f"unusable: {printable(exc)}")
        return 1
    if preset is None:
        raise CliError("'manual' is not a preset file")
    print(f"{preset.name}: {preset.summary()}")
    print(f"  file: {printable(preset.path)}  sha256: {preset.sha256[:10]}")
    if preset.coords:
        print(f"  LF pairs (u, v): {preset.coords}")
    for key in sorted(preset.metadata):
        print(f"  {key}: {printable(preset.metadata[key])}")
    print("  valid: yes")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    validate_name(args.name)
    check_new_file(Path(args.out_dir) / f"{args.name}{PRESET_SUFFIX}", args.overwrite,
                   create_folder=True)
    preset = import_paper_dir(args.dir, model_family=args.model_family)
    path = save_preset(preset, args.out_dir, args.name, overwrite=args.overwrite)
    print(f"imported {printable(args.dir)} as {printable(path)}: {preset.summary()}")
    print(f"  note: {preset.metadata.get('description', '')}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    out = check_new_file(args.out, args.overwrite)
    sampler = _sampler(args, args.shape)
    subseeds = [args.subseed] if args.subseed is not None else None
    leak = sampler.draw([args.seed], subseeds, args.subseed_strength)[0] * args.strength
    buf = io.BytesIO()
    np.save(buf, leak.numpy().astype(np.float32))  # to a buffer: np.save(path) adds ".npy"
    atomic_write(out, buf.getvalue(), overwrite=args.overwrite)
    print(f"wrote {printable(out)}: leak {tuple(leak.shape)}, channel means "
          f"{[round(float(m), 4) for m in leak.mean(dim=(1, 2))]}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .preview import preview_image

    out = check_new_file(args.out, args.overwrite)
    sampler = _sampler(args, args.shape)
    c, h, w = sampler.shape
    if c != 4:
        raise CliError(f"a preview needs a 4-channel latent, the leak has {c}; use 'sample'")
    pixels = args.count * h * w * args.scale**2
    if pixels > MAX_PREVIEW_PIXELS:
        raise CliError(f"the preview would have {pixels} pixels (at most {MAX_PREVIEW_PIXELS});"
                       " lower --count, --scale or --shape")
    leaks = sampler.draw([args.seed + i for i in range(args.count)]) * args.strength
    family = sampler.preset.model_family if sampler.preset is not None else "sd1"
    buf = io.BytesIO()
    preview_image(list(leaks), family, scale=args.scale).save(buf, format="PNG")
    atomic_write(out, buf.getvalue(), overwrite=args.overwrite)
    print(f"wrote {printable(out)}: {args.count} leak(s) from seed {args.seed}")
    return 0


def _load_encoder(args: argparse.Namespace) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    device = args.device
    if args.encoder:
        module_name, _, attr = args.encoder.partition(":")
        if not module_name or not attr:
            raise CliError("--encoder takes MODULE:FACTORY, e.g. slb.bench:try_encoder")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise CliError(f"--encoder: cannot import module {module_name!r} ({exc}); run from "
                           "a folder where it is importable") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise CliError(f"--encoder: module {module_name!r} has no callable {attr!r}")
        encoder = factory(device)
        if not callable(encoder):
            raise CliError(f"--encoder: {args.encoder}({device}) did not return a callable")
        return encoder, {"vae": attr, "encode_mode": "mean"}
    if not args.vae:
        raise CliError("fit needs an encoder: --vae DIR (a diffusers AutoencoderKL folder) or "
                       "--encoder MODULE:FACTORY (try slb.bench:try_encoder)")
    try:
        from diffusers import AutoencoderKL  # optional dependency
    except ImportError:
        raise CliError("--vae needs the optional package 'diffusers' (pip install diffusers); "
                       "or pass --encoder MODULE:FACTORY") from None
    try:
        vae = AutoencoderKL.from_pretrained(args.vae).to(device).eval()
    except (OSError, ValueError) as exc:
        raise CliError(f"--vae {printable(args.vae)}: cannot load an AutoencoderKL ({exc})"
                       ) from None
    scale = float(vae.config.scaling_factor)

    def encode(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device=device, dtype=vae.dtype)
        return vae.encode(batch).latent_dist.mode().float() * scale

    family = family_from_vae_config(scale, int(getattr(vae.config, "latent_channels", 4)))
    return encode, {"vae": Path(args.vae).name, "scale_factor": scale, "encode_mode": "mean",
                    "model_family": family}


def family_from_vae_config(scaling_factor: float, latent_channels: int) -> str:
    """The model family a VAE's configuration tells, or ``unknown``: 4 channels at 0.18215
    is the SD 1.x/2.x VAE (one latent space, recorded as ``sd1``), at 0.13025 SDXL's."""
    if latent_channels == 4 and abs(scaling_factor - 0.18215) < 1e-6:
        return "sd1"
    if latent_channels == 4 and abs(scaling_factor - 0.13025) < 1e-6:
        return "sdxl"
    return "unknown"


def _check_fit_paths(args: argparse.Namespace) -> Path:
    folder = Path(args.folder)
    archive = names_an_archive(args.folder)
    if not archive and not folder.is_dir():  # archives are checked when opened
        raise CliError(f"image folder {printable(folder)} "
                       f"{'is not a folder' if folder.exists() else 'does not exist'}")
    try:
        if not archive:
            next(iter(folder.iterdir()), None)
    except OSError as exc:
        raise CliError(f"cannot read image folder {printable(folder)}: "
                       f"{exc.strerror or exc}") from None
    if args.partial:
        return check_new_file(args.partial, args.overwrite)
    out_dir = check_writable_folder(args.out_dir)
    return check_new_file(out_dir / f"{args.name}{PRESET_SUFFIX}", args.overwrite)


def cmd_fit(args: argparse.Namespace) -> int:
    validate_name(args.name)
    target = _check_fit_paths(args)
    encode, meta = _load_encoder(args)
    if args.model_family != "auto":
        meta["model_family"] = args.model_family
    elif meta.get("model_family", "unknown") == "unknown":
        source = "--encoder" if args.encoder else f"the VAE's configuration ({printable(args.vae)})"
        raise CliError(f"{source} does not tell the model family: pass --model-family "
                       "sd1|sd2|sdxl (or 'unknown': the WebUI then applies the preset only when "
                       "'Allow presets from other model families' is on)")
    last = [0.0]
    line = _Progress()

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 1.0 or done == total:
            last[0] = time.perf_counter()
            line.show(f"  {done}/{total} images")

    def source_progress(phase: str, done: int, total: int | None) -> None:
        if time.perf_counter() - last[0] > 1.0 or done == total:
            last[0] = time.perf_counter()
            unit = f"{done / 2**20:.1f}/{(total or 0) / 2**20:.1f} MiB" if phase == "download" \
                else f"{done}/{total} files"
            line.show(f"  {phase}: {unit}")

    source = open_image_source(args.folder, tempfile.gettempdir(), progress=source_progress)
    with source as folder:
        archive = source.kind != "folder"
        if archive:
            meta.setdefault("source", Path(source.label).stem)
        result = fit(folder, encode, args.kind, args.n_components, size=args.size,
                     crop=args.crop, recursive=args.recursive or archive,
                     batch_size=args.batch_size, device=args.device, progress=progress,
                     description=args.description, **meta)
    line.end()
    for skip in result.skipped:
        print(f"  skipped {printable(skip.path)}: {printable(skip.reason)}")
    for note in result.warnings:
        print(f"  warning: {note}")
    if args.partial:
        extra = {k: result.preset.metadata.get(k) for k in (
            "image_size", "source", "vae", "scale_factor", "model_family", "crop", "encode",
            "skipped")}
        save_partial(result.accumulator, target, extra, overwrite=args.overwrite)
        print(f"wrote partial fit {printable(target)}: {result.images} images")
        return 0
    path = save_preset(result.preset, args.out_dir, args.name, overwrite=args.overwrite)
    print(f"fitted {result.images} images ({len(result.skipped)} skipped) in "
          f"{result.seconds:.1f} s -> {printable(path)}")
    print(f"  {result.preset.summary()}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    validate_name(args.name)
    out_dir = check_writable_folder(args.out_dir)
    check_new_file(out_dir / f"{args.name}{PRESET_SUFFIX}", args.overwrite)
    merged = merge_partials(args.partials)
    preset = preset_from_partial(merged, f"merged from {len(args.partials)} partial fits",
                                 model_family=args.model_family)
    path = save_preset(preset, out_dir, args.name, overwrite=args.overwrite)
    print(f"merged {len(args.partials)} partial fits ({merged.accumulator.count} images) -> "
          f"{printable(path)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import lowfreq_figure, run_demo

    default = "out/lowfreq_control.png" if args.lowfreq else "out/gaussian_world.png"
    out = check_new_file(args.out or Path(default), args.overwrite, create_folder=True)
    if args.lowfreq:
        lowfreq_figure(out, overwrite=args.overwrite, seed=args.seed)
        print(f"figure: {printable(out)}")
    else:
        run_demo(out, steps=args.steps, seed=args.seed, overwrite=args.overwrite)
    return 0


COMMANDS = {
    "info": cmd_info,
    "import": cmd_import,
    "sample": cmd_sample,
    "preview": cmd_preview,
    "fit": cmd_fit,
    "merge": cmd_merge,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.presets_dir is None:
        args.presets_dir = [REPO_STATS]
    try:
        return int(COMMANDS[args.command](args))
    except KeyboardInterrupt:
        _Progress.end()
        print("interrupted; nothing was saved", file=sys.stderr)
        return 130
    except Exception as exc:  # every error: one line, exit 2 (--debug: the traceback)
        _Progress.end()
        if args.debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory: the request is too large for this machine"
    text = printable(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {printable(exc.filename)}" if exc.filename else ""
        text = f"{exc.strerror}{where}"
    if not isinstance(exc, (CliError, ValueError, OSError)):
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())

