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
download, a largest size. The deadline holds on every read: each waits at most
the time left, and returns what has arrived (a server that drips one byte at a
time cannot hold the job past it). URLs are logged and reported without their
credentials (``sources.public_location``). A redirect from https to http is refused (it would hand
the rest of the transfer to anyone on the path), and a full disk fails at once
instead of being retried as if the network were at fault.
"""

from __future__ import annotations

import base64
import errno
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import unquote, urlparse, urlunparse

from ..core.checksums import CHUNK_BYTES, verify_sha256
from ..core.defaults import defaults_from_schema
from ..core.errors import DownloadError
from .sources import public_location

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
            where, target = public_location(req.full_url), public_location(newurl)
            raise DownloadError(f"{where}: redirected from https to {target}; refused")
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

    @property
    def where(self) -> str:
        """The URL as messages name it: without user, password or signed query."""
        return public_location(self.url)

    def check_clock(self) -> None:
        if self.time_left() <= 0:
            raise DownloadError(
                f"{self.where}: not finished within the deadline of {self.options.deadline_s:g} s (download.deadline_s)"
            )

    def time_left(self) -> float:
        deadline = self.options.deadline_s
        return float("inf") if deadline is None else deadline - (time.monotonic() - self.started)

    def read_timeout(self) -> float:
        """How long one read may wait: the socket timeout, cut to what is left of the deadline."""
        return max(min(self.options.timeout_s, self.time_left()), 0.001)

    def check_size(self, size: int | None) -> None:
        limit = self.options.max_gb
        if limit is not None and size is not None and size > limit * 1e9:
            raise DownloadError(f"{self.where}: {size / 1e9:.2f} GB is more than download.max_gb ({limit:g} GB)")


def _with_credentials(url: str, headers: dict) -> urllib.request.Request:
    """The request for ``url``; a ``user:password@`` in it becomes HTTP basic auth, sent to this host only (an
    unredirected header: a redirect elsewhere does not carry it)."""
    parsed = urlparse(url)
    if parsed.username is None:
        return urllib.request.Request(url, headers=headers)
    netloc = parsed.netloc.rpartition("@")[2]
    request = urllib.request.Request(urlunparse(parsed._replace(netloc=netloc)), headers=headers)
    user, password = unquote(parsed.username), unquote(parsed.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def _request(transfer: _Transfer, offset: int):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if transfer.validator:  # a changed file then comes whole (200), not as a range of another version
            headers["If-Range"] = transfer.validator
    request = _with_credentials(transfer.url, headers)
    try:
        return _OPENER.open(request, timeout=transfer.read_timeout())
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            transfer.partial.unlink()  # our partial file is longer than the resource: start over
            raise _Transient("server rejected the resume range; restarting") from error
        reason = f"HTTP {error.code} {error.reason}"
        if error.code >= 500 or error.code in (408, 429):
            raise _Transient(reason) from error
        raise DownloadError(f"{transfer.where}: {reason}") from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, DownloadError):
            raise error.reason from None
        raise _Transient(f"host unreachable ({error.reason})") from error
    except (OSError, http.client.HTTPException) as error:
        raise _Transient(f"connection failed ({error})") from error


def _answered_range(response, transfer: _Transfer, offset: int) -> tuple[int, int | None]:
    """(first byte, total size or None) of what the response carries: (0, None) for a whole file (200).

    A 206 must start at 0 or at ``offset`` (where the partial file ends) and name its total size: a range
    from anywhere else, written as the file or appended to it, would make a short or spliced file that only
    a checksum could catch. Such an answer restarts the file.
    """
    if response.status != 206:
        return 0, None
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
    start = int(match.group(1)) if match else None
    if start is None or start not in (0, offset):
        transfer.partial.unlink(missing_ok=True)
        raise _Transient(
            f"the server answered the range {response.headers.get('Content-Range')!r} where bytes from {offset} "
            "were asked for; restarting the file"
        )
    return start, int(match.group(3)) if match.group(3) != "*" else None


def _fetch_once(transfer: _Transfer) -> None:
    """One attempt: append to the partial file from where it stops, or rewrite it."""
    partial = transfer.partial
    offset = partial.stat().st_size if partial.exists() else 0
    with _request(transfer, offset) as response:
        start, total = _answered_range(response, transfer, offset)
        resumed = bool(offset) and start == offset
        if not resumed:
            offset = 0
            transfer.validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        length = response.headers.get("Content-Length")
        expected_total = total if total is not None else offset + int(length) if length is not None else None
        transfer.check_size(expected_total)
        received = _receive(transfer, response, resumed, offset)
    if expected_total is not None and received != expected_total:
        raise _Transient(f"connection closed after {received} of {expected_total} bytes (size mismatch)")


def _receive(transfer: _Transfer, response, resumed: bool, received: int) -> int:
    """Write the body to the partial file; returns the bytes it then holds.

    ``read1`` returns whatever has arrived (up to a block), and each read waits at most the time left of the
    deadline, so the clock is checked while a slow server drips, not once a block is full.
    """
    try:
        with open(transfer.partial, "ab" if resumed else "wb") as handle:
            while True:
                _set_read_timeout(response, transfer.read_timeout())
                block = response.read1(CHUNK_BYTES)
                if not block:
                    break
                _write(handle, block, transfer.partial)
                received += len(block)
                transfer.check_size(received)
                transfer.check_clock()
    except http.client.IncompleteRead as error:
        received += len(error.partial)
        raise _Transient(f"connection closed after {received} bytes (incomplete read)") from error
    except TimeoutError as error:
        transfer.check_clock()  # the deadline cut this read short: that is final
        raise _Transient(f"no data for {transfer.options.timeout_s:g} s after {received} bytes") from error
    except (OSError, http.client.HTTPException) as error:
        raise _Transient(f"connection broke after {received} bytes ({error})") from error
    return received


def _set_read_timeout(response, seconds: float) -> None:
    """Make the response's next socket read wait at most ``seconds`` (http.client keeps the socket in the
    raw stream of its buffered reader; urllib gives no other way to reach it)."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


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
                where = transfer.where
                if attempt == limits.retries:
                    raise DownloadError(f"{where}: {error} (gave up after {limits.retries + 1} attempts)") from error
                wait = min(limits.backoff_s * 2**attempt, max(transfer.time_left(), 0))
                log.warning(
                    "%s: %s; retrying in %.1f s (attempt %d of %d)", where, error, wait, attempt + 2, limits.retries + 1
                )
                time.sleep(wait)
                transfer.check_clock()
        if sha256:
            verify_sha256(transfer.partial, sha256, transfer.where)
        os.replace(transfer.partial, dest)
        log.info("downloaded %s to %s (%d bytes)", transfer.where, dest, dest.stat().st_size)
        return dest
    finally:
        transfer.partial.unlink(missing_ok=True)
