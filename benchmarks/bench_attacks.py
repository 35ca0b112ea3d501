"""Time dpaat's L2 `pgd` against torchattacks' PGDL2 on identical work and print the ratio.

Usage: python benchmarks/bench_attacks.py [--arch mobilenet_v2] [--image-size 64] [--batch 32]
       [--steps 10] [--repeats 5] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchattacks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from dpaat.attacks import pgd  # noqa: E402
from dpaat.models import ARCHITECTURES, build_model  # noqa: E402


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, float]:
    """Wall and process-CPU seconds of one call, with the GPU queue drained before and after.

    CPU time is the steadier measure on a shared CPU, where other jobs stretch wall time.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    """Parse arguments, run both attacks (warm-up, then interleaved repeats) and print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenet_v2", choices=sorted(ARCHITECTURES))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.arch, 3).to(device).eval()
    x = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 3, (args.batch,), device=device)
    step = 2.5 * args.eps / args.steps

    def ours() -> torch.Tensor:
        return pgd(model, x, y, eps=args.eps, steps=args.steps, step_size=step, norm="l2")

    theirs_attack = torchattacks.PGDL2(model, eps=args.eps, alpha=step, steps=args.steps, random_start=False)

    def theirs() -> torch.Tensor:
        return theirs_attack(x, y)

    max_diff = (ours() - theirs()).abs().max().item()  # also the warm-up run of each
    runs: dict[str, list[tuple[float, float]]] = {"dpaat.pgd": [], "torchattacks.PGDL2": []}
    for _ in range(args.repeats):  # interleaved so that load drifts hit both alike
        runs["dpaat.pgd"].append(timed(ours, device))
        runs["torchattacks.PGDL2"].append(timed(theirs, device))
    wall = {name: statistics.median(w for w, _ in r) for name, r in runs.items()}
    cpu = {name: statistics.median(c for _, c in r) for name, r in runs.items()}

    print(
        f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
        f"threads: {torch.get_num_threads()}, torch {torch.__version__}, torchattacks {torchattacks.__version__}"
    )
    print(
        f"model: {args.arch}, batch: {args.batch}, image size: {args.image_size}, steps: {args.steps}, "
        f"eps: {args.eps} (L2), repeats: {args.repeats}"
    )
    # Not 0 on an untrained net: torchattacks adds 1e-10 to a gradient norm that is itself ~1e-10 there.
    print(f"max |ours - theirs|: {max_diff:.2e}")
    for name, r in runs.items():
        print(
            f"{name:20s} median wall {wall[name] * 1000:8.1f} ms, cpu {cpu[name] * 1000:8.1f} ms"
            f"  (wall runs: {', '.join(f'{w * 1000:.0f}' for w, _ in r)})"
        )
    ours_name, theirs_name = runs
    print(
        f"ratio ours/theirs: wall {wall[ours_name] / wall[theirs_name]:.3f}, "
        f"cpu {cpu[ours_name] / cpu[theirs_name]:.3f}"
    )


if __name__ == "__main__":
    main()
