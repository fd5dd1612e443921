"""Fetch a remote source robustly: retries with back-off, resume, checksum, limits, atomic rename.

Bytes go to ``<dest>.part`` first; only a complete, verified file is renamed to
``dest``, so Snakemake never sees a truncated download as finished output. A
retry resumes the partial file with an HTTP Range request when the server allows
it; the request carries ``If-Range`` with the first answer's ETag or
Last-Modified, so a changed file comes whole, and the bytes are appended only
when the range the server sends starts where the partial file ends
(``Content-Range``); otherwise the file starts over. On final failure
the partial file is removed, so nothing half-written is left behind.

Limits (``DownloadOptions``): a socket timeout per read, a deadline for the whole
download, a largest size. A redirect from https to http is refused (it would hand
the rest of the transfer to anyone on the path), and a full disk fails at once
instead of being retried as if the network were at fault.
"""

from __future__ import annotations

import errno
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

from ..core.checksums import CHUNK_BYTES, verify_sha256
from ..core.defaults import defaults_from_schema
from ..core.errors import DownloadError

log = logging.getLogger(__name__)

USER_AGENT = "unet-pipeline-download/1"


@dataclass(frozen=True)
@defaults_from_schema("download")
class DownloadOptions:
    """How hard a download tries (the ``download`` section of the config; defaults and meanings: its schema).

    ``deadline_s`` covers the whole download, retries included, and ``max_gb`` is the largest file accepted;
    None sets no limit.
    """

    retries: int
    backoff_s: float
    timeout_s: float
    deadline_s: float | None
    max_gb: float | None

    @classmethod
    def of(cls, config: dict) -> DownloadOptions:
        """The options of a config section (other keys are ignored)."""
        return cls(**{field.name: config[field.name] for field in fields(cls) if field.name in config})


class _Transient(Exception):
    """A failure worth retrying (network trouble, truncated body, server error)."""


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlparse(req.full_url).scheme == "https" and urlparse(newurl).scheme != "https":
            raise DownloadError(f"{req.full_url}: redirected from https to {newurl}; refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngrade)


@dataclass
class _Transfer:
    """What the attempts of one download share: where, the limits, the file's validator, the clock."""

    url: str
    partial: Path
    options: DownloadOptions
    started: float
    validator: str | None = None  # ETag or Last-Modified of the first answer (If-Range)

    def check_clock(self) -> None:
        deadline = self.options.deadline_s
        if deadline is not None and time.monotonic() - self.started > deadline:
            raise DownloadError(f"{self.url}: not finished within the deadline of {deadline:g} s (download.deadline_s)")

    def check_size(self, size: int | None) -> None:
        limit = self.options.max_gb
        if limit is not None and size is not None and size > limit * 1e9:
            raise DownloadError(f"{self.url}: {size / 1e9:.2f} GB is more than download.max_gb ({limit:g} GB)")


def _request(transfer: _Transfer, offset: int):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if transfer.validator:  # a changed file then comes whole (200), not as a range of another version
            headers["If-Range"] = transfer.validator
    request = urllib.request.Request(transfer.url, headers=headers)
    try:
        return _OPENER.open(request, timeout=transfer.options.timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            transfer.partial.unlink()  # our partial file is longer than the resource: start over
            raise _Transient("server rejected the resume range; restarting") from error
        reason = f"HTTP {error.code} {error.reason}"
        if error.code >= 500 or error.code in (408, 429):
            raise _Transient(reason) from error
        raise DownloadError(f"{transfer.url}: {reason}") from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, DownloadError):
            raise error.reason from None
        raise _Transient(f"host unreachable ({error.reason})") from error
    except (OSError, http.client.HTTPException) as error:
        raise _Transient(f"connection failed ({error})") from error


def _resumes(response, offset: int) -> bool:
    """Whether a response continues the partial file: a 206 whose Content-Range starts at ``offset``."""
    if not offset or response.status != 206:
        return False
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")


def _fetch_once(transfer: _Transfer) -> None:
    """One attempt: append to the partial file from where it stops, or rewrite it."""
    partial = transfer.partial
    offset = partial.stat().st_size if partial.exists() else 0
    with _request(transfer, offset) as response:
        resumed = _resumes(response, offset)
        if not resumed:
            offset = 0
            transfer.validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        length = response.headers.get("Content-Length")
        expected_total = offset + int(length) if length is not None else None
        transfer.check_size(expected_total)
        received = _receive(transfer, response, resumed, offset)
    if expected_total is not None and received != expected_total:
        raise _Transient(f"connection closed after {received} of {expected_total} bytes (size mismatch)")


def _receive(transfer: _Transfer, response, resumed: bool, received: int) -> int:
    """Write the body to the partial file; returns the bytes it then holds."""
    try:
        with open(transfer.partial, "ab" if resumed else "wb") as handle:
            while block := response.read(CHUNK_BYTES):
                _write(handle, block, transfer.partial)
                received += len(block)
                transfer.check_size(received)
                transfer.check_clock()
    except http.client.IncompleteRead as error:
        received += len(error.partial)
        raise _Transient(f"connection closed after {received} bytes (incomplete read)") from error
    except (OSError, http.client.HTTPException) as error:
        raise _Transient(f"connection broke after {received} bytes ({error})") from error
    return received


def _write(handle, block: bytes, path: Path) -> None:
    """Write one block; a full disk or another local error is no network trouble to retry."""
    try:
        handle.write(block)
    except OSError as error:
        what = "no space left on the device" if error.errno == errno.ENOSPC else error.strerror or str(error)
        raise DownloadError(f"{path}: cannot write the download: {what}") from error


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, **options) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` when given.

    Args:
        url: an http(s) URL.
        dest: the final path; the bytes go to ``dest.part`` until they are complete and verified.
        sha256: a full hex digest or a prefix of one (torchvision's weight files carry the first 8 digits
            in their names).
        options: ``DownloadOptions`` fields. Transient failures are retried ``retries`` times, waiting
            ``backoff_s``, then twice as long each time. Client errors such as 404 fail at once.

    Raises:
        DownloadError: naming the URL and why (after the retries, for transient failures).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    limits = DownloadOptions(**options)
    transfer = _Transfer(url, dest.with_name(dest.name + ".part"), limits, time.monotonic())
    try:
        for attempt in range(limits.retries + 1):
            try:
                _fetch_once(transfer)
                break
            except _Transient as error:
                if attempt == limits.retries:
                    raise DownloadError(f"{url}: {error} (gave up after {limits.retries + 1} attempts)") from error
                wait = limits.backoff_s * 2**attempt
                log.warning(
                    "%s: %s; retrying in %.1f s (attempt %d of %d)", url, error, wait, attempt + 2, limits.retries + 1
                )
                time.sleep(wait)
                transfer.check_clock()
        if sha256:
            verify_sha256(transfer.partial, sha256, url)
        os.replace(transfer.partial, dest)
        log.info("downloaded %s to %s (%d bytes)", url, dest, dest.stat().st_size)
        return dest
    finally:
        transfer.partial.unlink(missing_ok=True)
