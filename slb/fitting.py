"""Fitting a preset: encode images, stream their latents into mergeable statistics.

``fit(images, encode, ...)`` accepts any encoder callable mapping a float batch
``(B, 3, S, S)`` in [-1, 1] to latents ``(B, C, S/8, S/8)`` (already multiplied by the model's
scale factor). Images are decoded on worker threads while the encoder runs (see
:class:`slb.images.ImageBatches`); statistics accumulate in float64 on the latents' device.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from .dct import Coord, lf_coefficients, lf_image, lowfreq_basis, lowfreq_coords
from .files import printable
from .images import ImageBatches, NoUsableImagesError, SkippedImage
from .moments import ElementMoments, VectorMoments
from .preset import KINDS, Preset

Encoder = Callable[[torch.Tensor], torch.Tensor]


class FitInterrupted(RuntimeError):
    """The fit was stopped by the caller; nothing was saved."""


class FitAccumulator:
    """Streaming statistics of latents for one preset kind; mergeable across shards."""

    def __init__(self, kind: str, latent_shape: tuple[int, int, int], n_components: int = 3,
                 device: torch.device | str = "cpu",
                 coords: list[Coord] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown preset kind {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self.latent_shape = tuple(int(s) for s in latent_shape)
        c, h, w = self.latent_shape
        self.device = torch.device(device)
        if kind == "pixel":
            self.coords: list[Coord] = []
            self.pixel = ElementMoments((c, h, w), self.device)
        else:
            self.coords = list(coords) if coords is not None else lowfreq_coords(
                n_components, h, w)
            self.lf = VectorMoments(len(self.coords) * c, self.device)
            self.hf = ElementMoments((c, h, w), self.device)
            self._basis = lowfreq_basis(self.coords, h, w, self.hf.device, torch.float64)

    @property
    def count(self) -> int:
        return self.pixel.count if self.kind == "pixel" else self.hf.count

    @property
    def n_components(self) -> int:
        return len(self.coords)

    def update(self, latents: torch.Tensor) -> None:
        """Add a batch of clean latents ``(B, C, h, w)``."""
        if tuple(latents.shape[1:]) != self.latent_shape:
            raise ValueError(f"latent shape {tuple(latents.shape[1:])} does not match "
                             f"{self.latent_shape}")
        if self.kind == "pixel":
            self.pixel.update(latents)
            return
        x = latents.to(device=self.hf.device, dtype=torch.float64)
        z = lf_coefficients(x, self._basis)  # (B, n, C), component-major like the file
        remainder = x - lf_image(z, self._basis, *self.latent_shape[1:])
        self.lf.update(z.reshape(z.shape[0], -1))
        self.hf.update(remainder)

    def merge(self, other: FitAccumulator) -> None:
        """Fold a fit over a disjoint set of images into this one (exact)."""
        if (other.kind, other.latent_shape, other.coords) != (
                self.kind, self.latent_shape, self.coords):
            raise ValueError("cannot merge fits of different kind, latent shape or LF pairs")
        if self.kind == "pixel":
            self.pixel.merge(other.pixel)
        else:
            self.lf.merge(other.lf)
            self.hf.merge(other.hf)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The preset tensors (float32 on the CPU, coords int64)."""
        f32 = {"device": "cpu", "dtype": torch.float32}
        if self.kind == "pixel":
            return {"mean": self.pixel.mean.to(**f32), "var": self.pixel.variance().to(**f32)}
        return {
            "lf_mean": self.lf.mean.to(**f32),
            "lf_cov": self.lf.covariance().to(**f32),
            "lf_coords": torch.tensor(self.coords, dtype=torch.int64).reshape(-1, 2),
            "hf_mean": self.hf.mean.to(**f32),
            "hf_var": self.hf.variance().to(**f32),
        }

    def to_preset(self, **metadata: object) -> Preset:
        """A validated :class:`Preset`; ``metadata`` goes to :meth:`Preset.create`."""
        if self.count < 2:
            raise ValueError(f"a preset needs at least 2 images; got {self.count}")
        metadata.setdefault("images", self.count)
        return Preset.create(self.kind, self.tensors(), **metadata)  # type: ignore[arg-type]


@dataclass
class FitResult:
    """What a fit produced: the preset (unsaved), counts, skipped files, timing."""

    preset: Preset
    accumulator: FitAccumulator
    images: int
    skipped: list[SkippedImage] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


