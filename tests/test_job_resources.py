"""Runtime and memory requests from the config: hand-worked cases and the tables they rest on."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from dpaat.job_resources import (
    ARCH_GFLOPS,
    calibrated_settings,
    measured_gflops,
    measured_jobs,
    mem_mb,
    runtime_minutes,
    split_sizes,
    work_gflop,
)
from dpaat.job_resources import load_config as load_config_files
from dpaat.method_kinds import METHOD_KINDS
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
        assert {m: kind.train_units(k) for m, kind in METHOD_KINDS.items()} == {m: 3 * f(k) for m, (_, f) in bench.IDEAL.items()}


def test_hand_worked_paper_resnet34_dpaat():
    config = load_config("paper.yaml")
    # 800 x 3 train+val, 10 % val; 299 x 3 test.
    assert split_sizes(config) == {"train": 2160, "val": 240, "test": 897}
    # 60 epochs x (2160 x (4*7+8) + 240 x (2*7+2)) units of 3.664 GFLOP at 224 px.
    work = 60 * (2160 * 36 + 240 * 16) * 3.664
    assert work_gflop(config, "train", "resnet34", "dpaat") == pytest.approx(work)
    assert runtime_minutes(config, "train", "resnet34", "dpaat") == math.ceil(5 + 1.5 * work / 1000 / 60)
    assert runtime_minutes(config, "train", "resnet34", "dpaat", attempt=2) == 2 * math.ceil(5 + 1.5 * work / 1000 / 60)
    # Evaluation of the paper's five attacks alone: clean + FGSM (1 step) + I-FGSM 10, 20 + PGD 20, 50:
    # 1 + 3 + 21 + 41 + 41 + 101 units per image.
    paper_only = {**config, "attacks": config["attacks"][:5], "sanity": {**config["sanity"], "enabled": False},
                  "corruptions": {"set": None}}  # fmt: skip
    assert work_gflop(paper_only, "evaluate", "resnet34") == pytest.approx(897 * 208 * 3.664)
    # InceptionV3 at its own 299 px costs its native GFLOPs.
    assert work_gflop(paper_only, "evaluate", "inception_v3") == pytest.approx(897 * 208 * 5.713)
    # The rest at the assumed accuracies (job_resources.expected_accuracy): clean c = 0.76, an
    # adversarially trained model's robust r = 0.65. APGD-100 (APGD-CE) is AutoAttack's first attack,
    # read off its run (its prediction, 1). AutoAttack (3 classes: APGD-CE, APGD-DLR, FAB, Square),
    # each attack followed by a prediction of the images it got: APGD-CE as APGD on every image,
    # then on the r left APGD-DLR 1 + 202 + 1, FAB 1 + 2 + 100 x (3 + 2) + 1, Square 1 + 2 + 5000 + 1,
    # and the final prediction. Sanity: 10 curve points of 10 steps (21 each); restart1 read off
    # the best of 5 (its prediction, 1); the best of 5 = 20 (steps) + its fooled check 1 + 4 x r x (20 + 1) + 1;
    # the black-box check reads AutoAttack's white-box stages off its run (their prediction, 1) instead
    # of a 1000-query Square of its own. The 15 dermoscopy corruptions at 5 severities: one forward pass each (75).
    c, r = 0.76, 0.65
    apgd = 1 + 202 * c + 1
    autoattack = apgd + r * 204 + r * 504 + r * 5004 + 1
    units = 208 + 1 + autoattack + 10 * 21 + 1 + (21 + 4 * r * 21 + 1) + 1 + 75
    assert work_gflop(config, "evaluate", "resnet34", "dpaat") == pytest.approx(897 * units * 3.664)
    # An STD model (robust accuracy 0.12) leaves Square and FAB far fewer images.
    assert work_gflop(config, "evaluate", "resnet34", "std") < 0.4 * work_gflop(config, "evaluate", "resnet34", "dpaat")
    # 13 x the uint8 test set, and 8 more: AutoAttack's run keeps its APGD-CE's and its white-box
    # stages' float32 images (the restart check's run, one stage, keeps fewer).
    assert mem_mb(config, "evaluate", "resnet34") == math.ceil(3000 + 21 * 897 * 3 * 224 * 224 / 1e6)


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


def test_evaluate_ablation_asks_only_for_the_clean_pass_and_the_confusion_attack():
    config = load_config("paper.yaml")
    assert config["evaluation"]["confusion_attack"] == "pgd20"
    # 897 test images x (clean 1 + PGD-20's 2 x 20 + 1) units of 3.664 GFLOP.
    work = 897 * 42 * 3.664
    assert work_gflop(config, "evaluate_ablation", "resnet34") == pytest.approx(work)
    assert runtime_minutes(config, "evaluate_ablation", "resnet34") == math.ceil(5 + 1.5 * work / 1000 / 60) == 9
    assert mem_mb(config, "evaluate_ablation", "resnet34") == math.ceil(3000 + 13 * 897 * 3 * 224 * 224 / 1e6)


def test_the_two_evaluate_rules_request_what_their_own_attacks_cost(tmp_path):
    """The planned jobs' requests for the same model: evaluate's every attack, evaluate_ablation's two passes."""
    from test_workflow import IMAGENET_WEIGHTS_URLS, snakemake, torch_cache

    config = load_config_files([REPO / "config/paper.yaml"])  # on top of config/config.yaml, as snakemake reads it
    targets = {
        "evaluate": "results/metrics/models/0/at/resnet34.parquet",
        "evaluate_ablation": "results/ablation/batch64_epochs100/metrics/models/0/at/resnet34.parquet",
    }
    env = torch_cache(tmp_path, IMAGENET_WEIGHTS_URLS)
    run = snakemake(REPO, *targets.values(), "-n", "--configfile", "config/paper.yaml", timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    planned = {
        rule: int(re.search(r"runtime=(\d+)", body).group(1))
        for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n)+)", run.stdout, flags=re.MULTILINE)
        if rule in targets
    }
    expected = {rule: runtime_minutes(config, rule, "resnet34") for rule in targets}
    assert planned == expected
    assert expected["evaluate_ablation"] * 20 < expected["evaluate"]


