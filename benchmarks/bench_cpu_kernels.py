"""Time training with the CPU kernels pinned to AVX2 against the CPU's own choice and print the ratio.

The instruction set is read once per process, so the two settings run in alternating
fresh processes (`python -m dpaat.kernel_reference [--unpinned]`), one thread each, and the
training's own process-CPU seconds are compared (steadier than wall time on a shared CPU).

Usage: python benchmarks/bench_cpu_kernels.py [--method std] [--arch mobilenet_v2] [--images 408]
       [--epochs 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from dpaat.cpu_kernels import PINNED_VARIABLES  # noqa: E402


def run_job(job: list[str], pinned: bool) -> dict:
    """One reference job in a fresh process whose environment sets no instruction-set variable."""
    env = {k: v for k, v in os.environ.items() if k not in PINNED_VARIABLES}
    env.update(PYTHONPATH=str(SCRIPTS), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "dpaat.kernel_reference", *job, *([] if pinned else ["--unpinned"])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    """Parse arguments, alternate pinned and unpinned runs, print the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="std")
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--images", type=int, default=408)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    job = ["--method", args.method, "--arch", args.arch, "--images", str(args.images), "--epochs", str(args.epochs)]
    times: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(args.repeats):
        for pinned in (True, False):
            times[pinned].append(run_job(job, pinned))
    kernels = times[False][0]["cpu_kernels"]
    print(
        f"{args.method} {args.arch}, {args.images} images x {args.epochs} epochs at 32 px, one thread, "
        f"torch {kernels['torch']}, ATen {kernels['aten_cpu_capability']}, {args.repeats} runs each"
    )
    for measure in ("cpu_seconds", "seconds"):
        pinned, unpinned = (statistics.median(run[measure] for run in times[p]) for p in (True, False))
        print(f"  {measure:11s}: pinned (AVX2) {pinned:7.2f}  unpinned {unpinned:7.2f}  ratio {pinned / unpinned:.3f}")


if __name__ == "__main__":
    main()
