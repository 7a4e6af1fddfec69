"""Safe extraction of the images in a .zip archive, for fitting a preset from it.

:func:`extract_images` unpacks a zip (downloaded, or given by the user) into a NEW temporary
folder and returns it with a summary. An archive from the internet may be hostile or
broken, so the whole central directory is checked before anything is written:

- refused (:class:`ArchiveError`, nothing written): entries whose path is absolute, has a
  drive letter or a ``..`` component ("zip slip"), symlink entries, more than
  ``max_entries`` entries (counted from the raw central directory before :mod:`zipfile`
  parses it, so a huge directory costs no memory), more than ``max_total_bytes``
  uncompressed, a compression ratio above ``max_ratio`` for one entry or overall ("zip
  bomb"), a file that is not a zip or is truncated or damaged;
- skipped quietly and counted by reason: entries that are not images by
  :data:`slb.images.IMAGE_EXTENSIONS` (nested zips included: they are never opened),
  hidden files and anything in hidden folders (the folder reader's rule; macOS
  ``__MACOSX`` resource forks too), encrypted entries, unsupported compression methods,
  names this system cannot hold, duplicate names, entries over ``max_entry_bytes``;
- while writing, actual bytes are counted against the limits as well, since sizes in the
  headers can lie; files are created exclusively (never through an existing name or link)
  and only under the new folder.

``should_stop()`` is polled between entries and between chunks of a large entry. On a stop
(:class:`ExtractionStopped`) or any failure the new folder is removed. Only images are
written, so the folder can be fitted with ``recursive=True`` whatever its layout.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .files import describe_mode, printable
from .images import IMAGE_EXTENSIONS

__all__ = [
    "DEFAULT_LIMITS",
    "ArchiveError",
    "ArchiveLimits",
    "ExtractSummary",
    "ExtractionStopped",
    "extract_images",
]

# Reasons an entry is skipped (the keys of ExtractSummary.skipped).
SKIP_NOT_IMAGE = "not an image"
SKIP_HIDDEN = "hidden"
SKIP_ENCRYPTED = "encrypted"
SKIP_UNSUPPORTED = "unsupported compression"
SKIP_BAD_NAME = "name not valid on this system"
SKIP_DUPLICATE = "duplicate name"
SKIP_TOO_LARGE = "too large"
SKIP_NOT_FILE = "not a regular file"

_CHUNK = 1 << 20
_MAX_DEPTH = 64  # path components of one entry
_WINDOWS_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?$", re.IGNORECASE)
_WINDOWS_BAD_CHARS = re.compile(r'[<>:"|?*\x00-\x1f]')


class ArchiveError(ValueError):
    """An archive that is refused or cannot be read; the message says why, in one line."""


class ExtractionStopped(RuntimeError):
    """The caller's ``should_stop()`` asked to stop; the extracted files were removed."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on one archive. Ratios are uncompressed/compressed bytes; an entry is held to
    ``max_ratio`` only above ``ratio_floor_bytes`` (tiny files compress absurdly well and
    cannot bomb), the archive as a whole only above ``total_ratio_floor_bytes``."""

    max_entries: int = 20_000
    max_total_bytes: int = 4 * 2**30
    max_entry_bytes: int = 512 * 2**20
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1 * 2**20
    total_ratio_floor_bytes: int = 16 * 2**20


DEFAULT_LIMITS = ArchiveLimits()


@dataclass
class ExtractSummary:
    """What :func:`extract_images` did.

    ``folder`` is the new temporary folder (remove it when done); ``image_root`` the
    deepest folder under it that holds every extracted image (``folder`` itself if none).
    ``skipped`` counts skipped entries by reason; folder entries are not counted.
    """

    folder: Path
    image_root: Path
    images: int = 0
    bytes: int = 0
    entries: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def describe(self) -> str:
        """One line, e.g. ``128 images (6.8 MiB); 130 entries skipped (128 not an image, 2
        hidden)``."""
        text = f"{self.images} image(s) ({self.bytes / 2**20:.1f} MiB)"
        if self.skipped:
            parts = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items(),
                                                                  key=lambda kv: -kv[1]))
            text += f"; {self.skipped_total} entries skipped ({parts})"
        return text


@dataclass
class _Plan:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Reading the archive


def _refuse_non_zip(path: Path, head: bytes) -> ArchiveError:
    name = printable(path.name)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return ArchiveError(f"{name} is a web page (HTML), not a zip archive")
    if head.startswith(b"PK"):
        return ArchiveError(f"{name}: the archive is truncated or damaged")
    return ArchiveError(f"{name} is not a zip archive")


def _count_entries(f: BinaryIO, limit: int) -> int | None:
    """The number of central-directory records, counted up to ``limit + 1`` from the raw
    bytes (so a directory claiming millions of entries is refused before zipfile builds an
    object for each), or ``None`` when the layout is not recognised (zipfile then decides).
    """
    f.seek(0, os.SEEK_END)
    size = f.tell()
    tail_len = min(size, 22 + 0xFFFF)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or len(tail) - pos < 22:
        return None
    eocd_at = size - tail_len + pos
    *_, declared, cd_size, _cd_offset, _comment = struct.unpack("<4s4H2LH", tail[pos:pos + 22])
    cd_end = eocd_at
    if declared == 0xFFFF or cd_size == 0xFFFFFFFF:  # Zip64: the real figures are elsewhere
        f.seek(max(0, eocd_at - 20))
        locator = f.read(20)
        if len(locator) != 20 or locator[:4] != b"PK\x06\x07":
            return None
        record_at = struct.unpack("<4sLQL", locator)[2]
        f.seek(record_at)
        record = f.read(56)
        if len(record) != 56 or record[:4] != b"PK\x06\x06":
            return None
        declared, cd_size = struct.unpack("<4sQ2H2L4Q", record)[7:9]
        cd_end = eocd_at - 20 - 56
    if declared > limit:
        return declared
    # Walk the records themselves: the count in the end record may lie.
    at, end, count = cd_end - cd_size, cd_end, 0
    if at < 0:
        return None
    f.seek(at)
    while at + 46 <= end and count <= limit:
        header = f.read(46)
        if len(header) != 46 or header[:4] != b"PK\x01\x02":
            break  # damaged: zipfile reports it
        n, m, k = struct.unpack("<3H", header[28:34])
        at += 46 + n + m + k
        f.seek(at)
        count += 1
    return count


def _open_zip(path: Path, limits: ArchiveLimits) -> zipfile.ZipFile:
    too_many = ArchiveError(f"{printable(path.name)} has more than {limits.max_entries} "
                            "entries, the limit for one archive")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ArchiveError(f"{printable(path)} is {describe_mode(st.st_mode)}, "
                               "not a zip file")
        fh = open(path, "rb")  # noqa: SIM115 - handed to ZipFile, closed with it
    except OSError as exc:
        raise ArchiveError(f"cannot read {printable(path)}: {exc.strerror or exc}") from None
    try:
        try:
            head = fh.read(64)
            count = _count_entries(fh, limits.max_entries)
            fh.seek(0)
        except OSError as exc:
            raise ArchiveError(f"cannot read {printable(path)}: {exc.strerror or exc}"
                               ) from None
        if count is not None and count > limits.max_entries:
            raise too_many
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, zlib.error, EOFError, struct.error, ValueError,
                NotImplementedError, OSError):
            raise _refuse_non_zip(path, head) from None
        if len(zf.infolist()) > limits.max_entries:  # when the raw walk was not possible
            zf.close()
            raise too_many
        return zf
    except BaseException:
        fh.close()
        raise


# ---------------------------------------------------------------------------------------------
# Checking entries


def _unsafe(name: str) -> str:
    """Why the entry name is refused outright, or ``""``."""
    norm = name.replace("\\", "/")
    if norm.startswith("/"):
        return "an absolute path"
    if re.match(r"^[A-Za-z]:", norm):
        return "a drive letter"
    if ".." in norm.split("/"):
        return "a '..' component that leaves the folder"
    return ""


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def _name_problem(parts: tuple[str, ...]) -> bool:
    """Whether this system cannot hold the name (reserved or over-long parts)."""
    if len(parts) > _MAX_DEPTH:
        return True
    for part in parts:
        try:
            encoded = os.fsencode(part)
        except UnicodeError:
            return True
        if len(encoded) > 255 or "\x00" in part:
            return True
        if os.name == "nt" and (_WINDOWS_RESERVED.match(part) or _WINDOWS_BAD_CHARS.search(part)
                                or part.endswith((" ", "."))):
            return True
    return False


def _mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) & 0xFFFF


def _plan(zf: zipfile.ZipFile, path: Path, limits: ArchiveLimits
          ) -> tuple[list[_Plan], Counter]:
    """Check every entry before writing anything: what to extract and what is skipped."""
    skipped: Counter = Counter()
    plans: list[_Plan] = []
    seen: set[str] = set()
    archive = printable(path.name)
    for info in zf.infolist():
        shown = printable(info.filename)
        why = _unsafe(info.filename)
        if why:
            raise ArchiveError(f"{archive} is refused: entry '{shown}' has {why} "
                               "(a 'zip slip' attack or a broken archive)")
        mode = _mode(info)
        if stat.S_ISLNK(mode):
            raise ArchiveError(f"{archive} is refused: entry '{shown}' is a symbolic link")
        parts = _parts(info.filename)
        if info.is_dir() or not parts or stat.S_ISDIR(mode):
            continue  # folders are made as needed
        if any(p.startswith(".") for p in parts) or parts[0] == "__MACOSX":
            skipped[SKIP_HIDDEN] += 1
            continue
        if os.path.splitext(parts[-1])[1].lower() not in IMAGE_EXTENSIONS:
            skipped[SKIP_NOT_IMAGE] += 1  # nested archives too: never opened
            continue
        if mode and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
            skipped[SKIP_NOT_FILE] += 1  # FIFOs, devices: nothing to read
            continue
        if info.flag_bits & 0x1:
            skipped[SKIP_ENCRYPTED] += 1
            continue
        if info.compress_type not in _SUPPORTED:
            skipped[SKIP_UNSUPPORTED] += 1
            continue
        if _name_problem(parts):
            skipped[SKIP_BAD_NAME] += 1
            continue
        key = "/".join(parts).casefold()  # case-insensitive file systems collide too
        if key in seen:
            skipped[SKIP_DUPLICATE] += 1
            continue
        if info.file_size > limits.max_entry_bytes:
            skipped[SKIP_TOO_LARGE] += 1
            continue
        seen.add(key)
        _check_ratio(archive, shown, info.file_size, info.compress_size, limits)
        plans.append(_Plan(info, parts))
    total = sum(p.info.file_size for p in plans)
    packed = sum(p.info.compress_size for p in plans)
    if total > limits.max_total_bytes:
        raise ArchiveError(f"{archive} is refused: its images hold {total / 2**20:.0f} MiB "
                           f"uncompressed, more than the {limits.max_total_bytes / 2**20:.0f} "
                           "MiB limit")
    _check_total_ratio(archive, total, packed, limits)
    return plans, skipped


def _supported() -> frozenset[int]:
    methods = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
    try:
        import bz2  # noqa: F401 - optional in some Python builds
        methods.add(zipfile.ZIP_BZIP2)
    except ImportError:
        pass
    try:
        import lzma  # noqa: F401
        methods.add(zipfile.ZIP_LZMA)
    except ImportError:
        pass
    return frozenset(methods)


_SUPPORTED = _supported()


def _check_ratio(archive: str, shown: str, size: int, packed: int,
                 limits: ArchiveLimits) -> None:
    if size > limits.ratio_floor_bytes and size > limits.max_ratio * max(packed, 1):
        raise ArchiveError(f"{archive} is refused as a zip bomb: entry '{shown}' expands "
                           f"{size / max(packed, 1):.0f}:1 (limit {limits.max_ratio:g}:1)")


def _check_total_ratio(archive: str, total: int, packed: int, limits: ArchiveLimits) -> None:
    if total > limits.total_ratio_floor_bytes and total > limits.max_ratio * max(packed, 1):
        raise ArchiveError(f"{archive} is refused as a zip bomb: its images expand "
                           f"{total / max(packed, 1):.0f}:1 overall (limit "
                           f"{limits.max_ratio:g}:1)")


# ---------------------------------------------------------------------------------------------
# Writing


def _target(root: Path, parts: tuple[str, ...]) -> Path:
    target = root.joinpath(*parts)
    # Belt and braces: the parts were checked, but never write outside root whatever happens.
    # (A string check suffices: the new folder is private and holds no links, and files are
    # opened with O_NOFOLLOW.)
    base = os.path.normpath(root)
    if os.path.commonpath([base, os.path.normpath(target)]) != base:
        raise ArchiveError(f"entry '{printable('/'.join(parts))}' would be written outside "
                           "the extraction folder")
    return target


def _make_parents(root: Path, parts: tuple[str, ...], made: set[tuple[str, ...]]) -> None:
    folder = root
    for depth, part in enumerate(parts[:-1], start=1):
        folder = folder / part
        if parts[:depth] in made:
            continue
        try:
            folder.mkdir()
        except FileExistsError:
            # only ever enter a real folder made here (never a file or a link)
            if folder.is_symlink() or not folder.is_dir():
                raise
        made.add(parts[:depth])


# Errors that mean "this name cannot exist here" rather than "the disk cannot be written".
_NAME_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENAMETOOLONG", "EINVAL", "EILSEQ", "ENOTDIR", "EISDIR", "ELOOP") if hasattr(errno, name))

_OPEN_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_BINARY", 0))


class _Budget:
    """Actual bytes written, checked against the limits as they arrive."""

    def __init__(self, archive: str, packed_total: int, limits: ArchiveLimits) -> None:
        self.archive, self.packed_total, self.limits = archive, packed_total, limits
        self.total = 0

    def add(self, n: int, entry_done: int, info: zipfile.ZipInfo) -> None:
        self.total += n
        shown = printable(info.filename)
        if entry_done > info.file_size or entry_done > self.limits.max_entry_bytes:
            raise ArchiveError(f"{self.archive} is refused: entry '{shown}' holds more data "
                               "than its header says (a damaged or hostile archive)")
        if self.total > self.limits.max_total_bytes:
            raise ArchiveError(f"{self.archive} is refused: more than "
                               f"{self.limits.max_total_bytes / 2**20:.0f} MiB uncompressed")
        _check_ratio(self.archive, shown, entry_done, info.compress_size, self.limits)
        _check_total_ratio(self.archive, self.total, self.packed_total, self.limits)


def _extract_one(zf: zipfile.ZipFile, plan: _Plan, root: Path, budget: _Budget,
                 should_stop: Callable[[], bool] | None, made: set[tuple[str, ...]]) -> bool:
    """Write one entry; ``False`` (nothing left) when its name cannot be created here."""
    try:
        _make_parents(root, plan.parts, made)
        target = _target(root, plan.parts)
        fd = os.open(target, _OPEN_FLAGS, 0o666)
    except FileExistsError:
        return False  # a name clash with another entry (or its folder): skipped as duplicate
    except OSError as exc:
        if exc.errno in _NAME_ERRNOS:
            return False  # a name this file system refuses
        raise  # disk full, permissions...: the caller reports it
    done = 0
    try:
        with os.fdopen(fd, "wb") as out, zf.open(plan.info) as src:
            while True:
                if should_stop is not None and should_stop():
                    raise ExtractionStopped("extraction stopped; nothing was kept")
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                done += len(chunk)
                budget.add(len(chunk), done, plan.info)
                out.write(chunk)
    except BaseException:
        try:
            os.unlink(target)
        except OSError:
            pass
        raise
    return True


def extract_images(archive: str | os.PathLike, dest_parent: str | os.PathLike, *,
                   limits: ArchiveLimits = DEFAULT_LIMITS,
                   progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> ExtractSummary:
    """Extract the images of the zip ``archive`` into a new temporary folder under the
    existing folder ``dest_parent``; return an :class:`ExtractSummary` (the caller removes
    ``summary.folder`` when done).

    ``progress(done, total)`` counts the image entries to extract. ``should_stop()`` is
    polled between entries and chunks and raises :class:`ExtractionStopped`. Refused or
    unreadable archives raise :class:`ArchiveError`, as does an archive without images. On
    any error or stop the new folder is removed and nothing else was written.
    """
    path = Path(archive)
    parent = Path(dest_parent)
    if not parent.is_dir():
        raise ArchiveError(f"cannot extract into {printable(parent)}: not a folder")
    name = printable(path.name)
    with _open_zip(path, limits) as zf:
        plans, skipped = _plan(zf, path, limits)
        if not plans:
            detail = ", ".join(f"{n} {why}" for why, n in skipped.most_common())
            raise ArchiveError(f"{name} holds no images ({' '.join(IMAGE_EXTENSIONS)})"
                               + (f": {detail}" if detail else ": it is empty"))
        declared = sum(p.info.file_size for p in plans)
        free = shutil.disk_usage(parent).free
        if declared > free:
            raise ArchiveError(f"not enough free disk space in {printable(parent)} to extract "
                               f"{name}: {declared / 2**20:.0f} MiB needed, "
                               f"{free / 2**20:.0f} MiB free")
        if should_stop is not None and should_stop():
            raise ExtractionStopped("extraction stopped; nothing was kept")
        folder = Path(tempfile.mkdtemp(prefix="slb-extract-", dir=parent))
        try:
            budget = _Budget(name, sum(p.info.compress_size for p in plans), limits)
            written: list[tuple[str, ...]] = []
            made: set[tuple[str, ...]] = set()  # folders created so far
            if progress is not None:
                progress(0, len(plans))
            for i, plan in enumerate(plans):
                if should_stop is not None and should_stop():
                    raise ExtractionStopped("extraction stopped; nothing was kept")
                try:
                    ok = _extract_one(zf, plan, folder, budget, should_stop, made)
                except (zipfile.BadZipFile, zlib.error, EOFError, struct.error) as exc:
                    raise ArchiveError(f"{name}: the archive is truncated or damaged "
                                       f"('{printable(plan.info.filename)}': "
                                       f"{printable(exc)})") from None
                except OSError as exc:
                    raise ArchiveError(f"cannot write in {printable(folder)}: "
                                       f"{exc.strerror or exc}") from None
                if ok:
                    written.append(plan.parts)
                else:
                    skipped[SKIP_DUPLICATE if _clashes(folder, plan.parts)
                            else SKIP_BAD_NAME] += 1
                if progress is not None:
                    progress(i + 1, len(plans))
            if not written:
                raise ArchiveError(f"{name} holds no image that could be written here")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return ExtractSummary(folder=folder, image_root=_common_root(folder, written),
                          images=len(written), bytes=budget.total,
                          entries=len(written) + sum(skipped.values()), skipped=dict(skipped))


def _clashes(root: Path, parts: tuple[str, ...]) -> bool:
    try:
        return root.joinpath(*parts).exists() or any(
            root.joinpath(*parts[:i]).is_file() for i in range(1, len(parts)))
    except OSError:
        return False


def _common_root(folder: Path, written: list[tuple[str, ...]]) -> Path:
    dirs = [parts[:-1] for parts in written]
    common: list[str] = []
    for level in zip(*dirs, strict=False):
        if any(p != level[0] for p in level):
            break
        common.append(level[0])
    return folder.joinpath(*common)
