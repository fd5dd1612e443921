"""Shared fixtures: the ISBI 2012 copies in ../shared, a loopback HTTP server, tiny datasets."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import tifffile
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UNET_SHARED_DATA", REPO.parent / "shared" / "data" / "isbi2012"))

# sha256 of the pixel bytes, from ../shared/data/isbi2012/README.md
ISBI_PIXEL_SHA256 = {
    "train-volume.tif": "200da3d452d726e6c9ca1ce04b869d4edb727320d23b516d01cce707dc8c4760",
    "train-labels.tif": "a7cb64000a1a7e542682927e19c91339f58f9f178e0bcce4e207371116f0ca36",
    "test-volume.tif": "1b58fa7ec1d0ff9d39a855622db3ff66a97863036339b0d04be51b2f5a99b0e9",
}
ISBI_FILE_SHA256 = {
    "train-volume.tif": "a05df637d576b2387966b7323a34e90e2cdbf86dcaeee86c44d1fd2d616be489",
    "train-labels.tif": "9a9f1056ffd8bac61060b58dc84ad40295c02fc5ff15e68ddfc2f12d211c3dcf",
    "test-volume.tif": "046fbb869a953f1ffa63a9722849fe0aa693ad7a21aa9278a2bff2397d00b16f",
}


@pytest.fixture(scope="session")
def isbi_dir() -> Path:
    if not (SHARED_DATA / "train-volume.tif").exists():
        pytest.fail(f"ISBI 2012 data not found in {SHARED_DATA}; set UNET_SHARED_DATA")
    return SHARED_DATA


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder with Range support, plus failure modes under path prefixes.

    /truncate/<file>  always closes the connection halfway through the body
    /flaky/<file>     does so on the first request for a file only
    /norange/<file>   like flaky, then ignores Range headers (200 and the whole file)
    /range416/<file>  like flaky, then answers 416 to any Range request
    /chunked/<file>   chunked transfer (no Content-Length); the first response breaks off mid-chunk
    /nolength/<file>  no Content-Length; the body always ends halfway, at connection close
    /error500/<file>  always answers 500
    """

    requests: ClassVar[list] = []
    seen_flaky: ClassVar[set] = set()
    FIRST_TRUNCATED = ("flaky", "norange", "range416", "chunked")

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        type(self).requests.append((self.path, self.headers.get("Range")))
        parts = self.path.lstrip("/").split("/", 1)
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
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)
        if truncate:
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
        handler = type("Handler", (_Handler,), {"requests": [], "seen_flaky": set()})
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


def tiny_config(data_base: str, results: str = "results") -> dict:
    """The tiny pipeline config that CI runs end to end; later stages extend it."""
    return {
        "results": results,
        "download": {"retries": 1, "backoff_s": 0.05, "timeout_s": 10},
        "preset": "tiny",
        "train_dataset": "tiny",
        "presets": {
            "tiny": {
                "model": {"architecture": "unet", "levels": 3, "base_channels": 4, "padded": False, "dropout": 0.5},
                "input_size": 92,
                "samples": 6,
                "training": {
                    "iterations": 4,
                    "batch_size": 2,
                    "validate_every": 2,
                    "log_every": 1,
                    "learning_rate": 0.001,
                },
            }
        },
        "augmentation": {"samples_per_task": 2},
        "prediction": {"submission_tiff": ["tiny_test"]},
        "datasets": {
            "tiny": {
                "base": data_base,
                "image": {"source": "train-volume.tif"},
                "labels": {"source": "train-labels.tif", "foreground": 255, "background": 0},
                "voxel_size": [50.0, 4.0, 4.0],
                "sections": {"train": "0-1", "validation": "2"},
            },
            "tiny_test": {
                "base": data_base,
                "image": {"source": "test-volume.tif"},
                "voxel_size": [50.0, 4.0, 4.0],
                "sections": {"test": "all"},
            },
        },
    }


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow's Snakefile with ``workdir`` as working directory."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--nolock",
        *args,
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
