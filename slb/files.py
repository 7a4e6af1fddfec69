"""Safe file handling shared by presets, partial fits and CLI outputs.

- :func:`atomic_write`: a temporary file in the target folder, then a rename, so a reader
  never sees half a file and a failure leaves nothing behind; it never replaces an existing
  file unless asked, and gives the file the user's normal mode (``0666`` less the umask),
  not the ``0600`` of a temporary file.
- :func:`read_regular_file`: refuses FIFOs, devices and folders without blocking, and files
  over a size cap, before reading.
- :func:`printable`: a path or message that prints on any console, whatever bytes a file
  name holds (names that are not valid UTF-8 arrive as lone surrogates).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


class FileRefused(ValueError):
    """A file that is not read or written; the message says why."""


class ExistsError(FileRefused):
    """The target exists and overwriting was not asked for."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def describe_mode(mode: int) -> str:
    """What a non-regular file is, for messages."""
    for test, label in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return label
    return "not a regular file"


def check_writable_folder(folder: str | os.PathLike, create: bool = True) -> Path:
    """``folder`` as a Path if files can be written in it (creating it when ``create``);
    else :class:`FileRefused` saying why. Called before any long work."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise FileRefused(f"{printable(path)} is not a folder")
    if not path.exists():
        if not create:
            raise FileRefused(f"folder {printable(path)} does not exist")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FileRefused(f"cannot create folder {printable(path)}: "
                              f"{exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FileRefused(f"folder {printable(path)} is not writable")
    return path


def check_new_file(path: str | os.PathLike, overwrite: bool, flag: str = "--overwrite",
                   create_folder: bool = False) -> Path:
    """Check before any work that ``path`` can be written: its folder exists (or is created
    when ``create_folder``) and is writable, and the file does not exist unless
    ``overwrite`` (the message names ``flag``)."""
    path = Path(path)
    check_writable_folder(path.parent if str(path.parent) else ".", create=create_folder)
    if path.is_dir():
        raise FileRefused(f"{printable(path)} is a folder")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise ExistsError(f"{printable(path)} exists; pass {flag} to replace it")
    return path


def atomic_write(path: str | os.PathLike, data: bytes, overwrite: bool = False,
                 flag: str = "--overwrite") -> Path:
    """Write ``data`` to ``path`` atomically; never replace a file unless ``overwrite``."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the name exists or appeared meanwhile
            except FileExistsError:
                raise ExistsError(f"{printable(path)} exists; pass {flag} to replace it"
                                  ) from None
            except OSError:
                if path.exists():
                    raise ExistsError(f"{printable(path)} exists; pass {flag} to replace it"
                                      ) from None
                os.replace(tmp, path)  # file systems without hard links
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextlib.contextmanager
def open_regular_file(path: str | os.PathLike, max_bytes: int) -> Iterator[tuple[BinaryIO, int]]:
    """Open a regular file of at most ``max_bytes`` for reading: yields ``(file, size)``.

    FIFOs, devices and folders are refused without being read (the type is checked before
    opening, and again on the open file, which is opened non-blocking so a FIFO swapped in
    between cannot hang). :class:`FileRefused` gives the reason without the file's name.
    """
    try:
        st = os.stat(path)  # follows links: a link to /dev/zero is a character device
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"it is {describe_mode(st.st_mode)}")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise FileRefused(f"cannot read it ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"it is {describe_mode(st.st_mode)}")
        if st.st_size > max_bytes:
            raise FileRefused(f"it is {st.st_size / 2**20:.1f} MiB; at most "
                              f"{max_bytes / 2**20:.0f} MiB are read")
        yield fh, st.st_size


def read_regular_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; :class:`FileRefused` (naming
    the file) otherwise."""
    name = printable(Path(path).name)
    try:
        with open_regular_file(path, max_bytes) as (fh, _size):
            return fh.read(max_bytes + 1)[:max_bytes]
    except FileRefused as exc:
        raise FileRefused(f"{name}: {exc}") from None
    except OSError as exc:
        raise FileRefused(f"{name}: cannot read it ({exc.strerror or exc})") from None


def printable(text: object) -> str:
    """``text`` with bytes that are not valid UTF-8 shown as ``\\xNN`` escapes, so it prints
    and serialises to JSON everywhere."""
    s = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        try:
            raw = s.encode("utf-8", "surrogateescape")  # names decoded by os.fsdecode
        except UnicodeEncodeError:
            return s.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
