"""The download code against a real HTTP server on 127.0.0.1 serving ../shared/data/isbi2012."""

import base64
import socket
import time

import pytest
from conftest import _Handler
from helpers import ISBI_FILE_SHA256
from unet_pipeline.core.checksums import sha256_of_file
from unet_pipeline.core.errors import ChecksumError, DownloadError
from unet_pipeline.data.transfer import _NoDowngrade, download

FAST = {"retries": 2, "backoff_s": 0.01, "timeout_s": 10}


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_download_verifies_checksum_and_renames(http_server, tmp_path):
    base, _ = http_server
    dest = tmp_path / "train-labels.tif"
    download(f"{base}/train-labels.tif", dest, sha256=ISBI_FILE_SHA256["train-labels.tif"], **FAST)
    assert sha256_of_file(dest) == ISBI_FILE_SHA256["train-labels.tif"]
    assert leftovers(tmp_path) == ["train-labels.tif"]


def test_a_sha256_prefix_from_the_file_name_is_verified(http_server, tmp_path):
    base, _ = http_server
    digest = ISBI_FILE_SHA256["train-labels.tif"]
    download(f"{base}/train-labels.tif", tmp_path / "ok.tif", sha256=digest[:8], **FAST)
    with pytest.raises(
        ChecksumError, match=r"train-labels\.tif: sha256 prefix mismatch: expected 8a719046, got " + digest
    ):
        download(f"{base}/train-labels.tif", tmp_path / "bad.tif", sha256="8a719046", **FAST)
    assert leftovers(tmp_path) == ["ok.tif"]


def test_404_fails_at_once_with_url_and_status(http_server, tmp_path):
    base, requests = http_server
    with pytest.raises(DownloadError, match=r"/nothing-here\.tif: HTTP 404"):
        download(f"{base}/nothing-here.tif", tmp_path / "x.tif", **FAST)
    assert len(requests) == 1, "a client error is not retried"
    assert leftovers(tmp_path) == []


def test_connection_closed_mid_file_is_retried_then_reported(http_server, tmp_path):
    base, requests = http_server
    with pytest.raises(DownloadError, match=r"truncate/test-volume\.tif: connection closed after \d+ of 7869390 bytes"):
        download(f"{base}/truncate/test-volume.tif", tmp_path / "test-volume.tif", **FAST)
    assert len(requests) == FAST["retries"] + 1
    assert leftovers(tmp_path) == [], "no partial file may remain"


def test_interrupted_download_resumes_with_range(http_server, tmp_path):
    base, requests = http_server
    dest = tmp_path / "test-volume.tif"
    download(f"{base}/flaky/test-volume.tif", dest, sha256=ISBI_FILE_SHA256["test-volume.tif"], **FAST)
    assert sha256_of_file(dest) == ISBI_FILE_SHA256["test-volume.tif"]
    assert requests[0][1] is None and requests[1][1] == f"bytes={7869390 // 2}-", requests


def test_a_server_that_ignores_range_restarts_the_file(http_server, tmp_path):
    base, requests = http_server
    dest = tmp_path / "test-volume.tif"
    download(f"{base}/norange/test-volume.tif", dest, sha256=ISBI_FILE_SHA256["test-volume.tif"], **FAST)
    assert requests[1][1] == f"bytes={7869390 // 2}-", "the retry asked to resume, and got 200 with the whole file"
    assert sha256_of_file(dest) == ISBI_FILE_SHA256["test-volume.tif"] and leftovers(tmp_path) == ["test-volume.tif"]


def test_a_416_answer_to_a_resume_starts_over(http_server, tmp_path):
    base, requests = http_server
    dest = tmp_path / "test-volume.tif"
    download(f"{base}/range416/test-volume.tif", dest, sha256=ISBI_FILE_SHA256["test-volume.tif"], **FAST)
    assert [header for _, header in requests] == [None, f"bytes={7869390 // 2}-", None]
    assert sha256_of_file(dest) == ISBI_FILE_SHA256["test-volume.tif"] and leftovers(tmp_path) == ["test-volume.tif"]


def test_a_chunked_body_that_breaks_off_is_retried(http_server, tmp_path):
    base, requests = http_server
    dest = tmp_path / "train-labels.tif"
    download(f"{base}/chunked/train-labels.tif", dest, sha256=ISBI_FILE_SHA256["train-labels.tif"], **FAST)
    assert len(requests) == 2 and requests[1][1] is not None, "the retry resumes"
    assert sha256_of_file(dest) == ISBI_FILE_SHA256["train-labels.tif"]


def test_a_short_body_without_content_length_is_caught_by_the_checksum(http_server, tmp_path):
    base, _ = http_server
    with pytest.raises(DownloadError, match=r"nolength/train-labels\.tif: sha256 mismatch"):
        download(
            f"{base}/nolength/train-labels.tif", tmp_path / "x.tif", sha256=ISBI_FILE_SHA256["train-labels.tif"], **FAST
        )
    assert leftovers(tmp_path) == []


