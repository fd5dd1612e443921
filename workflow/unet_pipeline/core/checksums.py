"""sha256 of files: computing, verifying, and the hash prefix that torchvision puts in weight file names.

The download, ingest, train and predict stages all verify or record file
checksums; they share these helpers.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .errors import ChecksumError

CHUNK_BYTES = 1 << 20
# torchvision names its weight files NAME-HASHPREFIX.EXT, e.g. vgg11-8a719046.pth
_HASH_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


def sha256_of_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, what: str) -> str:
    """Check a file against a full hex sha256 or a prefix of one (at least 8 digits); return the full digest.

    Raises:
        ChecksumError: naming ``what`` and both values when they differ.
    """
    expected = expected.lower()
    if len(expected) < 8:
        raise ValueError(f"a sha256 prefix needs at least 8 hex digits, not {expected!r}")
    actual = sha256_of_file(path)
    if not actual.startswith(expected):
        kind = "sha256" if len(expected) == 64 else "sha256 prefix"
        raise ChecksumError(f"{what}: {kind} mismatch: expected {expected}, got {actual}")
    return actual


def hash_prefix_in_name(path: str | os.PathLike) -> str | None:
    """The sha256 prefix a torchvision-style file name carries (``vgg11-8a719046.pth`` -> ``8a719046``), or None."""
    match = _HASH_PREFIX.search(Path(path).name)
    return match.group(1) if match else None
