"""Fetch a remote source robustly: retries with back-off, resume, checksum, atomic rename.

Bytes go to ``<dest>.part`` first; only a complete, verified file is renamed to
``dest``, so Snakemake never sees a truncated download as finished output. A
retry resumes the partial file with an HTTP Range request when the server allows
it and starts over when it does not. On final failure the partial file is
removed, so nothing half-written is left behind.
"""

from __future__ import annotations

import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from .checksums import CHUNK_BYTES, verify_sha256
from .errors import DownloadError

log = logging.getLogger(__name__)

USER_AGENT = "unet-pipeline-download/1"


class _Transient(Exception):
    """A failure worth retrying (network trouble, truncated body, server error)."""


def _fetch_once(url: str, partial: Path, timeout: float) -> None:
    """One attempt: append to ``partial`` from where it stops, or rewrite it."""
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            partial.unlink()  # our partial file is longer than the resource: start over
            raise _Transient("server rejected the resume range; restarting") from error
        reason = f"HTTP {error.code} {error.reason}"
        if error.code >= 500 or error.code in (408, 429):
            raise _Transient(reason) from error
        raise DownloadError(f"{url}: {reason}") from error
    except urllib.error.URLError as error:
        raise _Transient(f"host unreachable ({error.reason})") from error
    except (OSError, http.client.HTTPException) as error:
        raise _Transient(f"connection failed ({error})") from error

    with response:
        resumed = offset > 0 and response.status == 206
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        expected_total = offset + int(length) if length is not None else None
        received = offset
        try:
            with open(partial, "ab" if resumed else "wb") as handle:
                while block := response.read(CHUNK_BYTES):
                    handle.write(block)
                    received += len(block)
        except http.client.IncompleteRead as error:
            received += len(error.partial)
            raise _Transient(f"connection closed after {received} of {expected_total} bytes") from error
        except (OSError, http.client.HTTPException) as error:
            raise _Transient(f"connection broke after {received} bytes ({error})") from error
    if expected_total is not None and received != expected_total:
        raise _Transient(f"connection closed after {received} of {expected_total} bytes (size mismatch)")


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    retries: int = 4,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` when given.

    ``sha256`` is a full hex digest or a prefix of one (torchvision's weight files
    carry the first 8 digits in their names).

    Transient failures are retried ``retries`` times, waiting ``backoff_s``,
    then twice as long each time. Client errors such as 404 fail at once.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        for attempt in range(retries + 1):
            try:
                _fetch_once(url, partial, timeout_s)
                break
            except _Transient as error:
                if attempt == retries:
                    raise DownloadError(f"{url}: {error} (gave up after {retries + 1} attempts)") from error
                wait = backoff_s * 2**attempt
                log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", url, error, wait, attempt + 2, retries + 1)
                time.sleep(wait)
        if sha256:
            verify_sha256(partial, sha256, url)
        os.replace(partial, dest)
        log.info("downloaded %s to %s (%d bytes)", url, dest, dest.stat().st_size)
        return dest
    finally:
        partial.unlink(missing_ok=True)
