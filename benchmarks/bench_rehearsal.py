"""What the GPU's fast paths cost a CPU run (gpu.fast_paths: always): one training step in float32 or bf16
autocast, NCHW or channels_last, as a multiple of the float32 NCHW step.

    .venv/bin/python benchmarks/bench_rehearsal.py [--arch mobilenet_v2] [--size 32] [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from dpaat.fast_paths import as_layout, model_to  # noqa: E402
from dpaat.models import build_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 3, (args.batch,))
    variants = [(bf16, layout) for bf16 in (False, True) for layout in (None, torch.channels_last)]
    best = {variant: float("inf") for variant in variants}
    for _ in range(args.repeats):  # interleaved, so a busy machine slows every variant alike
        for bf16, layout in variants:
            model = model_to(build_model(args.arch, 3), "cpu", layout)
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(as_layout(x, layout)), y)
            loss.backward()
            best[(bf16, layout)] = min(best[(bf16, layout)], time.perf_counter() - started)
    reference = best[(False, None)]
    print(f"{args.arch}, {args.size} px, batch {args.batch}, one thread, torch {torch.__version__}: best of {args.repeats}")
    for (bf16, layout), seconds in best.items():
        name = f"{'bf16' if bf16 else 'float32'} {'channels_last' if layout else 'NCHW'}"
        print(f"{name:24s} {1000 * seconds:8.0f} ms  {seconds / reference:5.2f} x float32 NCHW")


if __name__ == "__main__":
    main()
