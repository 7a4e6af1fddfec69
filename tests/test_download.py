"""slb.download and slb.image_source against a real HTTP server on 127.0.0.1.

Nothing leaves the machine: the server runs in a thread on an ephemeral local port, the
"unreachable host" is a closed local port and the DNS failure is a patched resolver. Every
failing case checks the message and that the work folder is left empty."""

from __future__ import annotations

import http.server
import io
import os
import socket
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from slb.archive import ArchiveError, ArchiveLimits, ExtractionStopped
from slb.download import COCO128_URL, DownloadError, DownloadStopped, download
from slb.fitting import fit
from slb.image_source import (
    SOURCE_ERRORS,
    SOURCE_STOPS,
    ImageSourceError,
    is_url,
    open_image_source,
)
from slb.images import list_image_files

PREFIX = "coco128/images/train2017/"


# ---------------------------------------------------------------------------------------------
# The local server


class Server:
    """A threaded HTTP server on 127.0.0.1 whose routes are plain functions of the handler."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {}
        self.release = threading.Event()  # ends every stalled response at teardown
        routes = self.routes

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as some tests want

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def send(handler, body: bytes, ctype: str = "application/zip", length: int | None = -1,
         status: int = 200) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    if length is not None:
        handler.send_header("Content-Length", str(len(body) if length == -1 else length))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def work(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture(scope="module")
def coco_zip_bytes(coco128) -> bytes:
    """A small coco128-shaped archive from real test images."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in list_image_files(coco128)[:6]:
            zf.writestr(PREFIX + p.name, p.read_bytes())
            zf.writestr(f"coco128/labels/train2017/{p.stem}.txt", b"0 0.5 0.5 0.1 0.1\n")
        zf.writestr("coco128/LICENSE", b"AGPL\n")
    return buf.getvalue()


def refused(work: Path, match: str, url: str, exc: type[Exception] = DownloadError,
            **kwargs) -> Exception:
    before = tree(work.parent)
    with pytest.raises(exc, match=match) as info:
        download(url, work, **kwargs)
    assert list(work.iterdir()) == [], "a partial file was left behind"
    assert tree(work.parent) == before
    return info.value


# ---------------------------------------------------------------------------------------------
# download()


def test_download_a_zip_with_progress(server, work, coco_zip_bytes):
    server.routes["/files/coco128.zip"] = lambda h: send(h, coco_zip_bytes)
    calls = []
    path = download(server.url("/files/coco128.zip"), work,
                    progress=lambda d, t: calls.append((d, t)))
    assert path == work / "coco128.zip"
    assert path.read_bytes() == coco_zip_bytes
    assert list(work.iterdir()) == [path]  # no temporary file left
    total = len(coco_zip_bytes)
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert all(t == total for _, t in calls)
    # a second download never replaces the first
    again = download(server.url("/files/coco128.zip"), work)
    assert again == work / "coco128-1.zip" and path.read_bytes() == coco_zip_bytes


def test_download_without_length_and_after_redirect(server, work, coco_zip_bytes):
    def moved(h):
        h.send_response(302)
        h.send_header("Location", "/stream")
        h.end_headers()

    server.routes["/get"] = moved
    server.routes["/stream"] = lambda h: send(h, coco_zip_bytes, "application/octet-stream",
                                              length=None)
    calls = []
    path = download(server.url("/get"), work, progress=lambda d, t: calls.append((d, t)))
    assert path.name == "get" and path.read_bytes() == coco_zip_bytes
    assert {t for _, t in calls} == {None}


def test_http_404(server, work):
    url = server.url("/nothing-here.zip")
    refused(work, f"HTTP 404 Not Found from {url}$", url)


def test_http_500(server, work):
    server.routes["/boom"] = lambda h: h.send_error(500)
    refused(work, "HTTP 500 Internal Server Error from http://127.0.0.1", server.url("/boom"))


def test_web_page_instead_of_a_zip(server, work):
    server.routes["/page"] = lambda h: send(h, b"<html><body>Download here!</body></html>",
                                            "text/html; charset=utf-8")
    refused(work, "the URL returned a web page, not a zip archive", server.url("/page"))


