"""The workflow beyond HAM10000: a ten-class ImageFolder tree end to end, a predefined split, a local MedMNIST file."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from data_helpers import image_tree, medmnist_npz
from test_workflow import REPO, copy_repo, snakemake, torch_cache

from dpaat.data.medmnist import dataset_info
from dpaat.imagenet_weights import IMAGENET_WEIGHTS_URLS
from dpaat.io import read_parquet_metadata

CLASSES = [f"class_{c}" for c in range(10)]


def overlay(workdir, data, **extra):
    (workdir / "dataset.yaml").write_text(json.dumps({"data": data, **extra}))
    return ["--configfile", "tests/configs/tiny.yaml", "dataset.yaml"]


@pytest.mark.slow
def test_a_ten_class_imagefolder_tree_runs_the_whole_workflow(tmp_path):
    tree = image_tree(tmp_path / "tree")
    workdir = copy_repo(tmp_path / "workflow")
    data = {"source": "imagefolder", "local_dir": str(tree), "classes": None, "train_per_class": 6,
            "test_per_class": 2, "val_fraction": 0.34}  # fmt: skip
    # The paper's five methods and 20-PGD, so the claims kept for another dataset are tested; the default's
    # ablation (Fig. 3 from the main models).
    args = overlay(
        workdir,
        data,
        # The lightest CNN at 32 px keeps this second whole-workflow run short.
        models={"archs": ["shufflenet_v2_x1_0"], "image_size": 32},
        training={"methods": ["std", "at", "sat", "amat", "dpaat"]},
        attacks=[
            {"name": "fgsm", "kind": "fgsm", "eps": 1 / 255},
            {"name": "pgd20", "kind": "pgd", "eps": 0.3, "steps": 20},
        ],
        evaluation={"confusion_attack": "pgd20"},
        ablation={"methods": ["at", "dpaat"], "batch_size": None, "epochs": None},
        report={
            "gradcam_images_per_class": 1,
            **{f"{k}_archs": ["shufflenet_v2_x1_0"] for k in ("confusion", "ablation", "gradcam")},
        },
    )
    run = snakemake(workdir, "--cores", "2", "--resources", "gpu=1", *args, timeout=900)
    assert run.returncode == 0, run.stderr[-6000:]
    results = workdir / "results"
    for target in ["tables/table1.md", "tables/table2.tex", "tables/claims.md", "tables/comparisons.csv",
                   "tables/sanity.md", "tables/gradcam.md", "figures/confusion_shufflenet_v2_x1_0.png",
                   "figures/ablation.png", "figures/training_curves.png", "figures/robustness_curves.png",
                   "figures/gradcam_shufflenet_v2_x1_0.png"]:  # fmt: skip
        assert (results / target).stat().st_size > 0, target
    metrics = pd.read_parquet(results / "metrics/metrics.parquet")
    assert all(np.array(c.tolist()).shape == (10, 10) for c in metrics["confusion"])
    assert all(list(c) == CLASSES for c in metrics["classes"])
    splits = pd.read_parquet(results / "data/splits.parquet")
    groups = pd.read_csv(tree / "groups.csv").set_index("path")["group"]
    assert (splits["lesion_id"] == splits["image_id"].map(groups)).all()
    assert splits.groupby("lesion_id")["split"].nunique().max() == 1  # grouped
    claims = pd.read_csv(results / "tables/claims.csv")
    paper_claims = claims[claims["origin"] == "paper"]
    assert set(paper_claims["id"]) == {"dpaat_racc_pgd20_highest", "dpaat_gacc_highest_of_at", "std_gacc_highest"}
    assert (paper_claims["paper"] == "—").all()
    assert paper_claims["verdict"].isin(["supported", "contradicted", "inconclusive"]).all(), claims["reason"].tolist()
    # The claims of ours (DPAAT against TRADES and MART) hold on any dataset; this run has no baselines.
    ours = claims[claims["origin"] == "ours"]
    assert set(ours["id"]) == {"dpaat_racc_pgd20_exceeds_baselines", "dpaat_gacc_exceeds_baselines"}
    assert (ours["verdict"] == "not tested").all()
    assert " / " not in (results / "tables/table1.md").read_text()  # no paper numbers beside ours
    assert "not scored" in (results / "tables/gradcam.md").read_text()  # no masks, nothing scored


@pytest.mark.slow
def test_a_predefined_train_test_tree_and_a_local_medmnist_file_reach_their_split(tmp_path):
    tree = image_tree(tmp_path / "tree", predefined=True)
    workdir = copy_repo(tmp_path / "workflow")
    data = {"source": "imagefolder", "local_dir": str(tree), "classes": CLASSES[3:], "train_per_class": 6,
            "test_per_class": 4, "val_fraction": 0.34}  # fmt: skip
    run = snakemake(workdir, "--cores", "2", "results/data/splits.parquet", *overlay(workdir, data), timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    splits = pd.read_parquet(workdir / "results/data/splits.parquet")
    part = splits["image_id"].str.split("/").str[0]
    assert set(splits["dx"]) == set(CLASSES[3:])
    assert ((splits["split"] == "test") == (part == "test")).all()
    stored = read_parquet_metadata(workdir / "results/data/splits.parquet")["dpaat"]
    assert stored["predefined_split"].startswith("the dataset's own train/test parts")

    # BloodMNIST's eight classes from the package's INFO table (data.classes null), its file read from local_dir.
    names = dataset_info("bloodmnist", 28)["classes"]
    (tmp_path / "medmnist").mkdir()
    (tmp_path / "medmnist/bloodmnist.npz").write_bytes(
        medmnist_npz(classes=8, counts={"train": 48, "val": 16, "test": 24})
    )
    data = {"source": "medmnist", "local_dir": str(tmp_path / "medmnist"), "classes": None,
            "medmnist": {"flag": "bloodmnist", "size": 28}, "train_per_class": 5, "test_per_class": 3,
            "val_fraction": 0.4}  # fmt: skip
    run = snakemake(workdir, "--cores", "2", "results/data/splits.parquet", *overlay(workdir, data), timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    splits = pd.read_parquet(workdir / "results/data/splits.parquet")
    assert sorted(splits["dx"].unique()) == sorted(names)
    assert (splits["image_id"].str.rsplit("_", n=1).str[0] == splits["split"]).all()  # the official split
    assert splits["split"].value_counts().to_dict() == {"train": 24, "test": 24, "val": 16}


def test_the_pathmnist_config_plans_the_papers_grid_on_nine_classes(tmp_path):
    env = torch_cache(tmp_path, IMAGENET_WEIGHTS_URLS)
    args = ["-n", "--configfile", "config/paper.yaml", "config/medmnist.yaml", "--printshellcmds"]
    run = snakemake(REPO, *args, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    counts = {
        line.split()[0]: int(line.split()[1]) for line in run.stdout.splitlines() if re.match(r"^\w+\s+\d+$", line)
    }
    assert counts["total"] == 330 and counts["train"] == counts["evaluate"] == 126 and counts["cache"] == 6
