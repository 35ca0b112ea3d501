"""Runtime and memory requests from the config: hand-worked cases and the tables they rest on."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from dpaat.job_resources import ARCH_GFLOPS, TRAIN_UNITS, mem_mb, runtime_minutes, split_sizes, work_gflop
from dpaat.models import ARCHITECTURES

REPO = Path(__file__).resolve().parents[1]


def load_config(name: str, **overrides) -> dict:
    config = yaml.safe_load((REPO / "config" / name).read_text())
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    validate(config, str(REPO / "config" / "schema" / "config.schema.yaml"), set_default=True)
    return config


def test_gflops_are_torchvisions():
    assert {arch: ARCH_GFLOPS[arch] for arch in ARCHITECTURES} == {
        arch: (spec.weights.meta["_ops"], spec.image_size) for arch, spec in ARCHITECTURES.items()
    }


def test_method_costs_are_the_benchmarks_ideal_multiples():
    spec = importlib.util.spec_from_file_location("bench_training", REPO / "benchmarks" / "bench_training.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for k in (1, 7, 10):
        # The benchmark counts multiples of an STD step, which is 3 forward passes.
        assert {m: units(k) for m, units in TRAIN_UNITS.items()} == {m: 3 * f(k) for m, (_, f) in bench.IDEAL.items()}


def test_hand_worked_paper_resnet34_dpaat():
    config = load_config("paper.yaml")
    # 800 x 3 train+val, 10 % val; 299 x 3 test.
    assert split_sizes(config) == {"train": 2160, "val": 240, "test": 897}
    # 60 epochs x (2160 x (4*7+8) + 240 x (2*7+2)) units of 3.664 GFLOP at 224 px.
    work = 60 * (2160 * 36 + 240 * 16) * 3.664
    assert work_gflop(config, "train", "resnet34", "dpaat") == pytest.approx(work)
    assert runtime_minutes(config, "train", "resnet34", "dpaat") == math.ceil(5 + 2 * work / 1000 / 60)
    assert runtime_minutes(config, "train", "resnet34", "dpaat", attempt=2) == 2 * math.ceil(5 + 2 * work / 1000 / 60)
    # Evaluation of the paper's five attacks alone: clean + FGSM (1 step) + I-FGSM 10, 20 + PGD 20, 50:
    # 1 + 3 + 21 + 41 + 41 + 101 units per image.
    paper_only = {**config, "attacks": config["attacks"][:5], "sanity": {**config["sanity"], "enabled": False}}
    assert work_gflop(paper_only, "evaluate", "resnet34") == pytest.approx(897 * 208 * 3.664)
    # InceptionV3 at its own 299 px costs its native GFLOPs.
    assert work_gflop(paper_only, "evaluate", "inception_v3") == pytest.approx(897 * 208 * 5.713)
    # APGD-100: 2 x 101 + 1; AutoAttack (100 steps, 3 classes, 5000 queries): 4 x 101 + 600 + 5001;
    # the sanity attacks: 5 L2 + 5 Linf curve points of 10 steps (21 each), the restart check's
    # 10-step PGD from one random start (21) and from the best of 5 (5 x 20 + 1), a 1000-query Square (1001).
    units = 208 + 203 + 6005 + 10 * 21 + 21 + 101 + 1001
    assert work_gflop(config, "evaluate", "resnet34") == pytest.approx(897 * units * 3.664)
    assert mem_mb(config, "evaluate", "resnet34") == math.ceil(3000 + 13 * 897 * 3 * 224 * 224 / 1e6)


def test_cpu_jobs_scale_with_threads_and_image_area():
    config = load_config("config.yaml")
    assert config["training"]["device"] == "cpu"
    one = runtime_minutes(config, "train", "mobilenet_v2", "at", threads=1)
    four = runtime_minutes(config, "train", "mobilenet_v2", "at", threads=4)
    assert four < one
    small = work_gflop(config, "train", "mobilenet_v2", "at")
    large = work_gflop(load_config("config.yaml", models={"image_size": 64}), "train", "mobilenet_v2", "at")
    assert large == pytest.approx(4 * small)


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match="no resource model"):
        work_gflop(load_config("config.yaml"), "report", "mobilenet_v2")
