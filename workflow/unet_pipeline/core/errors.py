"""Exceptions that carry a message meant for the pipeline's user."""


class PipelineError(Exception):
    """An error whose message names the file or URL at fault and what is wrong."""


class DownloadError(PipelineError):
    """A source could not be fetched or failed verification."""


class ChecksumError(DownloadError):
    """A file's sha256 differs from the expected value (a download's, or a local file's)."""


class InputDataError(PipelineError):
    """An input volume or label stack is unreadable or has the wrong content."""
