"""Downloading one file over HTTP(S) with limits, for fitting a preset from an image archive.

:func:`download` fetches a URL (by default the public coco128 image set) into a folder with
the standard library only. Why the care: the URL may come from a user or a settings field,
the network may be missing, slow or hostile, and a half-written file must never be taken
for a complete one. So:

- only ``http`` and ``https`` URLs, also after redirects (urllib alone would follow a
  redirect to ``ftp:``);
- a timeout on connecting and on every read (a server that stops sending fails instead of
  hanging), a size cap checked from ``Content-Length`` before reading and again while
  streaming, and a check that a declared length was actually delivered;
- an obvious web page (``text/html``) is refused at once with a clear message; any other
  wrong content is caught by the zip check that follows (:mod:`slb.archive`);
- ``progress(done, total_or_None)`` after each chunk, ``should_stop()`` between chunks and,
  while a read waits on a stalled server, every 0.2 s (a stop closes the connection);
- the data goes to a hidden temporary file in the target folder, renamed only when
  complete, and is removed on any failure or stop, so nothing is left behind.

Every failure is a :class:`DownloadError` (a ``ValueError``) with a one-line message; a
stop is :class:`DownloadStopped`.
"""

from __future__ import annotations

import errno
import http.client
import os
import re
import shutil
import socket
import ssl
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .files import _umask, printable

__all__ = [
    "COCO128_URL",
    "DEFAULT_TIMEOUT",
    "MAX_DOWNLOAD_BYTES",
    "DownloadError",
    "DownloadStopped",
    "check_url",
    "display_url",
    "download",
]

# The public 128-image COCO subset (about 7 MB) that the "natural images" preset uses.
COCO128_URL = "https://github.com/ultralytics/yolov5/releases/download/v1.0/coco128.zip"
DEFAULT_TIMEOUT = 30.0
# Images barely compress, so this matches the archive reader's 4 GiB uncompressed cap
# closely enough while keeping the disk use of one download bounded.
MAX_DOWNLOAD_BYTES = 2 * 2**30
_CHUNK = 64 * 1024
_SCHEMES = ("http", "https")
_USER_AGENT = "sd-webui-signal-leak-bias (python-urllib)"
_WEB_PAGE_TYPES = ("text/html", "application/xhtml+xml")

Progress = Callable[[int, int | None], None]


class DownloadError(ValueError):
    """A download that failed or was refused; the message says why, in one line."""


class DownloadStopped(RuntimeError):
    """The caller's ``should_stop()`` asked to stop; the partial file was removed."""


def display_url(url: str) -> str:
    """``url`` for messages: without a ``user:password@`` part, printable."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return printable(url)
    netloc = parts.netloc.rpartition("@")[2]
    return printable(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))


def _host(url: str) -> str:
    try:
        return printable(urllib.parse.urlsplit(url).netloc.rpartition("@")[2]) or "the server"
    except ValueError:
        return "the server"


def check_url(url: object) -> str:
    """``url`` if it is an http(s) URL with a host; :class:`DownloadError` otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise DownloadError(f"not a URL: {url!r}")
    url = url.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise DownloadError(f"not a valid URL: {display_url(url)} ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        shown = f"'{scheme}:'" if scheme else "no scheme"
        raise DownloadError(f"only http:// and https:// URLs can be downloaded, got {shown} "
                            f"in {display_url(url)}")
    if not parts.hostname:
        raise DownloadError(f"the URL {display_url(url)} has no host name")
    if parts.username is not None or parts.password is not None:
        # urllib would take "user:pass@host" for a host name; and no secret goes in a message
        raise DownloadError(f"URLs with a user name or password are not supported: "
                            f"{display_url(url)}")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise DownloadError(f"the URL {display_url(url)} contains spaces or control characters")
    return url


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects only to http(s) URLs (urllib alone also allows ``ftp:``)."""

    def redirect_request(self, req: urllib.request.Request, fp: object, code: int, msg: str,
                         headers: object, newurl: str) -> urllib.request.Request | None:
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in _SCHEMES:
            raise DownloadError(f"{display_url(req.full_url)} redirects to a '{scheme}:' URL; "
                                "only http and https are followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _reason(exc: BaseException) -> str:
    """A short human reason for a network error."""
    if isinstance(exc, socket.gaierror):
        return f"the host name could not be resolved ({exc.strerror or exc}); are you online?"
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError from Python 3.10
        return "the connection timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate could not be verified ({exc.verify_message or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return printable(exc) or type(exc).__name__


def _file_name(url: str) -> str:
    """A safe local file name from the URL's last path segment."""
    tail = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rpartition("/")[2])
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", tail).lstrip(".")[:100]
    return tail or "download.zip"


def _free_name(folder: Path, name: str) -> Path:
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    candidate, n = folder / name, 1
    while candidate.exists() or candidate.is_symlink():
        candidate = folder / (f"{stem}-{n}.{suffix}" if dot else f"{stem}-{n}")
        n += 1
    return candidate


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f}" if n >= 2**20 else f"{n / 2**20:.2f}"


