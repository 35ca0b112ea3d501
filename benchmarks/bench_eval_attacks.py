"""Time a config's evaluation attacks on one model: the sanity attacks and the extra ones as ratios of the test attacks.

Usage: python benchmarks/bench_eval_attacks.py [--config config/config.yaml] [--arch mobilenet_v2]
       [--images 60] [--batch 64] [--extra apgd] [--threads 1]

The model is briefly fitted to random images (so its predictions are not constant and
early-stopping attacks have images to skip); process-CPU seconds are printed per attack
and per group, and each group's ratio to the configured test attacks, all in one process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from dpaat.attacks import AttackSpec, run_attack  # noqa: E402
from dpaat.models import build_model  # noqa: E402
from dpaat.sanity import SanityPlan  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--extra", nargs="*", default=["apgd"], help="names of test attacks timed as their own group")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = yaml.safe_load(Path(args.config).read_text())
    validate(cfg, str(REPO / "config" / "schema" / "config.schema.yaml"))
    attacks = {a["name"]: {k: v for k, v in a.items() if k != "name"} for a in cfg["attacks"]}
    plan = SanityPlan.from_config(cfg["sanity"], cfg["training"]["adversary"], attacks)
    groups = {
        "test": {n: a for n, a in attacks.items() if n not in args.extra},
        "extra": {n: a for n, a in attacks.items() if n in args.extra},
        "sanity": plan.attacks,
    }
    size = cfg["models"]["image_size"]
    torch.manual_seed(0)
    model = build_model(args.arch, len(cfg["data"]["classes"]))
    x = torch.rand(args.images, 3, size, size)
    y = torch.arange(args.images) % len(cfg["data"]["classes"])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()

    totals = {}
    for group, entries in groups.items():
        totals[group] = 0.0
        for name, entry in entries.items():
            start = time.process_time()
            run_attack(model, x, y, AttackSpec.from_config(entry), args.batch, "cpu")
            seconds = time.process_time() - start
            totals[group] += seconds
            print(f"{group:7s} {name:14s} {seconds:7.2f} s CPU")
    for group, seconds in totals.items():
        print(f"{group:7s} total {seconds:7.2f} s CPU, {seconds / totals['test']:.2f}x the test attacks")


if __name__ == "__main__":
    main()
