"""Runtime and memory requests of the model jobs, from the config (no torch: the Snakefile uses it).

Work is counted in forward-equivalent passes of one image ("units", as `dpaat.work_count`
counts them in every job's run record: a forward 1, a training backward 2, an attack step's
input-only backward 1), times the architecture's GFLOPs at the job's resolution
(torchvision's figures, scaled by area):

  train     epochs_total × (n_train × U(method) + n_val × (2K + 2))   U: std 3, at 2K+3,
            sat/amat/d_b/mart 2K+6, trades 2K+7, dpaat/d_a 4K+8 (K = training adversary steps)
  evaluate  n_test × (1 + Σ over the test and sanity attacks of `dpaat.attack_kinds.forward_units`
            at the clean and robust accuracy `expected_accuracy` assumes for the method: the
            cascades and early stops of Square, AutoAttack and the restarts; an entry read off
            another attack's run (a PGD's first start; AutoAttack's APGD-CE and white-box
            stages) costs its prediction only; + 1 per corrupted test set)
  evaluate_ablation  n_test × (1 + forward units of evaluation.confusion_attack)
  gradcam   n_test × 3 × (methods)

  runtime [min] = attempt × ceil(setup_minutes + margin × GFLOP / throughput / 60)
  throughput    = gpu_gflops on a GPU job, cpu_gflops_per_thread × threads on the CPU
  mem_mb        = base_mem_mb + the job's cached images in MB × a per-rule factor
                  (train 2: images and their device copy; evaluate 13: uint8 test set,
                  float32 adversarial set and its batches, + 4 per earlier stage the
                  longest-kept run also keeps; gradcam 5: a float32 copy)

`gpu_gflops` (or `cpu_gflops_per_thread`) is best measured: after the first jobs on a new
machine, `PYTHONPATH=scripts python -m dpaat.job_resources calibrate results/benchmarks
--configfile <the run's config>` fits start-up + work / throughput to the seconds in the
finished jobs' Snakemake benchmark files and prints the throughput and setup_minutes to set.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpaat.attack_kinds import read_off, stages_of
from dpaat.attack_kinds import forward_units as attack_units
from dpaat.corruptions import conditions
from dpaat.method_kinds import METHOD_KINDS
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
MEMORY_FACTOR = {"train": 2, "evaluate": 13, "evaluate_ablation": 13, "gradcam": 5}


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


def evaluation_attacks(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What an evaluate job runs, {name: attack entry}: the configured test attacks, then the sanity attacks."""
    test_attacks = {a["name"]: dict(a) for a in config["attacks"]}
    sanity = SanityPlan.from_config(config["sanity"], config["training"]["adversary"], test_attacks)
    return {**test_attacks, **sanity.attacks}


def expected_accuracy(config: Mapping[str, Any], method: str | None) -> tuple[float, float]:
    """The (clean, robust) accuracy the cost model assumes for a model trained with `method`
    (job_resources.expected_accuracy: STD's robust accuracy, or the adversarially trained methods')."""
    assumed = config["job_resources"]["expected_accuracy"]
    robust = assumed["robust_std"] if method == "std" else assumed["robust_adversarial"]
    return assumed["clean"], min(robust, assumed["clean"])


def evaluation_units(config: Mapping[str, Any], attacks: Mapping[str, Mapping[str, Any]], method: str | None) -> float:
    """Expected forward-equivalents per test image of an evaluation: the clean pass and every attack."""
    clean, robust = expected_accuracy(config, method)
    n_classes = len(config["data"]["classes"])
    # An entry read off another attack's run (dpaat.attack_kinds.read_off) costs only the prediction
    # of its images.
    read = read_off(attacks)
    return 1 + sum(
        1 if name in read else attack_units(entry, n_classes, clean, robust) for name, entry in attacks.items()
    )


