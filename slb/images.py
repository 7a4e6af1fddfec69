"""Image folder input for fitting (DESIGN section 8).

Listing a folder, decoding any reasonable image file to 8-bit RGB, the paper's resize-and-crop
geometry, and a batch iterator that decodes on worker threads while the consumer (the VAE
encoder) works. Nothing here ever writes under the folder it reads.

Decisions where section 8 is silent (kept here so users and reviewers can find them):

- Hidden files and hidden folders (name starting with ``.``; on Windows also the hidden
  attribute) are skipped. Symlinked folders are followed when recursing, but each real folder
  is visited once, so link loops end. Unreadable sub-folders are skipped with a log warning.
- 16-bit grey (``I;16*``, or ``I`` decoded from 16-bit data) is scaled by 255/65535 with
  rounding (65535 -> 255, 32768 -> 128). 48-bit RGB is reduced by Pillow itself, which keeps
  the high byte of each sample (at most 1 level below exact rounding). 32-bit integer grey
  with unknown depth is scaled by the smallest of the 8/16/31-bit full ranges that holds its
  maximum; float grey (``F``) is taken as [0, 1] when all values lie there, else as 0..255
  (clipped); NaN becomes 0.
- Transparency (alpha channels, palette or grey/RGB ``tRNS`` entries) is composited over
  white. EXIF orientation is applied last, to the RGB result. Animated files use frame 0.
- ``ImageFile.LOAD_TRUNCATED_IMAGES`` is a process-wide Pillow switch; if the host or another
  extension turns it on, Pillow itself stops reporting truncated files and they are read
  padded. We do not flip that global from worker threads.
"""

from __future__ import annotations

import logging
import os
import random
import stat
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .files import printable

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageBatches",
    "ImageReadError",
    "NoUsableImagesError",
    "SkippedImage",
    "list_image_files",
    "load_image",
    "open_rgb",
    "parse_crop",
    "resize_and_crop",
    "to_tensor",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif",
)

_WHITE = (255, 255, 255)

# Above this many pixels the full resize before cropping is skipped (see resize_and_crop).
_MAX_RESIZED_PIXELS = 1 << 25

# EXIF orientation tag (0x0112) value -> the transpose that undoes it.
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageReadError(Exception):
    """A file could not be decoded; the message is a human-readable reason."""


@dataclass(frozen=True)
class SkippedImage:
    """A file left out of a fit: ``path`` is relative to the folder the user gave."""

    path: str
    reason: str


class NoUsableImagesError(ValueError):
    """Raised by callers when a folder yields no usable image at all."""

    def __init__(self, message: str, folder: str = "",
                 skipped: Sequence[SkippedImage] = ()) -> None:
        super().__init__(message)
        self.folder = folder
        self.skipped = list(skipped)

    @classmethod
    def from_skipped(cls, folder: str | os.PathLike, skipped: Sequence[SkippedImage],
                     limit: int = 5) -> NoUsableImagesError:
        """Build the error with the first ``limit`` skip reasons in its message."""
        folder_s = os.fspath(folder)
        if not skipped:
            msg = (f"No usable images in '{folder_s}': no files with extensions "
                   f"{' '.join(IMAGE_EXTENSIONS)} were found (hidden files are ignored; "
                   f"enable recursion to include sub-folders).")
        else:
            shown = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:limit])
            more = f" (and {len(skipped) - limit} more)" if len(skipped) > limit else ""
            msg = (f"No usable images in '{folder_s}': all {len(skipped)} candidate file(s) "
                   f"could not be read. {shown}{more}")
        return cls(msg, folder_s, skipped)


# ---------------------------------------------------------------------------------------------
# Listing


def _is_hidden(entry: os.DirEntry) -> bool:
    if entry.name.startswith("."):
        return True
    if os.name != "nt":  # elsewhere hidden means a dot name; skip the extra stat call
        return False
    # Windows marks hidden files with an attribute, not a name.
    attrs = getattr(entry.stat(follow_symlinks=False), "st_file_attributes", 0)
    return bool(attrs & getattr(stat, "FILE_ATTRIBUTE_HIDDEN", 0))


