"""A remote source with mirrors: tried in order, the pixel checksum deciding which one is accepted.

Official download pages move, ask for registration or go down; the same pixels
are often published elsewhere in another form (one file per section, an HDF5
file holding image and labels). A source may therefore list ``mirrors``, each
one file (a TIFF stack, or an HDF5 file with ``key`` naming the dataset) or a
list of per-section files (``source`` a list, or a pattern with ``{z}`` and
``sections`` files). The download stage fetches the source, then each mirror,
until one yields exactly the configured ``pixel_sha256`` (the sha256 of the
pixel array, independent of the file format); a mirror whose pixels differ
(another polarity, another crop) is rejected with a message that says so, and
the next one is tried. What is accepted is stored as a TIFF stack at the
download path (or, for the source itself, as downloaded), so ingest reads one
form whatever the mirror. A section file that is neither TIFF nor PNG (an error
page served with status 200) fails its candidate: a stack one section short is
never accepted.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..core.atomic import atomic_file, claimed
from ..core.errors import DownloadError, InputDataError
from ..data.readers import MemoryLimit, open_volume
from ..data.sources import REMOTE_SCHEMES, public_location
from ..data.transfer import download

log = logging.getLogger(__name__)

DOWNLOAD_MARK = ".download-"  # a candidate's download folder: .NAME.download-XXXXXXXX beside the download path
MAGIC = {b"\x89HDF\r\n\x1a\n": ".h5", b"II*\x00": ".tif", b"MM\x00*": ".tif", b"\x89PNG": ".png"}


@dataclass(frozen=True)
class Candidate:
    """A place to get a source from: one URL, or one URL per section; ``key`` for HDF5 files."""

    urls: tuple[str, ...]
    key: str | None = None
    sha256: str | None = None

    def __str__(self) -> str:
        first = public_location(self.urls[0])
        return first if len(self.urls) == 1 else f"{first} and {len(self.urls) - 1} more section files"


def candidates(primary_url: str, spec: dict) -> list[Candidate]:
    """The source itself, then its mirrors in the configured order.

    Args:
        primary_url: the resolved URL of ``spec["source"]``.
        spec: the image or labels entry of a dataset (``sha256``, ``key``, ``mirrors``).
    """
    found = [Candidate((primary_url,), spec.get("key"), spec.get("sha256"))]
    for mirror in spec.get("mirrors") or []:
        source = mirror["source"]
        if isinstance(source, str) and "{z}" in source:
            urls = tuple(source.format(z=z) for z in range(mirror["sections"]))
        else:
            urls = (source,) if isinstance(source, str) else tuple(source)
        found.append(Candidate(urls, mirror.get("key"), mirror.get("sha256")))
    return found


def _with_format_suffix(path: Path) -> Path:
    """Rename a downloaded file by its content (URLs like .../download carry no suffix)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    suffix = next((ext for magic, ext in MAGIC.items() if head.startswith(magic)), path.suffix)
    return path.rename(path.with_suffix(suffix)) if suffix != path.suffix else path


def _fetch(candidate: Candidate, folder: Path, options: dict) -> Path:
    """Download a candidate into ``folder``: its one file, or a subfolder of section files in order."""
    for url in candidate.urls:
        if urlparse(url).scheme not in REMOTE_SCHEMES:
            raise DownloadError(
                f"{public_location(url)}: a mirror must be an http(s) URL (a local copy goes in the dataset's source)"
            )
    if len(candidate.urls) == 1:
        return _with_format_suffix(download(candidate.urls[0], folder / "source.bin", candidate.sha256, **options))
    sections = folder / "sections"
    for z, url in enumerate(candidate.urls):
        section = _with_format_suffix(download(url, sections / f"{z:06d}.bin", None, **options))
        if section.suffix not in (".tif", ".png"):
            with open(section, "rb") as handle:
                head = handle.read(16)
            raise DownloadError(f"{public_location(url)}: section {z} is neither a TIFF nor a PNG (it starts {head!r})")
    return sections


def _pixel_checksum(reader, tiff_path: Path | None = None) -> str:
    """The sha256 of the reader's pixels (section after section); the sections also go to ``tiff_path`` if given."""
    import tifffile

    digest = hashlib.sha256()
    with tifffile.TiffWriter(tiff_path) if tiff_path else nullcontext() as tiff:
        for z in range(reader.shape[0]):
            section = np.ascontiguousarray(reader.section(z))
            digest.update(section.tobytes())
            if tiff is not None:
                tiff.write(section, photometric="minisblack", contiguous=True)
    return digest.hexdigest()


def _accept(candidate: Candidate, fetched: Path, keep: bool, dest: Path, check: dict) -> None:
    """Check the fetched pixels and put them at ``dest``: the file itself (``keep``), else as a TIFF stack.

    ``check``: the source's entry (``pixel_sha256``, and ``channel`` and ``axes`` as ingest reads them) and the
    job's ``memory`` (a ``MemoryLimit``, or None).
    """
    pixel_sha256 = check.get("pixel_sha256")
    read = {"axes": check.get("axes"), "memory": check.get("memory")}
    with (
        closing(open_volume(fetched, candidate.key, check.get("channel"), **read)) as reader,
        atomic_file(dest) as tmp,
    ):
        actual = _pixel_checksum(reader, None if keep else tmp)
        if pixel_sha256 and actual != pixel_sha256.lower():
            raise DownloadError(
                f"{candidate}: its pixels differ from the expected ones (pixel sha256 {actual}, "
                f"expected {pixel_sha256.lower()}): another polarity, crop or dataset; rejected"
            )
        if keep:
            shutil.move(fetched, tmp)


def fetch_verified(
    found: list[Candidate], dest, spec: dict, options: dict, memory: MemoryLimit | None = None
) -> Candidate:
    """Fetch the first candidate whose pixels have the source's ``pixel_sha256`` (any that reads, without one).

    Args:
        found: ``candidates`` of a source.
        dest: the download path; written atomically, as downloaded for the source itself when it has the
            download path's format, else (mirrors) as a TIFF stack.
        spec: the source's entry: ``pixel_sha256``, the sha256 of the pixel array (C order, section after
            section, as read with the entry's ``channel`` and ``axes``; all three optional).
        options: retries, backoff_s, timeout_s of the download config.
        memory: the job's memory: a candidate whose sections it cannot hold is refused unread.

    Returns:
        The accepted candidate. Raises DownloadError naming every candidate and why it failed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for candidate in found:
        with claimed(dest, DOWNLOAD_MARK) as folder:  # a killed run's download folders go first
            folder.mkdir()
            try:
                fetched = _fetch(candidate, Path(folder), options)
                keep = candidate is found[0] and fetched.is_file() and fetched.suffix == dest.suffix
                _accept(candidate, fetched, keep, dest, {**spec, "memory": memory})
            except (DownloadError, InputDataError) as error:
                log.warning("%s", error)
                failures.append(str(error))
                continue
        log.info("%s: accepted %s", dest.name, candidate)
        return candidate
    raise DownloadError(f"{dest.name}: neither the source nor any mirror could be used:\n  " + "\n  ".join(failures))
