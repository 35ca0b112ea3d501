"""Run a data stage from its Snakemake script: bad data ends the job with one clear line."""

from __future__ import annotations

import os
from typing import Callable

from ..runtime import setup_logging
from .errors import DataError


def run_stage(log_path: str | os.PathLike, main: Callable[[], object]) -> None:
    """Call `main` logging to `log_path` (and stderr); a DataError ends the job with its message, no trace."""
    log = setup_logging(log_path)
    try:
        main()
    except DataError as err:
        log.error("DataError: %s", err)
        raise SystemExit(1) from None
