"""Logging for rule scripts: to the rule's ``log:`` file and to the console."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

from .errors import PipelineError


@contextmanager
def rule_logging(snakemake):
    """Send log records to the rule's log file and stderr; turn user errors into a clean exit.

    A ``PipelineError`` already says what is wrong and where, so it is logged
    and ends the job with that message alone; anything else keeps its traceback.
    """
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )
    logging.getLogger(f"rule.{snakemake.rule}").info("wildcards: %s", dict(snakemake.wildcards.items()))
    try:
        yield
    except PipelineError as error:
        logging.getLogger(f"rule.{snakemake.rule}").error("%s", error)
        raise SystemExit(1) from error
    except Exception:
        logging.getLogger(f"rule.{snakemake.rule}").exception("unexpected failure")
        raise
