"""Where the images of a fit come from: a folder, a local .zip, or an http(s) URL.

The "natural-image preset in one click" fits from a public archive (by default coco128,
:data:`slb.download.COCO128_URL`). :func:`open_image_source` turns any of the three kinds of
source into a folder that :func:`slb.fitting.fit` can read, and cleans up after itself::

    source = open_image_source(COCO128_URL, work_dir, progress=report, should_stop=stop)
    with source as folder:
        result = fit(folder, encode, recursive=True, source=source.label, ...)
    print(source.summary.describe() if source.summary else folder)

A folder is used as it is (nothing is copied or written). A zip is extracted by
:func:`slb.archive.extract_images` into a new temporary folder under ``work_dir``; a URL is
first downloaded there by :func:`slb.download.download` (the zip is deleted once extracted,
to halve the disk use). Whatever happens in or after the ``with`` block (success, error,
stop, Ctrl-C), everything temporary is removed on exit; ``work_dir`` itself is kept.

Archives hold only their extracted images, so ``recursive=True`` is always right for them;
the yielded folder is the deepest one holding every image (for coco128,
``coco128/images/train2017``), so names in skip lists stay short. Pass ``source.label`` (the
URL or the zip's path) as the preset's ``source``: the temporary folder means nothing later.

Progress is reported as ``progress(phase, done, total)``: ``("download", bytes, bytes or
None)`` then ``("extract", images, images)``. Errors are :class:`ImageSourceError`,
:class:`~slb.download.DownloadError` or :class:`~slb.archive.ArchiveError` (all
``ValueError``, see :data:`SOURCE_ERRORS`); a stop raises
:class:`~slb.download.DownloadStopped` or :class:`~slb.archive.ExtractionStopped` (see
:data:`SOURCE_STOPS`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .archive import (
    DEFAULT_LIMITS,
    ArchiveError,
    ArchiveLimits,
    ExtractionStopped,
    ExtractSummary,
    extract_images,
)
from .download import (
    COCO128_URL,
    DEFAULT_TIMEOUT,
    MAX_DOWNLOAD_BYTES,
    DownloadError,
    DownloadStopped,
    check_url,
    display_url,
    download,
)
from .files import FileRefused, check_writable_folder, printable

__all__ = [
    "COCO128_URL",
    "SOURCE_ERRORS",
    "SOURCE_STOPS",
    "ImageSource",
    "ImageSourceError",
    "is_url",
    "names_an_archive",
    "open_image_source",
]

SourceProgress = Callable[[str, int, int | None], None]


class ImageSourceError(ValueError):
    """A source that is neither a folder, a zip file nor an http(s) URL, or an unusable
    work folder; the message says why."""


SOURCE_ERRORS: tuple[type[Exception], ...] = (ImageSourceError, DownloadError, ArchiveError)
SOURCE_STOPS: tuple[type[Exception], ...] = (DownloadStopped, ExtractionStopped)


def is_url(spec: object) -> bool:
    """Whether ``spec`` is meant as a URL (it has ``scheme://``; only http(s) are accepted
    later). A Windows path such as ``C:\\images`` is not a URL."""
    return isinstance(spec, str) and "://" in spec.strip()


def names_an_archive(spec: str) -> bool:
    """Whether ``spec`` names a zip or a URL rather than a folder: such sources are checked
    when opened, a folder can be checked before any work."""
    return is_url(spec) or spec.lower().endswith(".zip")


class ImageSource:
    """A context manager yielding the folder to fit from; see :func:`open_image_source`.

    After entering, ``kind`` is ``"folder"``, ``"zip"`` or ``"url"``, ``folder`` the
    yielded folder and ``summary`` the :class:`~slb.archive.ExtractSummary` of an archive
    (``None`` for a folder); ``summary`` stays readable after the exit.
    """

    def __init__(self, spec: str | os.PathLike, work_dir: str | os.PathLike, *,
                 progress: SourceProgress | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 timeout: float = DEFAULT_TIMEOUT,
                 max_download_bytes: int = MAX_DOWNLOAD_BYTES,
                 limits: ArchiveLimits = DEFAULT_LIMITS) -> None:
        self.spec = spec
        self.work_dir = Path(work_dir)
        self.progress = progress
        self.should_stop = should_stop
        self.timeout = timeout
        self.max_download_bytes = max_download_bytes
        self.limits = limits
        self.kind = ""
        self.folder: Path | None = None
        self.summary: ExtractSummary | None = None
        self._temp: Path | None = None

    @property
    def label(self) -> str:
        """What the images came from, for a preset's ``source`` field and messages: the URL
        (without credentials), the zip file or the folder."""
        if is_url(self.spec):
            return display_url(str(self.spec).strip())
        return printable(os.fspath(self.spec))

    def _report(self, phase: str) -> Callable[[int, int | None], None] | None:
        if self.progress is None:
            return None
        progress = self.progress
        return lambda done, total: progress(phase, done, total)

    def _classify(self) -> tuple[str, str | Path]:
        spec = self.spec
        if is_url(spec):
            return "url", check_url(str(spec))
        if not isinstance(spec, (str, os.PathLike)) or not os.fspath(spec).strip():
            raise ImageSourceError(f"no image source given: {spec!r} (a folder, a .zip file "
                                   "or an http(s) URL)")
        path = Path(os.fspath(spec))
        if path.is_dir():
            return "folder", path
        if path.is_file():
            return "zip", path  # anything else is refused by the zip check, with the reason
        if path.exists():
            raise ImageSourceError(f"{printable(path)} is neither a folder nor a zip file")
        raise ImageSourceError(f"no such folder or file: {printable(path)}")

    def __enter__(self) -> Path:
        kind, where = self._classify()
        self.kind = kind
        if kind == "folder":
            self.folder = Path(where)
            return self.folder
        try:
            check_writable_folder(self.work_dir, create=True)
        except FileRefused as exc:
            raise ImageSourceError(f"work folder: {exc}") from None
        self._temp = Path(tempfile.mkdtemp(prefix="slb-source-", dir=self.work_dir))
        try:
            if kind == "url":
                archive = download(str(where), self._temp, timeout=self.timeout,
                                   max_bytes=self.max_download_bytes,
                                   progress=self._report("download"),
                                   should_stop=self.should_stop)
            else:
                archive = Path(where)
            self.summary = extract_images(archive, self._temp, limits=self.limits,
                                          progress=self._report("extract"),
                                          should_stop=self.should_stop)
            if kind == "url":
                archive.unlink()  # extracted: the zip is no longer needed
        except BaseException:
            self._cleanup()
            raise
        self.folder = self.summary.image_root
        return self.folder

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None


def open_image_source(spec: str | os.PathLike, work_dir: str | os.PathLike, *,
                      progress: SourceProgress | None = None,
                      should_stop: Callable[[], bool] | None = None,
                      timeout: float = DEFAULT_TIMEOUT,
                      max_download_bytes: int = MAX_DOWNLOAD_BYTES,
                      limits: ArchiveLimits = DEFAULT_LIMITS) -> ImageSource:
    """A context manager yielding a folder of images for :func:`slb.fitting.fit`.

    ``spec`` is a folder (yielded as it is), a local zip file, or an http(s) URL of a zip
    (downloaded with ``timeout`` and ``max_download_bytes``); archives are extracted under
    ``work_dir`` (created if needed) within ``limits``. ``progress(phase, done, total)``
    and ``should_stop()`` are passed on to both phases. Everything temporary is removed
    when the context exits, however it exits.
    """
    return ImageSource(spec, work_dir, progress=progress, should_stop=should_stop,
                       timeout=timeout, max_download_bytes=max_download_bytes, limits=limits)