def test_server_that_stalls_after_the_headers(server, work):
    def stall(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        h.wfile.write(b"PK\x03\x04")
        h.wfile.flush()
        server.release.wait(30)  # then nothing

    server.routes["/stall"] = stall
    start = time.perf_counter()
    refused(work, r"the server stopped sending data: nothing arrived from 127\.0\.0\.1:\d+ "
                  r"for 1 s", server.url("/stall"), timeout=1.0)
    assert time.perf_counter() - start < 10


def test_server_that_never_answers(server, work):
    server.routes["/silent"] = lambda h: server.release.wait(30)
    refused(work, r"the server stopped sending data: 127\.0\.0\.1:\d+ did not answer for "
                  r"0\.5 s", server.url("/silent"), timeout=0.5)


def test_too_large_content_length_is_refused_before_reading(server, work):
    served = []

    def huge(h):
        served.append(1)
        h.send_response(200)
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", str(5 * 2**30))
        h.end_headers()
        server.release.wait(30)  # would stall if it were read

    server.routes["/huge.zip"] = huge
    start = time.perf_counter()
    refused(work, r"huge\.zip is larger than the 1 MiB limit \(5120 MiB\)",
            server.url("/huge.zip"), max_bytes=2**20)
    assert served and time.perf_counter() - start < 5


def test_too_large_body_without_length(server, work):
    def endless(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        for _ in range(64):  # 4 MiB, with no Content-Length
            h.wfile.write(bytes(64 * 1024))

    server.routes["/endless"] = endless
    refused(work, r"endless is larger than the 1 MiB limit$", server.url("/endless"),
            max_bytes=2**20)


def test_body_shorter_than_its_length(server, work):
    server.routes["/short.zip"] = lambda h: send(h, b"PK\x03\x04" + bytes(100), length=5000)
    refused(work, "ended early: got 104 of 5000 bytes", server.url("/short.zip"))


@pytest.mark.parametrize("url, match", [
    ("file:///etc/passwd", r"only http:// and https:// URLs can be downloaded, got 'file:'"),
    ("ftp://127.0.0.1/coco128.zip", r"got 'ftp:'"),
    ("data:text/plain,hello", r"got 'data:'"),
    ("coco128.zip", "got no scheme"),
    ("http:///coco128.zip", "has no host name"),
    ("http://127.0.0.1:99999/x.zip", "not a valid URL"),
])
def test_urls_that_are_not_http(work, url, match):
    refused(work, match, url)


def test_redirect_to_another_scheme_is_refused(server, work):
    def to_ftp(h):
        h.send_response(302)
        h.send_header("Location", "ftp://127.0.0.1/coco128.zip")
        h.end_headers()

    server.routes["/r"] = to_ftp
    refused(work, "redirects to a 'ftp:' URL; only http and https are followed",
            server.url("/r"))


def test_unreachable_host(work):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    refused(work, f"cannot reach 127.0.0.1:{port}: connection refused",
            f"http://127.0.0.1:{port}/coco128.zip", timeout=5)


def test_offline_dns_failure(work, monkeypatch):
    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    refused(work, "cannot reach github.com: the host name could not be resolved "
                  r"\(Name or service not known\); are you online\?", COCO128_URL)


def test_credentials_are_not_shown_in_messages(server, work):
    url = server.url("/x.zip").replace("http://", "http://user:secret@")
    err = refused(work, "URLs with a user name or password are not supported: "
                        r"http://127\.0\.0\.1:\d+/x\.zip$", url)
    assert "secret" not in str(err)


def test_stop_mid_download_removes_the_partial_file(server, work):
    def slow(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", str(40 * 65536))
        h.end_headers()
        for _ in range(40):
            h.wfile.write(bytes(65536))
            h.wfile.flush()
            time.sleep(0.01)

    server.routes["/slow.zip"] = slow
    progress = []
    partial = []

    def stop() -> bool:
        partial.extend(p.name for p in work.iterdir())
        return bool(progress) and progress[-1] > 0

    refused(work, "download stopped", server.url("/slow.zip"), exc=DownloadStopped,
            progress=lambda d, t: progress.append(d), should_stop=stop)
    assert partial and all(n.startswith(".download-") for n in partial)  # it was mid-way
    assert 0 < progress[-1] < 40 * 65536


def test_stop_while_the_server_stalls_ends_the_wait_at_once(server, work):
    def stalls(h):  # one chunk, then the server sends nothing
        h.send_response(200)
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", str(10 * 65536))
        h.end_headers()
        h.wfile.write(bytes(65536))
        h.wfile.flush()
        server.release.wait(30)

    arrived: list[float] = []

    def stop() -> bool:  # the user presses Stop 0.5 s after the chunk, mid-wait
        return bool(arrived) and time.monotonic() - arrived[0] > 0.5

    server.routes["/stalls.zip"] = stalls
    started = time.monotonic()
    refused(work, "download stopped", server.url("/stalls.zip"), exc=DownloadStopped,
            should_stop=stop, timeout=20,
            progress=lambda done, total: arrived.append(time.monotonic()) if done else None)
    # Without the watcher the read would sit out the 20 s timeout (or the 30 s stall).
    assert time.monotonic() - started < 10


def test_bad_arguments(work, tmp_path):
    with pytest.raises(ValueError, match="timeout"):
        download("http://127.0.0.1/x.zip", work, timeout=0)
    with pytest.raises(ValueError, match="max_bytes"):
        download("http://127.0.0.1/x.zip", work, max_bytes=0)
    with pytest.raises(DownloadError, match="not a folder"):
        download("http://127.0.0.1/x.zip", tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# open_image_source(): URL, zip, folder


def test_url_source_fits_and_cleans_up(server, work, coco_zip_bytes, encoder):
    server.routes["/coco128.zip"] = lambda h: send(h, coco_zip_bytes)
    phases = []
    source = open_image_source(server.url("/coco128.zip"), work,
                               progress=lambda *a: phases.append(a))
    with source as folder:
        assert source.kind == "url" and source.label == server.url("/coco128.zip")
        assert folder.parts[-3:] == ("coco128", "images", "train2017")
        assert folder.is_relative_to(work)
        # only the extracted images are there (the downloaded zip was deleted)
        assert sorted(p.name for p in work.rglob("*") if p.is_file()) == sorted(
            p.name for p in list_image_files(folder))
        result = fit(folder, encoder, "dct+pixel", 1, size=64, recursive=True, batch_size=3)
        assert result.images == 6 and not result.skipped
    assert list(work.iterdir()) == []
    assert source.summary is not None and source.summary.images == 6
    assert source.summary.skipped == {"not an image": 7}
    assert [p[0] for p in phases] == sorted((p[0] for p in phases), key=["download",
                                                                         "extract"].index)
    assert phases[-1] == ("extract", 6, 6)
    assert ("download", len(coco_zip_bytes), len(coco_zip_bytes)) in phases


def test_local_zip_source_keeps_the_zip(tmp_path, work, coco_zip_bytes):
    archive = tmp_path / "mine.zip"
    archive.write_bytes(coco_zip_bytes)
    with open_image_source(archive, work) as folder:
        assert len(list_image_files(folder)) == 6
    assert archive.read_bytes() == coco_zip_bytes
    assert list(work.iterdir()) == []


def test_folder_source_is_used_as_is(coco128, tmp_path):
    work = tmp_path / "not-created"
    source = open_image_source(str(coco128), work)
    with source as folder:
        assert folder == coco128 and source.kind == "folder" and source.summary is None
    assert not work.exists()


def test_error_inside_the_block_still_cleans_up(server, work, coco_zip_bytes):
    server.routes["/c.zip"] = lambda h: send(h, coco_zip_bytes)
    with pytest.raises(KeyboardInterrupt):
        with open_image_source(server.url("/c.zip"), work):
            raise KeyboardInterrupt
    assert list(work.iterdir()) == []


def test_stop_mid_download_via_source(server, work, coco_zip_bytes):
    server.routes["/c.zip"] = lambda h: send(h, coco_zip_bytes * 8)  # several chunks
    seen = []

    def stop() -> bool:
        return any(phase == "download" and done > 0 for phase, done, _ in seen)

    with pytest.raises(SOURCE_STOPS) as info:
        with open_image_source(server.url("/c.zip"), work, should_stop=stop,
                               progress=lambda *a: seen.append(a)):
            pass
    assert isinstance(info.value, DownloadStopped)
    assert list(work.iterdir()) == []


def test_stop_mid_extraction_via_source(server, work, coco_zip_bytes):
    server.routes["/c.zip"] = lambda h: send(h, coco_zip_bytes)
    seen = []

    def stop() -> bool:
        return any(phase == "extract" and done >= 2 for phase, done, _ in seen)

    with pytest.raises(ExtractionStopped):
        with open_image_source(server.url("/c.zip"), work, should_stop=stop,
                               progress=lambda *a: seen.append(a)):
            pass
    assert ("extract", 2, 6) in seen
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("route, body, ctype, exc, match", [
    ("/page", b"<html>sign in</html>", "text/html", DownloadError, "web page"),
    ("/noise.zip", os.urandom(5000), "application/zip", ArchiveError, "is not a zip archive"),
    ("/html.zip", b"<!doctype html><p>moved", "application/octet-stream", ArchiveError,
     r"is a web page \(HTML\)"),
])
def test_bad_downloads_via_source(server, work, route, body, ctype, exc, match):
    server.routes[route] = lambda h: send(h, body, ctype)
    with pytest.raises(exc, match=match) as info:
        with open_image_source(server.url(route), work):
            pass
    assert isinstance(info.value, SOURCE_ERRORS)
    assert list(work.iterdir()) == []


def test_archive_limits_reach_the_extraction(server, work, coco_zip_bytes):
    server.routes["/c.zip"] = lambda h: send(h, coco_zip_bytes)
    with pytest.raises(ArchiveError, match="more than 3 entries"):
        with open_image_source(server.url("/c.zip"), work, limits=ArchiveLimits(max_entries=3)):
            pass
    with pytest.raises(DownloadError, match="larger than"):
        with open_image_source(server.url("/c.zip"), work, max_download_bytes=1000):
            pass
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("spec, exc, match", [
    ("ftp://example.com/x.zip", DownloadError, "only http:// and https://"),
    ("file:///tmp/x.zip", DownloadError, "got 'file:'"),
    ("", ImageSourceError, "no image source given"),
])
def test_bad_specs(work, spec, exc, match):
    with pytest.raises(exc, match=match):
        with open_image_source(spec, work):
            pass
    assert list(work.iterdir()) == []


def test_missing_path_and_work_dir_problems(tmp_path):
    with pytest.raises(ImageSourceError, match="no such folder or file"):
        with open_image_source(tmp_path / "nope.zip", tmp_path / "work"):
            pass
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"PK")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ImageSourceError, match="work folder: .* is not a folder"):
        with open_image_source(archive, blocker):
            pass


def test_is_url():
    assert is_url("https://x/y.zip") and is_url(" http://x ")
    assert not is_url("C:\\images") and not is_url("/data/coco128") and not is_url(Path("a"))
