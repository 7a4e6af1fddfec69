"""The argument parser of ``python -m slb`` (commands in :mod:`slb.cli`, value checks in
:mod:`slb.cli_args`). Limits are stated in each option's help."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

import torch

from . import __version__
from . import cli_args as types
from .limits import (
    FIT_SIZE_RANGE,
    MAX_BATCH,
    MAX_COMPONENTS,
    MAX_DEMO_STEPS,
    MAX_PREVIEW_COUNT,
    MAX_PREVIEW_PIXELS,
    MAX_PREVIEW_SCALE,
    MAX_SAMPLE_CHANNELS,
    MAX_SAMPLE_ELEMENTS,
    MAX_SAMPLE_SIDE,
    MEAN_RANGE,
    STRENGTH_RANGE,
)
from .preset import MODEL_FAMILIES
from .sampling import LF_MODES

SEED_HELP = "0..2**64-1"
OVERWRITE_HELP = "replace an existing file (otherwise an existing file is an error)"


def _add_leak_options(p: argparse.ArgumentParser, shape_required: bool) -> None:
    p.add_argument("preset", help="preset file (.safetensors), preset name, or 'manual'")
    shape_help = (f"latent shape C,H,W: at most {MAX_SAMPLE_CHANNELS} channels, "
                  f"{MAX_SAMPLE_SIDE} a side, {MAX_SAMPLE_ELEMENTS} values")
    if shape_required:
        p.add_argument("--shape", type=types.shape, required=True, help=shape_help)
    else:
        p.add_argument("--shape", type=types.shape, default=None,
                       help=shape_help + " (default: the preset's own)")
    p.add_argument("--seed", type=types.seed, default=0, help=f"image seed, {SEED_HELP} "
                   "(default 0)")
    p.add_argument("--strength", type=types.strength, default=1.0,
                   help=f"leak strength s, {STRENGTH_RANGE[0]:g}..{STRENGTH_RANGE[1]:g} "
                   "(default 1)")
    p.add_argument("--lf", choices=LF_MODES, default="sampled",
                   help="low frequencies: sampled from the preset, or zero")
    p.add_argument("--means", type=types.means, default={},
                   help=f"fixed channel means, each {MEAN_RANGE[0]:g}..{MEAN_RANGE[1]:g}, "
                   "e.g. 0:1.5,2:-0.5")
    p.add_argument("--components", type=types.components, default={},
                   help="fixed low-frequency components 'c:u,v=amplitude' separated by ';', "
                   f"each {MEAN_RANGE[0]:g}..{MEAN_RANGE[1]:g}, e.g. '0:0,1=0.5;1:1,0=-0.3' "
                   "(channel 0 brighter left, channel 1 darker top)")
    p.add_argument("--colour", type=types.colour, default=None,
                   help="colour target '#rrggbb': sets the channel means not fixed otherwise "
                   "(approximate: the family's linear latent-to-RGB map)")
    p.add_argument("--reference", type=Path, default=None,
                   help="reference image: its low-frequency components become the leak's "
                   "(needs --vae or --encoder to encode it)")
    _add_encoder_options(p, fit=False)
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def _add_encoder_options(p: argparse.ArgumentParser, fit: bool) -> None:
    enc = p.add_mutually_exclusive_group()
    enc.add_argument("--vae", help="a diffusers AutoencoderKL folder (needs diffusers)")
    enc.add_argument("--encoder", help="MODULE:FACTORY; FACTORY(device) returns a callable "
                     "mapping (B,3,S,S) in [-1,1] to scaled latents (to try it without a VAE: "
                     "slb.bench:try_encoder, a fixed random-weight encoder)")
    p.add_argument("--device", type=types.device,
                   default=torch.device("cuda" if torch.cuda.is_available() else "cpu"),
                   help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    p.add_argument("--model-family", choices=("auto", *MODEL_FAMILIES), default="auto",
                   help="latent space of the encoder (auto: from the --vae configuration; "
                   "required with --encoder)" if fit else "latent space for --colour and the "
                   "encoder (auto: the preset's, else sd1)")


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr, exit status 2, as every other CLI error (the
    usage block argparse prints before them would bury the message); ``--help`` shows it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m slb", description="Signal-leak bias presets: inspect, import, sample, "
        "preview and fit them outside the WebUI. Run it from the extension's folder (the "
        "checkout), where the 'slb' package is importable.")
    parser.add_argument("--version", action="version", version=f"slb {__version__}")
    parser.add_argument("--presets-dir", type=Path, action="append", default=None,
                        help="folder to look up preset names in (repeatable; default: stats/)")
    parser.add_argument("--debug", action="store_true",
                        help="show a traceback on errors instead of a one-line message")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="summary and validation of a preset")
    p.add_argument("preset", help="preset file (.safetensors) or preset name")

    p = sub.add_parser("import", help="convert the paper's statistics directory to a preset")
    p.add_argument("dir", help="folder with stats.safetensors and statistic_type.txt")
    p.add_argument("name", help="name of the new preset")
    p.add_argument("--out-dir", default=".", help="where to write the preset (default: .)")
    p.add_argument("--model-family", choices=MODEL_FAMILIES, default="unknown",
                   help="latent space the statistics were computed in")
    p.add_argument("--overwrite", action="store_true", help="replace an existing preset")

    p = sub.add_parser("sample", help="draw a leak and save it as .npy")
    _add_leak_options(p, shape_required=True)
    p.add_argument("--subseed", type=types.seed, default=None, help=f"variation seed, {SEED_HELP}")
    p.add_argument("--subseed-strength", type=types.subseed_strength, default=0.0,
                   help="variation strength, 0..1 (default 0)")
    p.add_argument("--out", type=Path, required=True,
                   help="output file, written exactly there in .npy format")

    p = sub.add_parser("preview", help="draw leaks and save them as a PNG (linear RGB approx.)")
    _add_leak_options(p, shape_required=False)
    p.add_argument("--count", type=types.preview_count, default=4,
                   help=f"how many seeds side by side, 1..{MAX_PREVIEW_COUNT} (default 4)")
    p.add_argument("--scale", type=types.preview_scale, default=4,
                   help=f"enlargement of each latent pixel, 1..{MAX_PREVIEW_SCALE} (default 4); "
                   f"the image has at most {MAX_PREVIEW_PIXELS} pixels")
    p.add_argument("--out", type=Path, required=True, help="output .png file")

    p = sub.add_parser("fit", help="fit a preset from an image folder with your own encoder")
    p.add_argument("folder", help="image folder, a .zip of images, or an http(s) URL of one "
                   "(downloaded and extracted to a temporary folder, removed afterwards)")
    p.add_argument("name", help="name of the new preset")
    _add_encoder_options(p, fit=True)
    p.add_argument("--kind", choices=("pixel", "dct+pixel"), default="dct+pixel")
    p.add_argument("-n", "--n-components", type=types.n_components, default=3,
                   help=f"LF components for dct+pixel, 1..{MAX_COMPONENTS} (default 3)")
    p.add_argument("--size", type=types.fit_size, default=512,
                   help=f"crop size in pixels, {FIT_SIZE_RANGE[0]}..{FIT_SIZE_RANGE[1]}, a "
                   "multiple of 8 (default 512)")
    p.add_argument("--crop", type=types.crop, default="center", help="center or random:<seed>")
    p.add_argument("--recursive", action="store_true", help="include sub-folders")
    p.add_argument("--batch-size", type=types.batch_size, default=None,
                   help=f"images per encoder call, 1..{MAX_BATCH} (default: 1 on the CPU, "
                   "where batching buys nothing; on a GPU as many as its free memory holds, "
                   "at most 8)")
    p.add_argument("--description", default="", help="free text stored in the preset")
    p.add_argument("--out-dir", default=".", help="where to write the preset (default: .)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing preset or "
                   "partial fit")
    p.add_argument("--partial", type=Path, help="write a mergeable partial fit to this file "
                   "instead of a preset (fit shards on several machines; see 'merge')")

    p = sub.add_parser("merge", help="merge partial fits (from 'fit --partial') into a preset")
    p.add_argument("partials", nargs="+", help="partial fit files, each shard once")
    p.add_argument("--name", required=True, help="name of the new preset")
    p.add_argument("--model-family", choices=MODEL_FAMILIES, default=None,
                   help="override the family recorded in the partial fits")
    p.add_argument("--out-dir", default=".", help="where to write the preset (default: .)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing preset")

    p = sub.add_parser("demo", help="the Gaussian world: see the effect without any weights")
    p.add_argument("--out", type=Path, default=None,
                   help="figure to write (PNG; default out/gaussian_world.png, or "
                   "out/lowfreq_control.png with --lowfreq; out/ is git-ignored)")
    p.add_argument("--lowfreq", action="store_true",
                   help="draw the low-frequency control figure instead (fixed DC, gradients, "
                   "a reference's low frequencies)")
    p.add_argument("--steps", type=types.demo_steps, default=30,
                   help=f"sampling steps, 1..{MAX_DEMO_STEPS} (default 30)")
    p.add_argument("--seed", type=types.seed, default=0, help=SEED_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    return parser
