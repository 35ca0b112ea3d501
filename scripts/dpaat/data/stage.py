"""Run a data stage from its Snakemake script: log to the job's log, bad data as one clear line."""

from __future__ import annotations

import logging
import os
from typing import Callable

from .errors import DataError


def run_stage(log_path: str | os.PathLike, main: Callable[[], object]) -> None:
    """Call `main` with logging into `log_path`; a DataError ends the job with its message alone."""
    logging.basicConfig(
        filename=log_path, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        main()
    except DataError as err:
        logging.getLogger(__name__).error("%s", err)
        # SystemExit prints just this line on stderr: the known problem and its fix, no traceback.
        raise SystemExit(f"DataError: {err}") from None