def write_benchmark(path: Path, seconds: float) -> None:
    """A Snakemake benchmark file of one finished job."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"
    path.write_text(
        f"{header}\n{seconds}\t0:00:{int(seconds):02d}\t700.1\t3000.2\t400.0\t420.5\t0.1\t5.2\t95.0\t{seconds}\n"
    )


def test_calibration_from_hand_built_benchmark_files(tmp_path):
    bench = tmp_path / "benchmarks"
    # tests/configs/tiny.yaml without the sanity attacks and corruptions: 36 train, 12 val, 18 test images at 48 px,
    # K = 2. Every job takes 30 s of start-up plus its units at 4 units a second (one train job twice that).
    write_benchmark(bench / "train/0/std/mobilenet_v2.tsv", 30 + 360 / 4)  # 2 epochs x (36 x 3 + 12 x 6) = 360 units
    write_benchmark(bench / "train/1/std/mobilenet_v2.tsv", 30 + 360 / 2)
    write_benchmark(bench / "evaluate/0/std/mobilenet_v2.tsv", 30 + 198 / 4)  # 18 x (1 + FGSM 3 + PGD-3 7) = 198 units
    write_benchmark(bench / "ablation/batch8_epochs2/train/0/at/mobilenet_v2.tsv", 30 + 972 / 4)  # 3 x (36 x 7 + 12 x 6)
    write_benchmark(bench / "data/acquire.tsv", 5)  # no resource model: ignored
    (tmp_path / "nosanity.yaml").write_text("sanity: {enabled: false}\ncorruptions: {set: null}\n")
    configs = [REPO / "tests/configs/tiny.yaml", tmp_path / "nosanity.yaml"]
    config = load_config_files(configs)
    unit = 0.301 * (48 / 224) ** 2  # MobileNetV2's GFLOP per image at 48 px
    jobs = measured_jobs(bench, config)
    assert sorted((j.rule, round(j.gflop / unit), j.seconds) for j in jobs) == [
        ("evaluate", 198, 79.5), ("train", 360, 120.0), ("train", 360, 210.0), ("train_ablation", 972, 273.0),
    ]  # fmt: skip
    measured = {(m.rule, m.arch): (m.jobs, m.gflops) for m in measured_gflops(jobs)}
    assert measured == {
        ("train", "mobilenet_v2"): (2, pytest.approx((360 * unit / 120 + 360 * unit / 210) / 2)),  # median of two
        ("evaluate", "mobilenet_v2"): (1, pytest.approx(198 * unit / 79.5)),
        ("train_ablation", "mobilenet_v2"): (1, pytest.approx(972 * unit / 273)),
    }
    # The least-squares line through the four jobs, by hand: work w = (360, 360, 198, 972) units,
    # seconds s = 30 + w/4 + (0, 90, 0, 0). Its start-up rounds up to a tenth of a minute.
    w = [360, 360, 198, 972]
    s = [120, 210, 79.5, 273]
    w_mean, s_mean = sum(w) / 4, sum(s) / 4
    slope = sum((a - w_mean) * (b - s_mean) for a, b in zip(w, s)) / sum((a - w_mean) ** 2 for a in w)
    setup_minutes = math.ceil((s_mean - slope * w_mean) / 6) / 10
    # The slow train job (210 s) is above the line: the throughput falls until margin 1.5 covers it.
    throughput = min(1 / slope, 1.5 * 360 / (210 - 60 * setup_minutes)) * unit
    fit = calibrated_settings(config, jobs)
    assert (fit.key, fit.throughput, fit.setup_minutes) == ("cpu_gflops_per_thread", pytest.approx(throughput), setup_minutes)
    assert min(fit.ratios) >= 1 and fit.ratios[[j.seconds for j in jobs].index(210)] == pytest.approx(1)
    on_gpu = {**config, "training": {**config["training"], "device": "auto"}}
    assert calibrated_settings(on_gpu, jobs).key == "gpu_gflops"
    # One work size only: no line to fit, so no start-up and the median throughput.
    same = [j for j in jobs if j.rule == "train"]
    assert calibrated_settings(config, same).setup_minutes == 0
    cli = subprocess.run(
        [sys.executable, "-m", "dpaat.job_resources", "calibrate", str(bench), "--configfile", *map(str, configs)],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(REPO / "scripts")},
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"set job_resources.cpu_gflops_per_thread: {float(f'{throughput:.3g}'):g}  (now 4)" in cli.stdout
    assert f"set job_resources.setup_minutes: {setup_minutes:g}  (now 5)" in cli.stdout
    assert "each of the 4 jobs would request 1.00-" in cli.stdout
    assert re.search(rf"^evaluate\s+mobilenet_v2\s+1\s+{198 * unit / 79.5:.3g}$", cli.stdout, flags=re.MULTILINE)
