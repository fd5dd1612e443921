"""Shared fixtures: the ISBI 2012 copies in ../shared, a loopback HTTP server, tiny datasets."""

from __future__ import annotations

import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import tifffile
from helpers import SHARED_DATA


@pytest.fixture(scope="session")
def isbi_dir() -> Path:
    if not (SHARED_DATA / "train-volume.tif").exists():
        pytest.fail(f"ISBI 2012 data not found in {SHARED_DATA}; set UNET_SHARED_DATA")
    return SHARED_DATA


class RequestLog(list):
    """(path, Range header) of every request, in order; ``if_range`` and ``auth``: their If-Range and
    Authorization headers."""

    def __init__(self):
        super().__init__()
        self.if_range = []
        self.auth = []


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder with Range support, plus failure modes under path prefixes.

    /truncate/<file>  always closes the connection halfway through the body
    /flaky/<file>     does so on the first request for a file only
    /norange/<file>   like flaky, then ignores Range headers (200 and the whole file)
    /range416/<file>  like flaky, then answers 416 to any Range request
    /chunked/<file>   chunked transfer (no Content-Length); the first response breaks off mid-chunk
    /nolength/<file>  no Content-Length; the body always ends halfway, at connection close
    /error500/<file>  always answers 500
    /wrongrange/<file> like flaky, then answers a resume with a range that starts at 0 (206, whole file)
    /offrange/<file>  answers every request with 206 and the file's last tenth (a range nobody asked for)
    /drip/<file>      sends the headers, then one byte of the body every 0.25 s
    A query string is ignored (signed URLs). Every answer carries a Last-Modified validator.
    """

    requests: ClassVar[RequestLog] = RequestLog()
    seen_flaky: ClassVar[set] = set()
    FIRST_TRUNCATED = ("flaky", "norange", "range416", "chunked", "wrongrange")
    LAST_MODIFIED = "Tue, 01 Dec 2026 12:00:00 GMT"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        type(self).requests.append((self.path, self.headers.get("Range")))
        type(self).requests.if_range.append(self.headers.get("If-Range"))
        type(self).requests.auth.append(self.headers.get("Authorization"))
        parts = self.path.split("?")[0].lstrip("/").split("/", 1)
        mode, name = (parts[0], parts[1]) if len(parts) == 2 else ("plain", parts[0])
        if mode == "error500":
            self.send_error(500, "boom")
            return
        file = Path(self.directory) / name
        if not file.is_file():
            self.send_error(404, "File not found")
            return
        data = file.read_bytes()
        range_header = self.headers.get("Range")
        if range_header and mode == "range416":
            self.send_error(416, "Range Not Satisfiable")
            return
        start = 0
        if range_header and mode not in ("truncate", "norange"):
            start = int(range_header.split("=")[1].split("-")[0])
        if (range_header and mode == "wrongrange") or mode == "offrange":
            self._send_wrong_range(data, start=len(data) * 9 // 10 if mode == "offrange" else 0)
            return
        if mode == "drip":
            self._send_drip(data)
            return
        truncate = mode in ("truncate", "nolength") or (
            mode in self.FIRST_TRUNCATED and name not in type(self).seen_flaky
        )
        type(self).seen_flaky.add(name)
        body = data[start:]
        if mode == "chunked":
            self._send_chunked(body, truncate, start, len(data))
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if mode != "nolength":
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", self.LAST_MODIFIED)
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)
        if truncate:
            self.close_connection = True

    def _send_wrong_range(self, data: bytes, start: int = 0):
        """A 206 whose Content-Range does not start where the client asked: appending it would splice the file."""
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def _send_drip(self, data: bytes):
        """The whole file announced, one byte sent every 0.25 s: each read gets data, none completes a block."""
        import time

        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            for byte in data[:40]:  # ten seconds at most: the client must give up long before
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.25)
        except OSError:
            pass  # the client hung up, as it should
        self.close_connection = True

    def _send_chunked(self, body: bytes, truncate: bool, start: int, total: int):
        self.protocol_version = "HTTP/1.1"
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        size = 1 << 16
        for offset in range(0, len(body), size):
            chunk = body[offset : offset + size]
            if truncate and offset >= len(body) // 2:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk[: len(chunk) // 2])  # breaks off mid-chunk
                break
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        else:
            self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True


@pytest.fixture
def serve():
    """Start loopback HTTP servers over folders: ``serve(folder)`` returns (base_url, request log)."""
    servers = []

    def start(folder: Path):
        handler = type("Handler", (_Handler,), {"requests": RequestLog(), "seen_flaky": set()})
        server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}", handler.requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server(serve, isbi_dir):
    """A loopback HTTP server over ../shared/data/isbi2012; yields (base_url, request log)."""
    return serve(isbi_dir)


@pytest.fixture(scope="session")
def tiny_isbi(isbi_dir, tmp_path_factory) -> Path:
    """Three ISBI sections cropped to 128x128, as TIFF stacks, for fast end-to-end runs."""
    folder = tmp_path_factory.mktemp("tiny_isbi")
    for name in ("train-volume.tif", "train-labels.tif", "test-volume.tif"):
        volume = tifffile.imread(isbi_dir / name)
        tifffile.imwrite(folder / name, np.ascontiguousarray(volume[:3, :128, :128]), photometric="minisblack")
    return folder
