"""The whole workflow on a tiny config: every target, idempotence, lint, and the paper's DAG."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from dpaat.imagenet_weights import IMAGENET_WEIGHTS_URLS, weights_file

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
PARTS = ["workflow", "rules", "scripts", "config", "envs", "report", "profiles", "tests/configs"]


def copy_repo(dest: Path) -> Path:
    """A copy of the workflow's sources, so its results/ stay out of the checkout."""
    for part in PARTS:
        shutil.copytree(REPO / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def snakemake(cwd: Path, *args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    env = None if env is None else os.environ | env
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def torch_cache(root: Path, archs) -> dict[str, str]:
    """A TORCH_HOME whose hub/checkpoints/ holds (empty) ImageNet checkpoints of `archs`."""
    for arch in archs:
        path = weights_file(arch, {"TORCH_HOME": str(root)})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return {"TORCH_HOME": str(root)}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    workdir = copy_repo(tmp_path_factory.mktemp("workflow"))
    run = snakemake(workdir, "--cores", "2", "--resources", "gpu=1", "--configfile", "tests/configs/tiny.yaml")
    assert run.returncode == 0, run.stderr[-6000:]
    return workdir, run


@pytest.mark.slow
def test_tiny_run_writes_every_target(tiny_run):
    workdir, _ = tiny_run
    results = workdir / "results"
    metrics = pd.read_parquet(results / "metrics/metrics.parquet")
    # std, at, amat, dpaat, trades, mart on one arch, each clean + two attacks + the sanity attacks
    # (L2 curve at 1x and 4x eps, a Linf curve point, one random start and the best of two, Square)
    # and three dermoscopy corruptions at severities 1 and 3 (forward passes, after the attacks).
    corrupted = [f"{c}@{s}" for c in ("gaussian_noise", "motion_blur", "characters") for s in (1, 3)]
    attacks = ["clean", "fgsm", "pgd3", "curvel2x1", "curvel2x4", "curvelinf4", "restart1", "restarts", "square"]
    attacks += corrupted
    assert len(metrics) == 6 * len(attacks)
    assert set(metrics["attack"]) == set(attacks)
    assert metrics["accuracy"].between(0, 1).all()
    # The ablation's own schedule: its models, trained with batch 8 for 2 epochs, scored clean and under pgd3.
    ablation = results / "ablation/batch8_epochs2"
    ablation_metrics = pd.read_parquet(ablation / "metrics.parquet")
    assert set(zip(ablation_metrics["method"], ablation_metrics["attack"])) == {
        (m, a) for m in ("at", "dpaat") for a in ("clean", "pgd3")
    }
    for method in ("at", "dpaat"):
        run_record = json.loads((ablation / f"models/0/{method}/mobilenet_v2/run.json").read_text())
        assert (run_record["training"]["batch_size"], run_record["training"]["epochs"]) == (8, 2)
        assert run_record["cpu_kernels"]["reproducible_cpu_kernels"] is True  # the schema's default
        assert len(pd.read_parquet(ablation / f"models/0/{method}/mobilenet_v2/history.parquet")) == 1 + 2
    # One evaluation job per model wrote its per-image predictions; adversarial images are not kept.
    predictions = pd.read_parquet(results / "predictions/0/dpaat/mobilenet_v2.parquet")
    assert predictions["attack"].unique().tolist() == attacks
    assert len(predictions) == len(attacks) * 3 * 6
    assert not (results / "attacks").exists()
    for table in ("table1", "table2"):
        for ext in ("csv", "md", "tex", "html"):
            assert (results / f"tables/{table}.{ext}").stat().st_size > 0
    assert "DPAAT" in (results / "tables/table1.md").read_text()
    # Intervals in every cell; Table I lists the configured test attacks only.
    table1 = pd.read_csv(results / "tables/table1.csv")
    assert {"racc_fgsm_low", "racc_pgd3_high", "gacc_low"} <= set(table1.columns)
    assert not any(c.startswith("racc_curve") for c in table1.columns)
    assert (table1["gacc_low"] <= table1["gacc"]).all() and (table1["gacc"] <= table1["gacc_high"]).all()
    # Tables I and II keep the paper's methods; the baselines table has them beside TRADES and MART.
    assert "TRADES" not in (results / "tables/table1.md").read_text()
    baselines = pd.read_csv(results / "tables/baselines.csv")
    assert baselines["method"].tolist() == ["std", "at", "amat", "dpaat", "trades", "mart"]
    assert (baselines["racc_pgd3_low"] <= baselines["racc_pgd3"]).all()
    assert "| MART |" in (results / "tables/baselines.md").read_text()
    assert (results / "tables/baselines.tex").stat().st_size > 0
    claims = pd.read_csv(results / "tables/claims.csv")
    assert set(claims["verdict"]) <= {"supported", "contradicted", "inconclusive", "not tested"}
    assert "dpaat_gacc_highest_of_at" in set(claims["id"])
    ours = claims[claims["origin"] == "ours"].set_index("id")
    assert sorted(ours.index) == ["at_corruption_not_below_std", "dpaat_corruption_highest_of_at",
                                  "dpaat_gacc_exceeds_baselines", "dpaat_racc_pgd20_exceeds_baselines"]  # fmt: skip
    # tiny.yaml has no pgd20: the RAcc claim is not tested; the GAcc one is, against both baselines.
    assert ours.loc["dpaat_racc_pgd20_exceeds_baselines", "verdict"] == "not tested"
    assert ours.loc["dpaat_gacc_exceeds_baselines", "verdict"] != "not tested"
    assert set(ours["paper"]) == {"ours, not the paper's"}
    assert "McNemar" in (results / "tables/comparisons.md").read_text()
    # The corruption claims of ours need SAT, which tiny.yaml does not train (tests/test_claims.py decides them).
    corruption_claims = claims.set_index("id").loc[["at_corruption_not_below_std", "dpaat_corruption_highest_of_at"]]
    assert (corruption_claims["reason"] == "this run lacks sat under corrupted").all()
    corruptions = pd.read_csv(results / "tables/corruptions.csv")
    assert corruptions["method"].tolist() == ["std", "at", "amat", "dpaat", "trades", "mart"]
    assert corruptions["worst_corruption"].isin(["gaussian_noise", "motion_blur", "characters"]).all()
    assert (corruptions["mean_low"] <= corruptions["mean_corruption"]).all()
    assert corruptions.set_index("method").loc["std", "balanced_error"] == 1  # STD is the baseline
    calibration = pd.read_csv(results / "tables/calibration.csv")
    assert set(calibration["condition"]) == {"clean", "fgsm", "pgd3", "corrupted"}
    assert calibration["ece"].between(0, 100).all()
    # One corrupted test set per condition at the model's 48 px, shared by every model.
    assert sorted(p.stem for p in (results / "data/corrupted/test/48px").glob("*.pt")) == sorted(corrupted)
    sanity = pd.read_parquet(results / "metrics/sanity.parquet")
    assert len(sanity) == 6 * 8 and sanity["check"].nunique() == 8
    assert "Sanity checks" in (results / "tables/sanity.md").read_text()
    for figure in ("confusion_mobilenet_v2", "ablation", "training_curves", "gradcam_mobilenet_v2", "robustness_curves",
                   "corruption_severity", "corruption_panel", "reliability"):  # fmt: skip
        with Image.open(results / f"figures/{figure}.png") as image:
            assert image.format == "PNG" and min(image.size) >= 300
    scores = pd.read_parquet(results / "metrics/gradcam.parquet")
    assert set(scores["method"]) == {"std", "at", "dpaat"}
    # An all-zero CAM (possible for the tiny, barely trained models) has no energy to place: NaN.
    assert scores["energy_in_mask"].dropna().between(0, 1).all()
    splits = pd.read_parquet(results / "data/splits.parquet")
    assert splits.groupby("lesion_id")["split"].nunique().max() == 1
    # Each training job (the ablation's too) deleted its checkpoint once its files were written.
    assert not [p for p in (results / "checkpoints").rglob("*") if p.is_file()]


@pytest.mark.slow
def test_second_run_has_nothing_to_do(tiny_run):
    workdir, _ = tiny_run
    again = snakemake(workdir, "--cores", "2", "--configfile", "tests/configs/tiny.yaml")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_moving_machines_reruns_nothing(tiny_run):
    """Execution settings (device, threads, GPU slots) are no rerun trigger: a finished run stays finished."""
    workdir, _ = tiny_run
    (workdir / "machine.yaml").write_text(
        "training:\n  device: auto\n  threads: 3\n  deterministic: false\n"
        "gpu:\n  jobs_per_device: 2\n  slot_dir: /tmp/elsewhere\n  fast_paths: always\nevaluation:\n  gpu_batch_size: 7\n"
    )
    again = snakemake(
        workdir, "-n", "--configfile", "tests/configs/tiny.yaml", "machine.yaml", "--set-threads", "train=2", "evaluate=2"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


def trainings(stdout: str) -> dict[tuple[str, str], str]:
    """{(rule, method): reason} of each training job a dry run plans (Snakemake names only its first reason)."""
    jobs = re.findall(r"^rule (train\w*):\n((?:    .*\n)+)", stdout, flags=re.MULTILINE)
    return {
        (rule, re.search(r"output: \S*/models/\d+/(\w+)/", body).group(1)): re.search(r"reason: (.*)", body).group(1)
        for rule, body in jobs
    }


TINY_METHODS = ("std", "at", "amat", "dpaat", "trades", "mart")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "retrained"),
    [
        # Read by AMAT alone (or MART alone): only its models retrain; what they feed reruns as its input changed.
        ("  amat: {delta_eps_fraction: 0.2}", {("train", "amat")}),
        ("  mart: {lambda: 2.0}", {("train", "mart")}),
        # DPAAT's and SAT's α: AT does not read it, in the main grid or the ablation's.
        ("  alpha: 0.3", {("train", "dpaat"), ("train_ablation", "dpaat")}),
        # A result setting of every method (another precision is another model), the ablation's models too.
        ("  bf16: true", {("train", m) for m in TINY_METHODS} | {("train_ablation", "at"), ("train_ablation", "dpaat")}),
    ],
)
def test_a_result_setting_retrains_exactly_the_models_that_read_it(tiny_run, setting, retrained):
    workdir, _ = tiny_run
    (workdir / "result.yaml").write_text(f"training:\n{setting}\n")
    again = snakemake(workdir, "-n", "--configfile", "tests/configs/tiny.yaml", "result.yaml")
    assert again.returncode == 0, again.stderr[-3000:]
    planned = trainings(again.stdout)
    assert set(planned) == retrained
    # Each for its own params; AMAT also because the STD model it takes ξ from is retrained.
    assert all(why.startswith("Params have changed") or method == "amat" for (_, method), why in planned.items())


@pytest.mark.slow
def test_html_report(tiny_run):
    workdir, _ = tiny_run
    run = snakemake(workdir, "--configfile", "tests/configs/tiny.yaml", "--report", "results/report.html")
    assert run.returncode == 0, run.stderr[-3000:]
    html = (workdir / "results/report.html").read_text(errors="replace")
    # Tables as HTML pages the report shows inline, not CSVs it can only download; no Parquet in it.
    assert "ablation.png" in html and "table1.html" in html and "claims.html" in html
    assert "corruptions.html" in html and "calibration.html" in html and "corruption_panel.png" in html
    # The front page in words, with the split the run achieved (tests/test_front_page.py checks it has no repr).
    assert "STD, AT, AMAT, DPAAT, TRADES and MART" in html and "achieved split: train" in html
    assert "Results in brief" in html and "claims" in html and "test images" in html
    # Job parameters read as words, not Python lists.
    assert "attacks=fgsm, pgd3" in html and "attacks=['fgsm'" not in html
    # Fig. 2 per CNN, with its own caption.
    assert "Fig. 2, MobileNetV2" in html


def test_lint_is_silent():
    run = snakemake(REPO, "--lint", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Lints for" not in run.stdout + run.stderr


def test_paper_config_lists_the_full_dag(tmp_path):
    env = torch_cache(tmp_path, IMAGENET_WEIGHTS_URLS)
    run = snakemake(REPO, "-n", "--configfile", "config/paper.yaml", timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    # 3 seeds x (5 methods + TRADES and MART) x 6 archs = 126 trainings; D-A and D-B only in the ablation's schedule
    job_counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if re.match(r"^\w+\s+\d+$", line)}
    assert job_counts["train"] == 3 * 7 * 6
    for baseline in ("trades", "mart"):
        assert len(re.findall(rf"output: results/models/\d/{baseline}/\w+/weights\.pt", out)) == 3 * 6
    assert job_counts["baselines"] == 1
    assert job_counts["train_ablation"] == 3 * 4 * 2
    # One evaluation job per model runs the clean pass and all five attacks; no job per attack.
    assert job_counts["evaluate"] == job_counts["train"]
    assert "attack" not in job_counts
    # The dermoscopy corruptions are made once, for every model's evaluation.
    assert job_counts["corrupt"] == 1


def test_missing_imagenet_weights_are_planned_as_one_weights_job_before_training(tmp_path):
    env = torch_cache(tmp_path, ["resnet34", "mobilenet_v2"])
    run = snakemake(REPO, "-n", "--configfile", "config/paper.yaml", timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = re.findall(r"^rule (\w+):\n((?:    .*\n)+)", run.stdout, flags=re.MULTILINE)
    assert [rule for rule, _ in jobs].count("weights") == 1
    # Every training job (the ablation's too) waits for the weights job's record.
    trainings = [body for rule, body in jobs if rule in ("train", "train_ablation")]
    assert len(trainings) == 3 * 7 * 6 + 3 * 4 * 2  # the paper's five methods, TRADES and MART
    assert all("results/weights/imagenet.json" in body.split("output:")[0] for body in trainings)


def test_paper_config_trains_the_ablation_under_its_own_schedule_and_paths(tmp_path):
    # Paper section IV-D: AT, D-A, D-B, D-(A+B) with batch 64 for 100 epochs, ResNet34 and MobileNetV2.
    env = torch_cache(tmp_path, IMAGENET_WEIGHTS_URLS)
    run = snakemake(REPO, "-n", "--configfile", "config/paper.yaml", timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs = re.findall(r"^rule (\w+):\n((?:    .*\n)+)", run.stdout, flags=re.MULTILINE)
    ablation = {
        tuple(re.search(r"results/ablation/batch64_epochs100/models/(\d+)/(\w+)/(\w+)/weights\.pt", body).groups())
        for rule, body in jobs
        if rule == "train_ablation"
    }
    expected = {(s, m, a) for s in "012" for m in ("at", "d_a", "d_b", "dpaat") for a in ("resnet34", "mobilenet_v2")}
    assert ablation == expected
    # The main models keep their paths and are never the ablation's.
    main = [body for rule, body in jobs if rule == "train"]
    main_weights = r"output: results/models/\d+/(std|at|sat|amat|dpaat|trades|mart)/\w+/weights\.pt"
    assert all(re.search(main_weights, b) for b in main)


def test_default_config_reuses_the_main_models_for_the_ablation():
    run = snakemake(REPO, "-n", timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "train_ablation" not in run.stdout and "results/ablation/" not in run.stdout
    # The baselines are the config/baselines.yaml overlay's, not the default's.
    assert "rule baselines:" not in run.stdout and "/trades/" not in run.stdout


def test_rules_are_snakefmt_formatted():
    files = ["workflow/Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "rules").glob("*.smk"))]
    run = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