def list_image_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files under ``folder`` (as ``Path(folder) / relative``), sorted by relative path.

    Extensions are matched case-insensitively against ``IMAGE_EXTENSIONS``. Hidden files and
    folders are skipped. The sort key is the POSIX relative path string, so the order (and any
    fit that depends on it) is the same on every platform and run.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"Image folder not found: '{root}'")
    if not root.is_dir():
        raise NotADirectoryError(f"Not a folder: '{root}' (give the folder that holds the images)")

    found: list[tuple[str, Path]] = []
    visited: set[tuple[int, int]] = set()
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        dir_path, rel_parts = stack.pop()
        try:
            st = os.stat(dir_path)
            # A real folder is entered once, so symlinks that point back up cannot loop.
            ident = (st.st_dev, st.st_ino)
            if ident in visited:
                continue
            visited.add(ident)
            with os.scandir(dir_path) as it:
                entries = list(it)
        except OSError as exc:
            if not rel_parts:
                raise
            logger.warning("Skipping unreadable folder '%s': %s", dir_path, exc)
            continue
        for entry in entries:
            try:
                if _is_hidden(entry):
                    continue
                if entry.is_dir(follow_symlinks=True):
                    if recursive:
                        stack.append((dir_path / entry.name, (*rel_parts, entry.name)))
                elif (entry.is_file(follow_symlinks=True)
                      and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS):
                    rel = "/".join((*rel_parts, entry.name))
                    found.append((rel, root.joinpath(*rel_parts, entry.name)))
            except OSError:  # vanished or broken entry: not a candidate
                continue
    found.sort(key=lambda item: item[0])
    return [path for _, path in found]


# ---------------------------------------------------------------------------------------------
# Decoding