def work_gflop(config: Mapping[str, Any], rule: str, arch: str, method: str | None = None) -> float:
    """Total forward-pass GFLOPs of one job of `rule` (train needs the method; evaluate uses it for the
    expected robust accuracy, and without it assumes an adversarially trained model)."""
    sizes = split_sizes(config)
    if rule == "train":
        training = config["training"]
        k = training["adversary"]["steps"]
        epochs = training["warmup_epochs"] + training["epochs"]
        units = epochs * (sizes["train"] * METHOD_KINDS[method].train_units(k) + sizes["val"] * (2 * k + 2))
    elif rule == "evaluate":
        # The corrupted test sets: one forward pass each.
        corrupted = len(conditions(config.get("corruptions") or {}))
        units = sizes["test"] * (evaluation_units(config, evaluation_attacks(config), method) + corrupted)
    elif rule == "evaluate_ablation":
        # Fig. 3 needs the clean pass and the confusion attack only (no sanity attacks).
        confusion = config["evaluation"]["confusion_attack"]
        units = sizes["test"] * evaluation_units(config, {confusion: evaluation_attacks(config)[confusion]}, method)
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
    factor = MEMORY_FACTOR[rule]
    runs = stages_of(evaluation_attacks(config)) if rule == "evaluate" else {}
    # A run that gives other entries (dpaat.attack_kinds.read_off) keeps each stage's float32 images too.
    factor += 4 * max((len(stages) for stages in runs.values()), default=0)
    return math.ceil(config["job_resources"]["base_mem_mb"] + factor * cached_mb)


# --------------------------------------------------------------- calibration from measured jobs

REPO = Path(__file__).resolve().parents[2]
# The model rules' benchmark files (rules/*.smk) and the rule each is the benchmark of.
_BENCHMARKS = (
    (re.compile(r"train/\d+/(?P<method>\w+)/(?P<arch>\w+)\.tsv"), "train"),
    (re.compile(r"evaluate/\d+/(?P<method>\w+)/(?P<arch>\w+)\.tsv"), "evaluate"),
    (re.compile(r"gradcam/(?P<arch>\w+)\.tsv"), "gradcam"),
    (
        re.compile(r"ablation/batch(?P<batch>\d+)_epochs(?P<epochs>\d+)/train/\d+/(?P<method>\w+)/(?P<arch>\w+)\.tsv"),
        "train_ablation",
    ),
    (re.compile(r"ablation/batch\d+_epochs\d+/evaluate/\d+/(?P<method>\w+)/(?P<arch>\w+)\.tsv"), "evaluate_ablation"),
)


@dataclass(frozen=True)
class MeasuredJob:
    """One finished model job: its rule and architecture, its work under the config and its wall-clock seconds."""

    rule: str
    arch: str
    gflop: float
    seconds: float


@dataclass(frozen=True)
class Measured:
    """One rule and architecture's finished jobs: how many, and their median GFLOP/s."""

    rule: str
    arch: str
    jobs: int
    gflops: float


@dataclass(frozen=True)
class Calibration:
    """The job_resources values the measured jobs call for, and what each job would then request.

    `throughput` (GFLOP/s, per thread on a CPU config, under `key`) and `setup_minutes`: the
    straight line seconds = start-up + work / throughput through the jobs, the throughput then
    lowered where a job would otherwise get less than its measured time. `ratios`: each measured
    job's request (setup_minutes + margin x work / throughput, before rounding up to whole
    minutes) over its measured time.
    """

    key: str
    throughput: float
    setup_minutes: float
    ratios: tuple[float, ...]


