"""Process set-up shared by the stage scripts: logging, device and thread choice."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch


def setup_logging(log_path: str | Path) -> logging.Logger:
    """Log to `log_path` and stderr; uncaught errors are logged as one clear line plus the trace."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(log_path), logging.StreamHandler(sys.stderr)],
        force=True,
    )
    logger = logging.getLogger("dpaat")

    def log_uncaught(exc_type, exc, tb):
        logger.error("%s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = log_uncaught
    return logger


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when visible; asking for CUDA without one is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible; set it to 'auto' or 'cpu'")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """Use exactly the CPU threads the scheduler granted the job."""
    torch.set_num_threads(max(1, int(threads)))