_HALF = (torch.float16, torch.bfloat16)


class _FitState:
    """The accumulator (created from the first latents' shape), the rejected latents, and
    the float32 retries of half-precision batches that gave non-finite latents."""

    def __init__(self, kind: str, n_components: int, encoder: Callable | None = None) -> None:
        self.kind, self.n_components = kind, n_components
        self.encoder = encoder
        self.acc: FitAccumulator | None = None
        self.bad: list[SkippedImage] = []
        self.retried = self.rescued = 0

    def add(self, latents: torch.Tensor, names: list[str] | None, offset: int,
            batch: torch.Tensor | None = None) -> None:
        finite = torch.isfinite(latents).flatten(1).all(dim=1)
        if not bool(finite.all()) and batch is not None and batch.dtype in _HALF \
                and self.encoder is not None:
            # fp16 VAEs (SDXL's above all) overflow to NaN where float32 does not: encode
            # this batch once more in float32 (the encoder runs in its input's precision)
            self.retried += 1
            with torch.no_grad():
                latents = self.encoder(batch.float()).float()
            finite = torch.isfinite(latents).flatten(1).all(dim=1)
            self.rescued += int(finite.sum())
        if not bool(finite.all()):
            for i in torch.nonzero(~finite).flatten().tolist():
                label = names[i] if names else f"image {offset + i}"
                self.bad.append(SkippedImage(printable(label),
                                             "the encoder produced NaN/inf values"))
            latents = latents[finite]
        if not latents.shape[0]:
            return
        if self.acc is None:
            self.acc = FitAccumulator(self.kind, tuple(latents.shape[1:]), self.n_components,
                                      device=latents.device)
        self.acc.update(latents)

    def notes(self) -> list[str]:
        if not self.retried:
            return []
        return [f"{self.retried} batch(es) gave NaN/inf latents in half precision and were "
                f"encoded again in float32 ({self.rescued} image(s) rescued)"]


def _to_device(batch: torch.Tensor, device: torch.device | str | None,
               dtype: torch.dtype | None) -> torch.Tensor:
    if device is not None and torch.device(device).type == "cuda" and batch.device.type == "cpu":
        # Pinned memory makes the copy asynchronous: a plain copy would wait for the batch
        # still being encoded, and the GPU would idle while the next one is prepared.
        batch = batch.pin_memory().to(device, non_blocking=True)
    elif device is not None:
        batch = batch.to(device)
    return batch if dtype is None else batch.to(dtype)


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


