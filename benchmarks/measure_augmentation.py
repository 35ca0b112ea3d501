"""Does Margeloiu's augmentation (or the centre crop) help the default config's short schedule?

Trains STD and AT with the default config's `training` settings on its caches (build them
first: snakemake results/data/cache/{train,val,test}_32px.pt, and the centre_crop/ ones
with data.centre_crop: true), with augmentation off and on, and prints test accuracy
clean and under the default 20-PGD (L2). Usage:

    python benchmarks/measure_augmentation.py --arch shufflenet_v2_x1_0 --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from dpaat.attacks import AttackSpec, run_attack  # noqa: E402
from dpaat.data import load_cache  # noqa: E402
from dpaat.methods import build_method  # noqa: E402
from dpaat.models import build_model  # noqa: E402
from dpaat.predict import predict_logits  # noqa: E402
from dpaat.settings import TrainingSettings  # noqa: E402
from dpaat.training import train  # noqa: E402


def default_training() -> tuple[dict, dict]:
    """The default config's schema-filled `training` mapping and its 20-PGD attack entry."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "config" / "schema" / "config.schema.yaml"), set_default=True)
    return config["training"], next(a for a in config["attacks"] if a["name"] == "pgd20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="shufflenet_v2_x1_0")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["std", "at"])
    parser.add_argument("--crops", nargs="+", default=["squash"], choices=["squash", "centre_crop"])
    parser.add_argument("--augment", nargs="+", default=["off", "on"], choices=["off", "on"])
    args = parser.parse_args()
    training, pgd20 = default_training()
    spec = AttackSpec.from_config({k: v for k, v in pgd20.items() if k != "name"})
    print("crop | augment | method | seed | clean % | 20-PGD % | seconds")
    for crop in args.crops:
        folder = REPO / "results/data/cache" / ("centre_crop" if crop == "centre_crop" else "")
        tr, va, te = (load_cache(folder / f"{split}_{args.size}px.pt") for split in ("train", "val", "test"))
        for augment in (choice == "on" for choice in args.augment):
            mapping = {**training, "augmentation": {**training["augmentation"], "enabled": augment}}
            for method_name in args.methods:
                for seed in args.seeds:
                    started = time.perf_counter()
                    torch.manual_seed(seed)
                    model = build_model(args.arch, len(tr.classes), pretrained=False)
                    method = build_method(TrainingSettings.from_mapping(method_name, mapping))
                    train(model, method, tr.images, tr.labels, va.images, va.labels, seed=seed,
                          head_parameters=model.head_parameters(), progress=False)
                    clean = (predict_logits(model, te.images, batch_size=64).argmax(1) == te.labels).float().mean()
                    x_adv = run_attack(model, te.images, te.labels, spec, 64, "cpu")
                    robust = (predict_logits(model, x_adv, batch_size=64).argmax(1) == te.labels).float().mean()
                    print(f"{crop} | {augment} | {method_name} | {seed} | {100 * clean:.1f} | {100 * robust:.1f} | "
                          f"{time.perf_counter() - started:.0f}", flush=True)


if __name__ == "__main__":
    main()
