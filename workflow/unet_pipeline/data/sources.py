"""Where a dataset's volumes come from, as declared in ``config/config.yaml``.

A source is an http(s) URL (downloaded by the ``download`` rule), a ``file://``
URL or a local path (used in place, never copied). A relative source is resolved
against the dataset's ``base``, which lets one ``--config`` override point a whole
dataset at a mirror or a local copy.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse, urlunparse

from ..core.errors import PipelineError

REMOTE_SCHEMES = ("http", "https")
ROLES = ("image", "labels")
# A downloaded file's name goes into job command lines (a cluster submits them through a shell): letters,
# digits, dot, underscore and hyphen only. workflow/rules/common.smk constrains the filename wildcard to it.
SAFE_FILENAME = r"[A-Za-z0-9._-]+"


@dataclass(frozen=True)
class Source:
    """One resolved source: a remote URL or a local path."""

    location: str
    remote: bool

    @property
    def public(self) -> str:
        """The location as provenance and exported packages record it: a URL without user, password, query or
        fragment (credentials and signed tokens travel there); a path as it is."""
        return public_location(self.location) if self.remote else self.location

    @property
    def filename(self) -> str:
        """File name under which a remote source is stored after download."""
        name = posixpath.basename(unquote(urlparse(self.location).path.rstrip("/")))
        if not name:
            raise PipelineError(f"cannot derive a file name from the URL {self.location}")
        if not re.fullmatch(SAFE_FILENAME, name) or name in (".", ".."):
            raise PipelineError(
                f"the URL {self.location} ends in the file name {name!r}, which holds characters other than "
                "letters, digits, '.', '_' and '-'; serve the file under such a name (it goes into job command lines)"
            )
        return name


def public_location(text: str) -> str:
    """``text`` without the parts of a URL that carry secrets (user info, query, fragment); other text as it is."""
    if not _has_scheme(text):
        return text
    parsed = urlparse(text)
    host = parsed.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parsed.port is not None:
        netloc += f":{parsed.port}"
    return urlunparse((parsed.scheme, netloc, parsed.path, "", "", ""))


def public_spec(spec: dict) -> dict:
    """A source entry (``image`` or ``labels`` of a dataset) with every URL in it made public: what a rule may
    carry as a param, since Snakemake records params in its metadata and may print them."""
    public = dict(spec, source=public_location(str(spec["source"])))
    mirrors = []
    for mirror in spec.get("mirrors") or []:
        source = mirror["source"]
        source = public_location(source) if isinstance(source, str) else [public_location(url) for url in source]
        mirrors.append(dict(mirror, source=source))
    return public | ({"mirrors": mirrors} if "mirrors" in spec else {})


def public_dataset(dataset: dict) -> dict:
    """A dataset entry with every URL in it made public (``public_spec``), its ``base`` included."""
    public = {key: public_spec(value) if key in ROLES and value else value for key, value in dataset.items()}
    return public | ({"base": public_location(str(dataset["base"]))} if dataset.get("base") else {})


def pretrained_url(pretrained: dict, filename: str) -> str:
    """The URL among ``pretrained_weights`` whose file name is ``filename``."""
    for url in pretrained.values():
        if Source(url, remote=True).filename == filename:
            return url
    raise PipelineError(f"no URL of pretrained_weights has the file name {filename}")


def _has_scheme(text: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text))


def resolve_source(dataset: dict, role: str) -> Source | None:
    """Resolve the ``image`` or ``labels`` source of a dataset config, or None if absent."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    spec = dataset.get(role)
    if not spec:
        return None
    text = str(spec["source"])
    base = dataset.get("base")
    if base and not _has_scheme(text) and not Path(text).is_absolute():
        base = str(base)
        text = base.rstrip("/") + "/" + text if _has_scheme(base) else str(Path(base) / text)
    if _has_scheme(text):
        parsed = urlparse(text)
        if parsed.scheme in REMOTE_SCHEMES:
            return Source(text, remote=True)
        if parsed.scheme == "file":
            return Source(unquote(parsed.path), remote=False)
        raise PipelineError(f"unsupported URL scheme {parsed.scheme!r} in source {text}: use http(s), file or a path")
    return Source(text, remote=False)


def check_outside(source: Source | None, results: str, where: str) -> None:
    """Refuse a local source inside the results folder: Snakemake deletes a directory output before it reruns
    the job that writes it, and a source there could be such an output, or inside one."""
    if source is None or source.remote:
        return
    path, folder = Path(source.location).resolve(), Path(results).resolve()
    if path == folder or path.is_relative_to(folder):
        raise PipelineError(
            f"{where}: the source {source.location} lies inside the results folder {results}, whose outputs "
            f"Snakemake deletes before rerunning the jobs that write them; move it out of {results}"
        )


def check_results(results: str, datasets: dict) -> None:
    """Refuse a ``results:`` folder that would write where it must not: empty (the working directory itself),
    the file system's root, or inside a dataset's local source folder (a folder of sections or a Zarr store,
    or the dataset's local ``base``), where outputs would mix with the data and a rerun's clean-up delete it."""
    if not str(results).strip():
        raise PipelineError("results: is empty; name the folder below which outputs go (default: results)")
    folder = Path(results).resolve()
    if folder == Path(folder.anchor):
        raise PipelineError(f"results: {results} is the file system's root; name a folder of its own")
    for name, dataset in datasets.items():
        for where in _source_folders(dataset):
            if folder == where or folder.is_relative_to(where):
                raise PipelineError(
                    f"results: {results} lies inside {where}, a source folder of dataset {name!r}; put it elsewhere"
                )


def _source_folders(dataset: dict) -> list[Path]:
    """The local folders a dataset reads from: its ``base`` and its sources that are folders."""
    base = str(dataset.get("base") or "")
    base = unquote(urlparse(base).path) if base.startswith("file://") else base
    folders = [Path(base)] if base and not _has_scheme(base) else []
    for role in ROLES:
        source = resolve_source(dataset, role)
        if source is not None and not source.remote and Path(source.location).is_dir():
            folders.append(Path(source.location))
    return [folder.resolve() for folder in folders]


def parse_sections(spec, n_sections: int, what: str = "sections") -> list[int]:
    """Turn a section selection into sorted indices.

    Accepts ``"all"``, a string of ranges like ``"0-24"`` or ``"0-4,7,9-10"``
    (inclusive), or a list of integers. Indices must lie in ``[0, n_sections)``.
    """
    if spec is None:
        return []
    if isinstance(spec, str):
        text = spec.strip()
        if text == "all":
            return list(range(n_sections))
        indices: list[int] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
            if not match:
                raise PipelineError(f"{what}: cannot parse {part!r} in {spec!r}; use e.g. '0-24' or '0,3,5-9'")
            start = int(match.group(1))
            stop = int(match.group(2)) if match.group(2) is not None else start
            if stop < start:
                raise PipelineError(f"{what}: range {part!r} runs backwards")
            indices.extend(range(start, stop + 1))
    else:
        indices = [int(i) for i in spec]
    bad = [i for i in indices if not 0 <= i < n_sections]
    if bad:
        raise PipelineError(
            f"{what}: sections {bad} are outside the volume's {n_sections} sections (0-{n_sections - 1})"
        )
    return sorted(set(indices))
