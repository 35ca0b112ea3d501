"""Make the library package `dpaat` (under scripts/) importable from the tests."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import torch  # noqa: E402

# Tiny models on a shared 2-core machine: one thread is faster and steadier than two.
torch.set_num_threads(1)