def benchmark_seconds(path: str | Path) -> float:
    """Wall-clock seconds of a job from its Snakemake benchmark file (the mean of its rows)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ValueError(f"{path} is not a Snakemake benchmark file (no 's' column)")
    return statistics.fmean(float(row["s"]) for row in rows)


def measured_jobs(benchmark_dir: str | Path, config: Mapping[str, Any]) -> list[MeasuredJob]:
    """Every finished model job under `benchmark_dir`: its work under `config` and its seconds."""
    jobs = []
    root = Path(benchmark_dir)
    for path in sorted(root.rglob("*.tsv")):
        rel = path.relative_to(root).as_posix()
        for pattern, rule in _BENCHMARKS:
            match = pattern.fullmatch(rel)
            if match:
                break
        else:
            continue  # the data and report rules have no resource model
        found = match.groupdict()
        settings = config
        if rule == "train_ablation":
            training = {**config["training"], "batch_size": int(found["batch"]), "epochs": int(found["epochs"])}
            settings = {**config, "training": training}
        model_rule = "train" if rule == "train_ablation" else rule
        work = work_gflop(settings, model_rule, found["arch"], found.get("method"))
        jobs.append(MeasuredJob(rule, found["arch"], work, benchmark_seconds(path)))
    return jobs


def measured_gflops(jobs: Sequence[MeasuredJob]) -> list[Measured]:
    """GFLOP/s of the jobs (work over seconds, start-up included) as the median per rule and architecture."""
    per_group: dict[tuple[str, str], list[float]] = {}
    for job in jobs:
        per_group.setdefault((job.rule, job.arch), []).append(job.gflop / job.seconds)
    return [Measured(rule, arch, len(v), statistics.median(v)) for (rule, arch), v in sorted(per_group.items())]


def calibrated_settings(config: Mapping[str, Any], jobs: Sequence[MeasuredJob]) -> Calibration:
    """The throughput and setup_minutes that give every measured job at least its time, and little more.

    Job seconds are start-up plus work over throughput: a least-squares line through the jobs
    gives both (with one work size only, no start-up and the median throughput). The start-up
    is rounded up to a tenth of a minute; then the throughput is lowered, where needed, until
    setup + margin x work / throughput covers every job's seconds.
    """
    if not jobs:
        raise ValueError("no finished model jobs to calibrate from")
    margin = float(config["job_resources"]["margin"])
    work = [job.gflop for job in jobs]
    seconds = [job.seconds for job in jobs]
    startup, throughput = 0.0, statistics.median(w / s for w, s in zip(work, seconds))
    if len(set(work)) > 1:
        slope, intercept = statistics.linear_regression(work, seconds)
        if slope > 0:
            startup, throughput = max(0.0, intercept), 1 / slope
    setup_minutes = math.ceil(startup / 6) / 10
    setup = 60 * setup_minutes
    # A job above the line must still get its time: margin x work / throughput >= its seconds - setup.
    throughput = min([throughput] + [margin * w / (s - setup) for w, s in zip(work, seconds) if s > setup])
    ratios = tuple((setup + margin * w / throughput) / s for w, s in zip(work, seconds))
    if config["training"]["device"] == "cpu":
        return Calibration("cpu_gflops_per_thread", throughput / max(1, config["training"]["threads"]), setup_minutes,
                           ratios)  # fmt: skip
    return Calibration("gpu_gflops", throughput, setup_minutes, ratios)


def load_config(configfiles: Sequence[str | Path]) -> dict[str, Any]:
    """config/config.yaml updated with `configfiles` as snakemake does, validated, with the schema's defaults."""
    import yaml
    from snakemake.utils import validate

    config: dict[str, Any] = {}
    for path in [REPO / "config" / "config.yaml", *configfiles]:
        _update(config, yaml.safe_load(Path(path).read_text()) or {})
    validate(config, str(REPO / "config" / "schema" / "config.schema.yaml"), set_default=True)
    return config


def _update(config: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            _update(config[key], value)
        else:
            config[key] = value


def main(argv: Sequence[str] | None = None) -> int:
    """`calibrate BENCHMARK_DIR [--configfile ...]`: measured GFLOP/s per rule and arch, and the values to set."""
    parser = argparse.ArgumentParser(prog="python -m dpaat.job_resources", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    calibrate = commands.add_parser("calibrate", help="GFLOP/s of finished jobs from their benchmark files")
    calibrate.add_argument("benchmark_dir", help="the run's results/benchmarks")
    calibrate.add_argument("--configfile", nargs="*", default=[], help="the config file(s) the run used")
    args = parser.parse_args(argv)
    config = load_config(args.configfile)
    jobs = measured_jobs(args.benchmark_dir, config)
    if not jobs:
        print(f"no finished model jobs under {args.benchmark_dir}: run some first", file=sys.stderr)
        return 1
    print(f"{'rule':<18} {'arch':<20} {'jobs':>4} {'GFLOP/s':>10}")
    for m in measured_gflops(jobs):
        print(f"{m.rule:<18} {m.arch:<20} {m.jobs:>4} {m.gflops:>10.3g}")
    fit = calibrated_settings(config, jobs)
    settings = config["job_resources"]
    print(f"set job_resources.{fit.key}: {float(f'{fit.throughput:.3g}'):g}  (now {settings[fit.key]})")
    print(f"set job_resources.setup_minutes: {fit.setup_minutes:g}  (now {settings['setup_minutes']})")
    print(
        f"at these values each of the {len(jobs)} jobs would request {min(fit.ratios):.2f}-{max(fit.ratios):.2f} x "
        "its measured time (before rounding up to whole minutes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
