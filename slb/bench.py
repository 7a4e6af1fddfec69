"""``python -m slb.bench``: the performance figures of DESIGN section 10, as ratios from one run.

1. Leak draw + mix latency for one image from a loaded preset, at (4,64,64) and (4,128,128),
   for ``pixel`` and ``dct+pixel`` n=3 and n=10, next to the WebUI's own noise draw
   (``torch.randn`` with a seeded generator) of the same size.
2. Fit wall time against encode-only wall time (same encoder, same batch size, images already
   decoded) on an image folder: the decoding, resizing and statistics should hide behind the
   encoder.
3. Peak memory of a fit at N and 4N images (each in a fresh process): flat in N.

The encoder is a fixed random-weight convolutional stack with 8x downsampling whose cost per
image is of the order of a small VAE encoder; it stands in for the model's VAE.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from .fitting import FitAccumulator, auto_batch_size, fit
from .images import ImageBatches, list_image_files
from .mixing import StartConvention, sampler_input
from .preset import Preset, preset_from_bytes, preset_to_bytes
from .sampling import LeakSampler

DEFAULT_IMAGES = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "data" /
                       "coco128", Path("/work/shared/data/coco128")) if p.is_dir()),
                      Path("coco128"))


class BenchEncoder(torch.nn.Module):
    """Random-weight conv encoder, 8x downsampling to 4 channels (a stand-in VAE encoder)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        w = width
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, w, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(w, w, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(w, w, 4, stride=2, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(w, 2 * w, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(2 * w, 2 * w, 4, stride=2, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(2 * w, 2 * w, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(2 * w, 2 * w, 4, stride=2, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(2 * w, 4, 3, padding=1),
        ).eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 0.18215


class VaeLikeEncoder(torch.nn.Module):
    """Random-weight encoder with the SD VAE encoder's channel schedule (128, 256, 512, 512),
    two 3x3 convolutions per level and strided downsampling: of the order of its cost
    (several hundred GFLOP per 512px image). For GPU runs; far too slow for a 2-core CPU."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, 128, 3, padding=1)]
        chans = (128, 256, 512, 512)
        prev = 128
        for i, ch in enumerate(chans):
            layers += [torch.nn.Conv2d(prev, ch, 3, padding=1), torch.nn.SiLU(),
                       torch.nn.Conv2d(ch, ch, 3, padding=1), torch.nn.SiLU()]
            if i < len(chans) - 1:
                layers.append(torch.nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            prev = ch
        layers.append(torch.nn.Conv2d(prev, 4, 3, padding=1))
        self.net = torch.nn.Sequential(*layers).eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 0.18215


def try_encoder(device: torch.device | str = "cpu") -> torch.nn.Module:
    """A fixed random-weight encoder for trying ``python -m slb fit`` without a VAE
    (``--encoder slb.bench:try_encoder``): real fitting code, meaningless statistics."""
    return BenchEncoder(16).to(device)


def vae_sized_encoder(device: torch.device | str = "cpu") -> torch.nn.Module:
    """The random-weight encoder with the SD VAE encoder's cost, for timing a CLI fit
    (``--encoder slb.bench:vae_sized_encoder``)."""
    return VaeLikeEncoder().to(device)


def make_encoder(kind: str, width: int) -> torch.nn.Module:
    return VaeLikeEncoder() if kind == "vae" else BenchEncoder(width)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_ms(fn, device: torch.device, repeat: int) -> float:  # noqa: ANN001
    for _ in range(5):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _preset(kind: str, n: int, size: int = 64) -> Preset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, size, size, generator=gen) * 0.6 + torch.randn(
        256, 4, 1, 1, generator=gen)
    acc = FitAccumulator(kind, (4, size, size), n)
    for i in range(0, 256, 64):
        acc.update(x[i:i + 64])
    # a round trip through the file format: "from a loaded preset"
    return preset_from_bytes(preset_to_bytes(acc.to_preset(image_size=(size * 8, size * 8))))


def bench_latency(device: torch.device, repeat: int) -> list[dict]:
    rows = []
    conv = StartConvention.ve(14.6146)
    for size in (64, 128):
        shape = (4, size, size)
        gen = torch.Generator()

        def webui_noise(shape: tuple = shape, gen: torch.Generator = gen) -> torch.Tensor:
            gen.manual_seed(1234)
            return torch.randn(shape, generator=gen).to(device)

        base = _median_ms(webui_noise, device, repeat)
        noise = webui_noise()[None]
        for kind, n in (("pixel", 0), ("dct+pixel", 3), ("dct+pixel", 10)):
            preset = _preset(kind, n or 3)
            t0 = time.perf_counter()
            sampler = LeakSampler(preset, shape, device=device)
            _sync(device)
            prep = (time.perf_counter() - t0) * 1e3
            def draw_and_mix(sampler: LeakSampler = sampler, noise: torch.Tensor = noise,
                             seed: list = [0]) -> torch.Tensor:  # noqa: B006 - a counter
                seed[0] += 1
                return sampler_input(noise, sampler.draw([seed[0]]), conv)

            ms = _median_ms(draw_and_mix, device, repeat)
            data = preset_to_bytes(preset)

            def cold(data: bytes = data, shape: tuple = shape, noise: torch.Tensor = noise
                     ) -> torch.Tensor:
                fresh = LeakSampler(preset_from_bytes(data), shape, device=device)
                return sampler_input(noise, fresh.draw([1]), conv)

            cold_ms = _median_ms(cold, device, max(repeat // 10, 10))
            rows.append({"shape": shape, "kind": kind, "n": n, "prepare_ms": prep,
                         "draw_mix_ms": ms, "webui_noise_ms": base, "ratio": ms / base,
                         "cold_ms": cold_ms})
    return rows


def check_devices(device: torch.device) -> list[dict]:
    rows = []
    for kind, n in (("pixel", 3), ("dct+pixel", 10)):
        preset = _preset(kind, n)
        for shape in ((4, 64, 64), (4, 128, 96)):
            seeds = list(range(8))
            cpu = LeakSampler(preset, shape, means={0: 0.5}).draw(seeds)
            dev = LeakSampler(preset, shape, device=device, means={0: 0.5}).draw(seeds).cpu()
            rows.append({"kind": kind, "shape": shape,
                         "rel_max_diff": float((cpu - dev).abs().max() / cpu.std())})
    return rows


def _encode_only(images: list[torch.Tensor], encoder: torch.nn.Module, device: torch.device
                 ) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for batch in images:
        encoder(batch.to(device))
    _sync(device)
    return time.perf_counter() - t0


def bench_fit(folder: Path, size: int, batch: int, device: torch.device, width: int,
              limit: int, rounds: int = 3, workers: int = 2, kind: str = "small") -> dict:
    files = list_image_files(folder)[:limit]
    encoder = make_encoder(kind, width).to(device)
    decoded = [b for b, _ in ImageBatches(folder, size, batch, files=files)]
    encoder(decoded[0].to(device))  # warm-up (cudnn autotune, allocator)
    encs, walls = [], []
    for _ in range(rounds):  # interleaved pairs: each ratio compares neighbours in time
        encs.append(_encode_only(decoded, encoder, device))
        t0 = time.perf_counter()
        result = fit(ImageBatches(folder, size, batch, files=files, workers=workers), encoder,
                     "dct+pixel", 10, size=size, device=device)
        _sync(device)
        walls.append(time.perf_counter() - t0)
    ratios = sorted(w / e for w, e in zip(walls, encs, strict=True))
    return {"images": result.images, "size": size, "batch": batch,
            "encode_only_s": statistics.median(encs), "fit_s": statistics.median(walls),
            "ratio": statistics.median(ratios), "ratio_range": (ratios[0], ratios[-1]),
            "rounds": rounds, "workers": workers}


def _fit_memory_child(folder: str, count: int, size: int, batch: int, device: str,
                      encoder: str = "tiny") -> None:
    """One fit in this (fresh) process; prints its peak memory and wall time as JSON."""
    files = list_image_files(folder)
    files = (files * (count // len(files) + 1))[:count]
    dev = torch.device(device)
    model = BenchEncoder(16) if encoder == "tiny" else make_encoder(encoder, 32)
    model = model.to(dev)
    chosen = batch if batch > 0 else auto_batch_size(dev, size)
    t0 = time.perf_counter()
    fit(ImageBatches(folder, size, chosen, files=files), model, "dct+pixel", 10, size=size,
        device=dev)
    _sync(dev)
    wall = time.perf_counter() - t0
    peak_gpu = torch.cuda.max_memory_allocated() if dev.type == "cuda" else 0
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"count": count, "batch": chosen, "peak_rss_mb": rss_kb / 1024,
                      "peak_gpu_mb": peak_gpu / 2**20, "wall_s": wall}))


def _child(folder: Path, count: int, size: int, batch: int, device: torch.device,
           encoder: str = "tiny") -> dict:
    proc = subprocess.run([sys.executable, "-m", "slb.bench", "--memory-child", str(count),
                           "--images", str(folder), "--size", str(size), "--batch",
                           str(batch), "--device", str(device), "--child-encoder", encoder],
                          capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(folder: Path, n: int, size: int, batch: int, device: torch.device) -> list[dict]:
    return [_child(folder, count, size, batch, device) for count in (n, 4 * n)]


def bench_batch_memory(folder: Path, count: int, size: int, device: torch.device,
                       batches: tuple[int, ...] = (0, 1, 4)) -> list[dict]:
    """Peak memory and wall time of a fit with the VAE-sized encoder, per batch size (0: the
    default, chosen by :func:`slb.fitting.auto_batch_size`), each in a fresh process."""
    rows = []
    for batch in batches:
        row = _child(folder, count, size, batch, device, encoder="vae")
        rows.append({**row, "requested": "default" if batch == 0 else batch})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m slb.bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="image folder")
    p.add_argument("--size", type=int, default=256, help="fit crop size (default 256)")
    p.add_argument("--batch", type=int, default=8, help="fit batch size (default 8)")
    p.add_argument("--encoder", choices=("small", "vae"), default="small",
                   help="bench encoder: a small conv stack (CPU) or VAE-sized (GPU)")
    p.add_argument("--width", type=int, default=32, help="small encoder width (cost)")
    p.add_argument("--limit", type=int, default=128, help="images for the fit timing")
    p.add_argument("--workers", type=int, default=2, help="image decoding threads")
    p.add_argument("--memory-images", type=int, default=64, help="N for the memory check")
    p.add_argument("--repeat", type=int, default=300, help="latency repetitions")
    p.add_argument("--skip", action="append", default=[],
                   choices=("latency", "fit", "memory", "batch"))
    p.add_argument("--check-devices", action="store_true",
                   help="also compare leaks drawn on the CPU and on --device (same seeds)")
    p.add_argument("--json", type=Path, help="also write all numbers here")
    p.add_argument("--batch-images", type=int, default=8,
                   help="images for the batch-size memory comparison (VAE-sized encoder)")
    p.add_argument("--batch-size-px", type=int, default=512,
                   help="crop size for the batch-size memory comparison (default 512)")
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-encoder", default="tiny", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.memory_child:
        _fit_memory_child(str(args.images), args.memory_child, args.size, args.batch,
                          args.device, args.child_encoder)
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores")
    print(f"slb benchmark on {name}; torch {torch.__version__}")
    report: dict = {"device": name}
    if "latency" not in args.skip:
        print("\n[1] leak draw + mix, one image, loaded preset (median of "
              f"{args.repeat}); target < 2 ms CPU, < 0.5 ms GPU at (4,128,128) dct+pixel n=10")
        rows = bench_latency(device, args.repeat)
        for r in rows:
            label = r["kind"] + (f" n={r['n']}" if r["n"] else "")
            print(f"  {str(r['shape']):14s} {label:14s} draw+mix {r['draw_mix_ms']:7.3f} ms | "
                  f"WebUI noise draw {r['webui_noise_ms']:6.3f} ms | ratio {r['ratio']:5.2f} | "
                  f"cold (parse file + prepare + draw + mix) {r['cold_ms']:6.2f} ms")
        report["latency"] = rows
    if "fit" not in args.skip:
        print(f"\n[2] fit vs encode-only, {args.images.name}, {args.size}px, batch {args.batch}"
              f" (target: ratio <= 1.10; median of 3 interleaved pairs)")
        r = bench_fit(args.images, args.size, args.batch, device, args.width, args.limit,
                      workers=args.workers, kind=args.encoder)
        enc = "VAE-sized" if args.encoder == "vae" else f"small (width {args.width})"
        print(f"  {r['images']} images, {enc} encoder, {args.workers} decode threads:"
              f" encode only {r['encode_only_s']:.2f} s, full fit {r['fit_s']:.2f} s, ratio "
              f"{r['ratio']:.3f} (pairs {r['ratio_range'][0]:.3f}..{r['ratio_range'][1]:.3f})")
        report["fit"] = r
    if "memory" not in args.skip:
        n = args.memory_images
        print(f"\n[3] peak memory of a fit at N={n} and 4N={4 * n} images (fresh processes)")
        mem = bench_memory(args.images, n, args.size, args.batch, device)
        for m in mem:
            gpu = f", GPU {m['peak_gpu_mb']:.1f} MB" if device.type == "cuda" else ""
            print(f"  {m['count']:5d} images: peak RSS {m['peak_rss_mb']:.1f} MB{gpu}")
        key = "peak_gpu_mb" if device.type == "cuda" else "peak_rss_mb"
        print(f"  ratio 4N/N: {mem[1][key] / mem[0][key]:.3f}")
        report["memory"] = mem
    if "batch" not in args.skip:
        print(f"\n[4] fit with the VAE-sized encoder at {args.batch_size_px} px, "
              f"{args.batch_images} images: default batch size against batch 1 (and 4, the "
              "old default); fresh processes. Goal: default peak <= 1.2x batch 1's, wall time "
              "no worse")
        rows = bench_batch_memory(args.images, args.batch_images, args.batch_size_px, device)
        key = "peak_gpu_mb" if device.type == "cuda" else "peak_rss_mb"
        one = next(r for r in rows if r["requested"] == 1)
        for r in rows:
            print(f"  batch {str(r['requested']):8s} (used {r['batch']}): peak "
                  f"{'GPU' if device.type == 'cuda' else 'RSS'} {r[key]:8.1f} MB "
                  f"({r[key] / one[key]:.2f}x batch 1), wall {r['wall_s']:6.1f} s "
                  f"({r['wall_s'] / one['wall_s']:.2f}x batch 1)")
        report["batch"] = rows
    if args.check_devices and device.type != "cpu":
        print(f"\n[4] same seed, same leak on cpu and {device} (max |difference| / leak std)")
        report["devices"] = check_devices(device)
        for r in report["devices"]:
            print(f"  {r['kind']:10s} {str(r['shape']):14s} {r['rel_max_diff']:.2e}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
