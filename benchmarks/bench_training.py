"""Time one training step of every method and print it as a multiple of an STD step.

Usage: python benchmarks/bench_training.py [--arch mobilenet_v2] [--image-size 64] [--batch 32]
       [--steps 7] [--repeats 5] [--device cpu|cuda] [--threads N] [--bf16]

Ideal multiples, counting a forward pass as 1, a training backward as 2 and an
input-only backward in an attack step as 1 (so an STD step costs 3 and a PGD step 2):
AT (2K+3)/3; SAT, AMAT and D-B add a clean pass, (2K+6)/3; DPAAT and D-A run two
K-step attacks plus a no-grad probe of 2N images, (4K+8)/3, about twice AT's; MART
costs SAT's (2K+6)/3 and TRADES one no-grad clean pass more, (2K+7)/3.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from dpaat.methods import METHODS, build_method  # noqa: E402
from dpaat.settings import TrainingSettings  # noqa: E402
from dpaat.models import ARCHITECTURES, build_model  # noqa: E402

IDEAL = {
    "std": ("1", lambda k: 1.0),
    "at": ("(2K+3)/3", lambda k: (2 * k + 3) / 3),
    "sat": ("(2K+6)/3", lambda k: (2 * k + 6) / 3),
    "amat": ("(2K+6)/3", lambda k: (2 * k + 6) / 3),
    "d_b": ("(2K+6)/3", lambda k: (2 * k + 6) / 3),
    "dpaat": ("(4K+8)/3", lambda k: (4 * k + 8) / 3),
    "d_a": ("(4K+8)/3", lambda k: (4 * k + 8) / 3),
    "trades": ("(2K+7)/3", lambda k: (2 * k + 7) / 3),
    "mart": ("(2K+6)/3", lambda k: (2 * k + 6) / 3),
}


def main() -> None:
    """Build one model and batch, time each method's step (warm-up, then interleaved repeats), print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mobilenet_v2", choices=sorted(ARCHITECTURES))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=7, help="K, the training adversary's PGD steps")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.arch, 3, pretrained=False).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 3, (args.batch,), device=device)
    index = torch.arange(args.batch, device=device)
    training = {"adversary": {"eps": args.eps, "steps": args.steps, "step_size": args.eps / 2}, "amat": {"xi": 0.5}}
    methods = {name: build_method(TrainingSettings.from_mapping(name, training)) for name in METHODS}
    for method in methods.values():
        method.prepare(args.batch, device)
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if args.bf16 and device.type == "cuda"
        else contextlib.nullcontext
    )

    def step(name: str) -> float:
        """Wall seconds of one training step (loss, backward, Adam), GPU queue drained."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast():
            loss, _ = methods[name].loss(model, x, y, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for name in methods:
        step(name)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name in methods:
            times[name].append(step(name))
    median = {name: statistics.median(ts) for name, ts in times.items()}

    print(f"{args.arch} {args.image_size}px batch {args.batch}, K={args.steps}-step L2 PGD, {device}, "
          f"threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'method':<7} {'s/step':>8} {'x STD':>7} {'ideal':>7}  formula")
    for name in methods:
        formula, ideal = IDEAL[name]
        ratio = median[name] / median["std"]
        print(f"{name:<7} {median[name]:>8.4f} {ratio:>7.2f} {ideal(args.steps):>7.2f}  {formula}")


if __name__ == "__main__":
    main()
