"""Runtime and memory requests of the model jobs, from the config (no torch: the Snakefile uses it).

Work is counted in forward passes of one image ("units", after benchmarks/bench_training.py:
a training backward costs 2, an attack step's input-only backward 1), times the
architecture's GFLOPs at the job's resolution (torchvision's figures, scaled by area):

  train     epochs_total × (n_train × U(method) + n_val × (2K + 2))   U: std 3, at 2K+3,
            sat/amat/d_b/mart 2K+6, trades 2K+7, dpaat/d_a 4K+8 (K = training adversary steps)
  evaluate  n_test × (1 + Σ over the test and sanity attacks of their forward units:
            2 × steps + 1 for the gradient attacks, see dpaat.attack_kinds.forward_units)
  gradcam   n_test × 3 × (methods)

  runtime [min] = attempt × ceil(setup_minutes + margin × GFLOP / throughput / 60)
  throughput    = gpu_gflops on a GPU job, cpu_gflops_per_thread × threads on the CPU
  mem_mb        = base_mem_mb + the job's cached images in MB × a per-rule factor
                  (train 2: images and their device copy; evaluate 13: uint8 test set,
                  float32 adversarial set and its batches; gradcam 5: a float32 copy)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dpaat.attack_kinds import forward_units
from dpaat.sanity import SanityPlan

# Forward GFLOPs of one image at the native resolution (torchvision weights' meta "_ops").
ARCH_GFLOPS: Mapping[str, tuple[float, int]] = {
    "resnet34": (3.664, 224),
    "inception_v3": (5.713, 299),
    "densenet121": (2.834, 224),
    "mobilenet_v2": (0.301, 224),
    "shufflenet_v2_x1_0": (0.145, 224),
    "squeezenet1_1": (0.349, 224),
}
# Units per training image and epoch, as a function of the adversary's steps K.
TRAIN_UNITS = {
    "std": lambda k: 3,
    "at": lambda k: 2 * k + 3,
    "sat": lambda k: 2 * k + 6,
    "amat": lambda k: 2 * k + 6,
    "d_b": lambda k: 2 * k + 6,
    "dpaat": lambda k: 4 * k + 8,
    "d_a": lambda k: 4 * k + 8,
    # TRADES: a no-grad clean pass for the KL target, then as SAT; MART: as SAT.
    "trades": lambda k: 2 * k + 7,
    "mart": lambda k: 2 * k + 6,
}
MEMORY_FACTOR = {"train": 2, "evaluate": 13, "gradcam": 5}


def image_size(config: Mapping[str, Any], arch: str) -> int:
    """Input resolution of `arch` under `config` (InceptionV3 has its own)."""
    models = config["models"]
    return models["inception_image_size"] if arch == "inception_v3" else models["image_size"]


def gflop_per_unit(config: Mapping[str, Any], arch: str) -> float:
    """GFLOPs of one forward pass of one image of `arch` at its configured resolution."""
    gflops, native = ARCH_GFLOPS[arch]
    return gflops * (image_size(config, arch) / native) ** 2


def split_sizes(config: Mapping[str, Any]) -> dict[str, int]:
    """Approximate image counts of the train, val and test splits."""
    data = config["data"]
    classes = len(data["classes"])
    train_val = data["train_per_class"] * classes
    val = round(train_val * data["val_fraction"])
    return {"train": train_val - val, "val": val, "test": data["test_per_class"] * classes}


def work_gflop(config: Mapping[str, Any], rule: str, arch: str, method: str | None = None) -> float:
    """Total forward-pass GFLOPs of one job of `rule` (train needs the method)."""
    sizes = split_sizes(config)
    if rule == "train":
        training = config["training"]
        k = training["adversary"]["steps"]
        epochs = training["warmup_epochs"] + training["epochs"]
        units = epochs * (sizes["train"] * TRAIN_UNITS[method](k) + sizes["val"] * (2 * k + 2))
    elif rule == "evaluate":
        attacks = [
            *config["attacks"],
            *SanityPlan.from_config(config["sanity"], config["training"]["adversary"]).attacks.values(),
        ]
        n_classes = len(config["data"]["classes"])
        units = sizes["test"] * (1 + sum(forward_units(attack, n_classes) for attack in attacks))
    elif rule == "gradcam":
        units = sizes["test"] * 3 * len(config["report"]["gradcam_methods"])
    else:
        raise ValueError(f"no resource model for rule {rule!r}")
    return units * gflop_per_unit(config, arch)


def runtime_minutes(
    config: Mapping[str, Any], rule: str, arch: str, method: str | None = None, *, threads: int = 1, attempt: int = 1
) -> int:
    """Minutes to request for one job; each retry (attempt) asks for that many times more."""
    settings = config["job_resources"]
    on_cpu = config["training"]["device"] == "cpu"
    throughput = settings["cpu_gflops_per_thread"] * max(1, threads) if on_cpu else settings["gpu_gflops"]
    compute_minutes = settings["margin"] * work_gflop(config, rule, arch, method) / throughput / 60
    return attempt * math.ceil(settings["setup_minutes"] + compute_minutes)


def mem_mb(config: Mapping[str, Any], rule: str, arch: str) -> int:
    """Host memory to request for one job: a base plus its cached images times the rule's factor."""
    sizes = split_sizes(config)
    images = sizes["train"] + sizes["val"] if rule == "train" else sizes["test"]
    cached_mb = images * 3 * image_size(config, arch) ** 2 / 1e6
    return math.ceil(config["job_resources"]["base_mem_mb"] + MEMORY_FACTOR[rule] * cached_mb)