def test_checksum_mismatch_leaves_nothing(http_server, tmp_path):
    base, _ = http_server
    with pytest.raises(DownloadError, match="sha256 mismatch: expected 0{64}, got a05df637"):
        download(f"{base}/train-volume.tif", tmp_path / "train-volume.tif", sha256="0" * 64, **FAST)
    assert leftovers(tmp_path) == []


def test_server_error_is_retried_then_reported(http_server, tmp_path):
    base, requests = http_server
    with pytest.raises(DownloadError, match=r"HTTP 500 .*gave up after 3 attempts"):
        download(f"{base}/error500/train-volume.tif", tmp_path / "x.tif", **FAST)
    assert len(requests) == 3


def test_unreachable_host(tmp_path):
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"127.0.0.1:{port}/x.tif: host unreachable"):
        download(f"http://127.0.0.1:{port}/x.tif", tmp_path / "x.tif", **FAST)
    assert leftovers(tmp_path) == []


def test_a_resume_sends_if_range_and_checks_the_content_range(http_server, tmp_path):
    base, requests = http_server
    download(f"{base}/flaky/train-labels.tif", tmp_path / "a.tif", **FAST)
    assert requests.if_range == [None, _Handler.LAST_MODIFIED], "the resume names the version it continues"
    dest = tmp_path / "b.tif"
    download(f"{base}/wrongrange/train-labels.tif", dest, sha256=ISBI_FILE_SHA256["train-labels.tif"], **FAST)
    assert sha256_of_file(dest) == ISBI_FILE_SHA256["train-labels.tif"], "a range from 0 replaces the partial file"


def test_a_download_over_the_size_limit_or_the_deadline_stops(http_server, tmp_path):
    base, _ = http_server
    with pytest.raises(DownloadError, match=r"train-labels\.tif: 0\.01 GB is more than download\.max_gb \(0\.001 GB\)"):
        download(f"{base}/train-labels.tif", tmp_path / "x.tif", **FAST, max_gb=0.001)
    with pytest.raises(DownloadError, match=r"not finished within the deadline of 0\.05 s"):
        download(f"{base}/error500/train-labels.tif", tmp_path / "y.tif", retries=5, backoff_s=0.1, deadline_s=0.05)
    assert leftovers(tmp_path) == []


def test_a_redirect_from_https_to_http_is_refused():
    import urllib.request

    handler = _NoDowngrade()
    request = urllib.request.Request("https://host/data.tif")
    with pytest.raises(DownloadError, match=r"redirected from https to http://evil/data\.tif; refused"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://evil/data.tif")
    assert handler.redirect_request(request, None, 302, "Found", {}, "https://mirror/data.tif") is not None


def test_a_full_disk_fails_at_once(http_server, tmp_path, monkeypatch):
    import errno

    import unet_pipeline.data.transfer as download_module

    base, requests = http_server

    class FullDisk:
        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *args):
            return False

        def write(self, block):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download_module, "open", FullDisk, raising=False)
    with pytest.raises(DownloadError, match=r"x\.tif\.part: cannot write the download: no space left on the device"):
        download(f"{base}/train-labels.tif", tmp_path / "x.tif", **FAST)
    assert len(requests) == 1, "not retried"


def test_the_deadline_holds_against_a_server_that_drips(http_server, tmp_path):
    base, _ = http_server
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"drip/train-labels\.tif: not finished within the deadline of 1 s"):
        download(f"{base}/drip/train-labels.tif", tmp_path / "x.tif", **FAST, deadline_s=1.0)
    assert time.monotonic() - started < 2.0, "each read waits at most the time left"
    assert leftovers(tmp_path) == []


def test_a_range_nobody_asked_for_is_never_written_as_the_file(http_server, tmp_path):
    base, requests = http_server
    with pytest.raises(DownloadError, match=r"offrange/train-labels\.tif: the server answered the range 'bytes \d+-"):
        download(f"{base}/offrange/train-labels.tif", tmp_path / "x.tif", **FAST)
    assert len(requests) == FAST["retries"] + 1 and leftovers(tmp_path) == []


def test_credentials_in_a_url_stay_out_of_logs_and_errors(http_server, tmp_path, caplog):
    base, requests = http_server
    host = base.removeprefix("http://")
    signed = "X-Amz-Signature=0123456789abcdef&X-Amz-Credential=AKIDSECRET"
    caplog.set_level("DEBUG")
    dest = tmp_path / "train-labels.tif"
    download(f"http://alice:s3cret@{host}/flaky/train-labels.tif?{signed}", dest, **FAST)
    assert sha256_of_file(dest) == ISBI_FILE_SHA256["train-labels.tif"]
    assert requests.auth[0] == "Basic " + base64.b64encode(b"alice:s3cret").decode(), "sent as HTTP basic auth"
    with pytest.raises(DownloadError) as failure:
        download(f"http://alice:s3cret@{host}/error500/x.tif?{signed}", tmp_path / "y.tif", **FAST)
    said = caplog.text + str(failure.value)
    assert "retrying" in said and "127.0.0.1" in said
    for secret in ("alice", "s3cret", "0123456789abcdef", "AKIDSECRET"):
        assert secret not in said