def _tile_rawmode(img: Image.Image) -> str:
    # The raw layout of the stored data (e.g. "I;16B"), only known before load() clears tile.
    try:
        args = img.tile[0][3]
    except (IndexError, TypeError, AttributeError):
        return ""
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _grey_to_uint8(img: Image.Image, rawmode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """High-depth grey (I;16*, I, F) to uint8 with correct scaling, plus a tRNS mask if any."""
    raw = np.asarray(img)
    trns = img.info.get("transparency")
    alpha = None
    if isinstance(trns, int) and not isinstance(trns, bool) and img.mode != "F":
        alpha = np.where(raw == trns, 0, 255).astype(np.uint8)

    if img.mode == "F":
        data = np.nan_to_num(raw.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if data.size and data.min() >= 0.0 and data.max() <= 1.0:
            data = data * 255.0
        out = np.clip(np.rint(data), 0, 255)
    else:
        data = raw.astype(np.int64)
        if img.mode.startswith("I;16") or "16" in rawmode:
            full = 65535
        else:  # 32-bit integer data of unknown depth
            peak = int(data.max()) if data.size else 0
            full = 255 if peak <= 255 else 65535 if peak <= 65535 else 2**31 - 1
        data = np.clip(data, 0, full)
        # Integer rounding of v * 255 / full: 65535 -> 255, 32768 -> 128.
        out = (data * 255 + full // 2) // full
    return out.astype(np.uint8), alpha


def _over_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return background


def _to_rgb(img: Image.Image, rawmode: str) -> Image.Image:
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        grey, alpha = _grey_to_uint8(img, rawmode)
        if alpha is None:
            return Image.fromarray(grey, "L").convert("RGB")
        return _over_white(Image.merge("RGBA", [Image.fromarray(grey, "L")] * 3
                                       + [Image.fromarray(alpha, "L")]))
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        # convert("RGBA") folds in palette alpha, tRNS colours and un-premultiplies.
        return _over_white(img.convert("RGBA"))
    # RGB, L, 1, P, CMYK, YCbCr, RGBX, ...: Pillow's own conversions are exact or standard.
    return img.convert("RGB")


def _exif_orientation(img: Image.Image) -> int:
    # A broken EXIF block should not cost an otherwise good image: treat it as "no rotation".
    try:
        value = img.getexif().get(0x0112, 1)
        return int(value) if value in _ORIENTATION_FIX else 1
    except Exception:
        return 1


def _reason(exc: BaseException, path: str | os.PathLike) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return f"image too large (decompression-bomb guard): {exc}"
    if isinstance(exc, UnidentifiedImageError):
        try:
            if os.path.getsize(path) == 0:
                return "empty file (0 bytes)"
        except OSError:
            pass
        return "not an image, or an unsupported or damaged format (cannot identify image file)"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return f"cannot open file: {exc.strerror or exc}"
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower():
        return f"truncated image data: {text}"
    return f"corrupt or unreadable image ({type(exc).__name__}: {text})"


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` to an 8-bit RGB image as DESIGN section 8 says; never writes anything.

    Raises ``ImageReadError`` with a readable reason for anything that cannot be used: corrupt,
    truncated, empty, not an image, or larger than ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    try:
        with Image.open(path) as img:
            # Check the header's size before any pixel is decoded, so a crafted file that
            # claims 100000x100000 never allocates. Pillow itself only errors at 2x the limit.
            width, height = img.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit and width * height > limit:
                raise ImageReadError(
                    f"image too large (decompression-bomb guard): {width}x{height} = "
                    f"{width * height:,} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS = {limit:,}")
            if width < 1 or height < 1:
                raise ImageReadError(f"image has no pixels ({width}x{height})")
            rawmode = _tile_rawmode(img)
            # Full decode here, inside the try, so truncated data fails now and not later.
            img.load()
            orientation = _exif_orientation(img)
            rgb = _to_rgb(img, rawmode)
    except ImageReadError:
        raise
    except Exception as exc:  # any decoder failure means "skip this file", never "stop the fit"
        raise ImageReadError(_reason(exc, path)) from exc
    if orientation != 1:
        rgb = rgb.transpose(_ORIENTATION_FIX[orientation])
    return rgb


# ---------------------------------------------------------------------------------------------
# Geometry and tensors


def parse_crop(crop: str) -> int | None:
    """Validate a crop spec: ``"center"`` -> None, ``"random:<int seed>"`` -> the seed."""
    if crop == "center":
        return None
    if isinstance(crop, str) and crop.startswith("random:"):
        text = crop[len("random:"):].strip()
        try:
            return int(text)
        except ValueError:
            pass
    raise ValueError(f"Bad crop {crop!r}: use 'center' or 'random:<integer seed>'")


def resize_and_crop(img: Image.Image, size: int, crop: str = "center", key: str = ""
                    ) -> Image.Image:
    """Resize so the shorter side is ``size`` (PIL bilinear), then crop a ``size`` square.

    The longer side becomes ``int(size * long / short)`` and the centre crop offsets are
    ``int(round((dim - size) / 2.0))``, as in the paper's preprocessing. ``"random:<seed>"``
    draws the offsets from ``random.Random(f"{seed}:{key}")``: with ``key`` the file's
    relative path, one image's crop does not depend on the other files, so fits of disjoint
    shards merge into exactly the fit of their union.
    """
    seed = parse_crop(crop)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"Crop size must be a positive integer, got {size!r}")
    width, height = img.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if seed is None:
        left = int(round((new_w - size) / 2.0))
        top = int(round((new_h - size) / 2.0))
    else:
        rng = random.Random(f"{seed}:{key}")  # str seeds hash with SHA-512: stable everywhere
        left = rng.randint(0, new_w - size)
        top = rng.randint(0, new_h - size)
    if new_w * new_h <= _MAX_RESIZED_PIXELS:
        resized = img.resize((new_w, new_h), resample=Image.Resampling.BILINEAR)
        return resized.crop((left, top, left + size, top + size))
    # An extreme aspect ratio (say 20000x1) would make the full resize enormous; resize only
    # the source region under the crop instead: same filter scale and sample positions, so
    # equal up to float rounding in the filter weights.
    scale_x, scale_y = width / new_w, height / new_h
    box = (left * scale_x, top * scale_y, (left + size) * scale_x, (top + size) * scale_y)
    return img.resize((size, size), resample=Image.Resampling.BILINEAR, box=box)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB image as a ``(3, H, W)`` float32 tensor in [-1, 1] (``x / 127.5 - 1``)."""
    if img.mode != "RGB":
        raise ValueError(f"to_tensor expects an RGB image, got mode {img.mode!r} "
                         f"(decode with open_rgb)")
    arr = np.array(img, dtype=np.uint8)  # a writable copy, so torch does not warn
    tensor = torch.from_numpy(arr).permute(2, 0, 1).to(torch.float32)
    return (tensor / 127.5 - 1.0).contiguous()


def load_image(path: str | os.PathLike, size: int, crop: str = "center", key: str = ""
               ) -> torch.Tensor:
    """``open_rgb`` + ``resize_and_crop`` + ``to_tensor``: one file as a ``(3, S, S)`` tensor."""
    return to_tensor(resize_and_crop(open_rgb(path), size, crop, key))


# ---------------------------------------------------------------------------------------------
# Batches


def _relative_key(path: Path, root: Path) -> tuple[Path, str]:
    """The file to open and its key (POSIX path relative to ``root``) for a ``files=`` entry."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
        return path, rel.as_posix()
    except ValueError:
        pass
    if not path.is_absolute():  # a bare relative entry is taken as relative to the folder
        return root / path, path.as_posix()
    return path, path.as_posix()


class ImageBatches:
    """Iterate an image folder as float batches, decoding on worker threads ahead of the consumer.

    Each item is ``(batch, names)``: a ``(B, 3, S, S)`` float32 tensor in [-1, 1] and the files'
    POSIX paths relative to ``folder``. Files that cannot be read are left out (batches are
    never empty; only the last may be smaller) and recorded in ``skipped``. At most
    ``prefetch * batch_size`` files are queued for decoding at once, so memory does not grow
    with the folder. ``files`` overrides the listing (e.g. one shard of a larger folder).
    """

    def __init__(self, folder: str | os.PathLike, size: int, batch_size: int = 8,
                 crop: str = "center", recursive: bool = False, workers: int = 2,
                 prefetch: int = 2, files: Iterable[str | os.PathLike] | None = None) -> None:
        parse_crop(crop)  # fail before any work on a bad spec
        for name, value in (("size", size), ("batch_size", batch_size),
                            ("workers", workers), ("prefetch", prefetch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.folder = Path(folder)
        self.size = size
        self.batch_size = batch_size
        self.crop = crop
        self.workers = workers
        self.prefetch = prefetch
        paths = (list_image_files(self.folder, recursive) if files is None
                 else [Path(f) for f in files])
        self._items = [_relative_key(p, self.folder) for p in paths]
        self.total: int = len(self._items)
        self.used: int = 0
        self.skipped: list[SkippedImage] = []

    def __len__(self) -> int:
        """Number of candidate files (not batches)."""
        return self.total

    def _decode(self, path: Path, key: str) -> torch.Tensor:
        return load_image(path, self.size, self.crop, key)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        self.used = 0
        self.skipped = []
        window = self.prefetch * self.batch_size
        todo = iter(self._items)
        pending: deque[tuple[str, Future[torch.Tensor]]] = deque()
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="slb-decode")

        def submit_next() -> None:
            item = next(todo, None)
            if item is not None:
                path, key = item
                pending.append((key, pool.submit(self._decode, path, key)))

        try:
            for _ in range(window):
                submit_next()
            tensors: list[torch.Tensor] = []
            names: list[str] = []
            while pending:
                key, future = pending.popleft()
                submit_next()  # keep the window full while this one is consumed
                try:
                    tensor = future.result()
                except ImageReadError as exc:
                    # printable: a name that is not valid UTF-8 must not break a console
                    # or a JSON answer later
                    self.skipped.append(SkippedImage(printable(key), printable(exc)))
                    continue
                tensors.append(tensor)
                names.append(key)
                if len(tensors) == self.batch_size:
                    batch = torch.stack(tensors)
                    self.used += len(names)
                    out_names, tensors, names = names, [], []
                    yield batch, out_names
            if tensors:
                self.used += len(names)
                yield torch.stack(tensors), names
        finally:
            # Early exit (interrupt, consumer error): drop queued work instead of decoding it.
            for _, future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