def download(url: str, dest_dir: str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT,
             max_bytes: int = MAX_DOWNLOAD_BYTES, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> Path:
    """Download ``url`` into the existing folder ``dest_dir``; return the new file's path.

    The file is named after the URL's last path segment (``download.zip`` if none, never
    replacing an existing file). ``timeout`` (seconds) applies to connecting and to each
    read. More than ``max_bytes`` is refused, from ``Content-Length`` before reading or
    while streaming. ``progress(done, total)`` is called with ``total`` ``None`` when the
    server gives no length. ``should_stop()`` is polled between chunks and raises
    :class:`DownloadStopped`. Every failure raises :class:`DownloadError`; in every case
    but success nothing is left in ``dest_dir``.
    """
    url = check_url(url)
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    folder = Path(dest_dir)
    if not folder.is_dir():
        raise DownloadError(f"cannot download into {printable(folder)}: not a folder")
    shown, host = display_url(url), _host(url)
    limit = f"the {_mib(max_bytes)} MiB limit"

    if should_stop is not None and should_stop():
        raise DownloadStopped("download stopped; nothing was kept")
    request = urllib.request.Request(url, headers={
        "User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    try:
        response = opener.open(request, timeout=timeout)
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DownloadError(f"HTTP {exc.code} {exc.reason} from {shown}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {host}: {_reason(exc.reason)}") from None
    except TimeoutError:  # connected, but no answer to the request
        raise DownloadError(f"the server stopped sending data: {host} did not answer for "
                            f"{timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"cannot reach {host}: {_reason(exc)}") from None

    tmp: str | None = None
    try:
        with response:
            status = getattr(response, "status", 200)
            if status != 200:
                raise DownloadError(f"HTTP {status} {getattr(response, 'reason', '')} from "
                                    f"{shown} (expected 200 OK)")
            ctype = response.headers.get_content_type()
            if ctype in _WEB_PAGE_TYPES:
                raise DownloadError(f"the URL returned a web page, not a zip archive: {shown} "
                                    "(check the link points at the .zip file itself)")
            encoding = (response.headers.get("Content-Encoding") or "identity").lower()
            if encoding not in ("identity", ""):
                raise DownloadError(f"{shown} was sent with Content-Encoding '{encoding}', "
                                    "which is not supported")
            total = _content_length(response.headers.get("Content-Length"))
            if total is not None and total > max_bytes:
                raise DownloadError(f"{shown} is larger than {limit} "
                                    f"({_mib(total)} MiB)")
            if total is not None:
                free = shutil.disk_usage(folder).free
                if total > free:
                    raise DownloadError(f"not enough free disk space in {printable(folder)} "
                                        f"for {shown}: {_mib(total)} MiB needed, "
                                        f"{_mib(free)} MiB free")
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
            done = 0
            with os.fdopen(fd, "wb") as out, _StopWatch(response, should_stop) as watch:
                if progress is not None:
                    progress(0, total)
                while True:
                    watch.check()
                    try:
                        chunk = _read(response, host, timeout)
                    except DownloadError:
                        watch.check()  # a read cut short by Stop is a stop, not a failure
                        raise
                    if not chunk:
                        watch.check()
                        break
                    done += len(chunk)
                    if done > max_bytes:
                        raise DownloadError(f"{shown} is larger than {limit}")
                    _write(out, chunk, folder)
                    if progress is not None:
                        progress(done, total)
                if total is not None and done < total:
                    raise DownloadError(f"the download from {host} ended early: got {done} "
                                        f"of {total} bytes (connection lost?)")
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise DownloadError(f"cannot write in {printable(folder)}: "
                                        f"{exc.strerror or exc}") from None
            os.chmod(tmp, 0o666 & ~_umask())  # the user's normal mode, not mkstemp's 0600
            final = _free_name(folder, _file_name(url))
            os.replace(tmp, final)
            tmp = None
            return final
    except OSError as exc:  # creating, closing or renaming the file
        raise DownloadError(f"cannot write in {printable(folder)}: {exc.strerror or exc}"
                            ) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


class _StopWatch:
    """Polls ``should_stop`` while the body streams; on a stop, shuts the socket down.

    Why: a read blocks until data arrives or the timeout passes, so without this a Stop
    pressed while the server stalls would wait up to ``timeout`` seconds. Shutting the
    socket down ends the blocked read at once; :meth:`check` then reports the stop.
    """

    _POLL_S = 0.2

    def __init__(self, response: object, should_stop: Callable[[], bool] | None) -> None:
        self._should_stop = should_stop
        self._sock = _socket_of(response)
        self._done = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _StopWatch:
        if self._should_stop is not None and self._sock is not None:
            self._thread = threading.Thread(target=self._watch, name="slb-download-stop",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(self._POLL_S):
            if self._poll():
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed: the read ends by itself
                return

    def _poll(self) -> bool:
        if not self._stopped and self._should_stop is not None:
            try:
                self._stopped = bool(self._should_stop())
            except Exception:  # noqa: BLE001 - a broken callback must not kill the download
                self._stopped = False
        return self._stopped

    def check(self) -> None:
        if self._poll():
            raise DownloadStopped("download stopped; nothing was kept")


def _socket_of(response: object) -> socket.socket | None:
    """The connection's socket under an ``http.client`` response, if it can be reached."""
    raw = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        length = int(value.strip())
    except ValueError:
        return None  # a garbled header: stream and count instead
    return length if length >= 0 else None


def _read(response: http.client.HTTPResponse, host: str, timeout: float) -> bytes:
    try:
        return response.read1(_CHUNK)  # whatever has arrived: stop stays responsive
    except TimeoutError:
        raise DownloadError(f"the server stopped sending data: nothing arrived from {host} "
                            f"for {timeout:g} s") from None
    except http.client.IncompleteRead as exc:
        raise DownloadError(f"the download from {host} ended early ({len(exc.partial)} "
                            "bytes of the last part; connection lost?)") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"the download from {host} failed: {_reason(exc)}") from None


def _write(out: object, chunk: bytes, folder: Path) -> None:
    try:
        out.write(chunk)  # type: ignore[attr-defined]
    except OSError as exc:
        why = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise DownloadError(f"cannot write in {printable(folder)}: {why}") from None