class _BackoffEncoder:
    """Encodes in chunks, halving the chunk on out-of-memory and retrying (DESIGN 7.8)."""

    def __init__(self, encode: Encoder) -> None:
        self.encode = encode
        self.chunk: int | None = None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.chunk is None:
            self.chunk = batch.shape[0]
        outs, start = [], 0
        while start < batch.shape[0]:
            part = batch[start:start + self.chunk]
            try:
                outs.append(self.encode(part))
            except (RuntimeError, MemoryError) as exc:
                if not _is_oom(exc) or self.chunk <= 1:
                    raise
                self.chunk = max(1, self.chunk // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start += part.shape[0]
        return torch.cat(outs) if len(outs) > 1 else outs[0]


# Activation memory of an SD-sized VAE encoder for one 512 px image at 2 bytes per value
# (fp16), with headroom; scaled by pixels and by the dtype's size.
_VAE_BYTES_PER_512PX_IMAGE = 2.5e9
MAX_AUTO_BATCH = 8


def auto_batch_size(device: torch.device | str | None, size: int = 512,
                    dtype: torch.dtype | None = None) -> int:
    """The batch size used when the caller does not choose one.

    On the CPU batching buys no speed (the convolutions already use every core) and each
    extra image costs its full activation memory, so one image at a time. On CUDA, as many
    images as half of the free memory holds by an SD-VAE-sized estimate, at most 8; the
    out-of-memory back-off still halves the batch if the estimate is wrong.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type != "cuda" or not torch.cuda.is_available():
        return 1
    try:
        free, _ = torch.cuda.mem_get_info(dev)
    except (RuntimeError, AssertionError):
        return 1
    elem = torch.finfo(dtype).bits // 8 if dtype is not None and dtype.is_floating_point else 4
    per_image = _VAE_BYTES_PER_512PX_IMAGE * (size / 512) ** 2 * elem / 2
    return int(max(1, min(MAX_AUTO_BATCH, (free * 0.5) // per_image)))


def _as_batches(images: object, size: int, batch_size: int, crop: str, recursive: bool,
                workers: int) -> tuple[Iterable, ImageBatches | None]:
    if isinstance(images, (str, os.PathLike)):
        batches = ImageBatches(images, size=size, batch_size=batch_size, crop=crop,
                               recursive=recursive, workers=workers)
        return batches, batches
    if isinstance(images, ImageBatches):
        return images, images
    if isinstance(images, torch.Tensor):
        return [images[i:i + batch_size] for i in range(0, images.shape[0], batch_size)], None
    return images, None  # any iterable of tensors or (tensor, names) pairs


def fit(images: object, encode: Encoder, kind: str = "dct+pixel", n_components: int = 3, *,
        size: int = 512, crop: str = "center", recursive: bool = False,
        batch_size: int | None = None,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
        workers: int = min(4, os.cpu_count() or 2), encode_mode: str = "mean",
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None, **metadata: object) -> FitResult:
    """Fit a preset of ``kind`` to the clean latents of ``images``.

    ``images`` is a folder (read per DESIGN section 8), an :class:`ImageBatches`, a tensor
    ``(N, 3, S, S)`` or an iterable of such batches (optionally ``(batch, names)`` pairs).
    Batches go to ``device``/``dtype`` (when given) before ``encode``. ``progress(done, total)``
    is called after each batch; ``should_stop()`` returning true raises :class:`FitInterrupted`.
    ``encode_mode`` records whether ``encode`` returns the posterior mean or a sample.
    Remaining keyword arguments are preset metadata (``model_family``, ``vae``,
    ``scale_factor``, ``description``, ``source``...).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown preset kind {kind!r}; expected one of {KINDS}")
    if batch_size is None:
        batch_size = auto_batch_size(device, size, dtype)
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    start = time.perf_counter()
    batches, reader = _as_batches(images, size, batch_size, crop, recursive, workers)
    total = reader.total if reader is not None else 0
    encoder = _BackoffEncoder(encode)
    state = _FitState(kind, n_components, encoder)
    queued: tuple | None = None
    done = 0
    for item in batches:
        if should_stop is not None and should_stop():
            raise FitInterrupted("fit interrupted; nothing was saved")
        batch, names = item if isinstance(item, tuple) else (item, None)
        batch = _to_device(batch, device, dtype)
        with torch.no_grad():
            latents = encoder(batch)
        if latents.ndim != 4 or latents.shape[0] != batch.shape[0]:
            raise ValueError(f"the encoder returned shape {tuple(latents.shape)} for a batch of "
                             f"{batch.shape[0]}; expected (B, C, h, w)")
        # One batch of lag: the previous batch's statistics (which wait for the device) are
        # taken while this batch is already queued on it, so an accelerator never idles
        # while the next images are stacked and copied.
        if queued is not None:
            state.add(*queued)
        queued = (latents, names, done, batch)
        done += batch.shape[0]
        if progress is not None:
            progress(done, max(total, done))
    if queued is not None:
        state.add(*queued)
    acc, bad_latents = state.acc, state.bad
    if progress is not None and reader is not None:
        progress(total, total)  # files skipped after the last batch count as done too
    skipped = (list(reader.skipped) if reader is not None else []) + bad_latents
    if acc is None or acc.count < 2:
        folder = str(images) if isinstance(images, (str, os.PathLike)) else "the input"
        if acc is None:
            raise NoUsableImagesError.from_skipped(folder, skipped)
        raise NoUsableImagesError(f"only 1 usable image in {folder}; a preset needs at least 2")
    notes = state.notes()
    if kind == "dct+pixel" and acc.count <= acc.lf.dim:
        notes.append(f"{acc.count} images for {acc.lf.dim} LF values: the LF covariance is "
                     "singular (sampling copes, but more images give a better preset)")
        warnings.warn(notes[-1], stacklevel=2)
    if isinstance(images, (str, os.PathLike)):
        metadata.setdefault("source", str(images))
    image_size = (size, size) if reader is not None else (batch.shape[-2], batch.shape[-1])
    preset = acc.to_preset(image_size=image_size, images=acc.count, skipped=len(skipped),
                           crop=crop, encode=encode_mode, **metadata)
    return FitResult(preset=preset, accumulator=acc, images=acc.count, skipped=skipped,
                     seconds=time.perf_counter() - start, warnings=notes)
