"""dpaat.figures write readable PNGs from small hand-made frames; bad input is a clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dpaat.figures import HISTORY_COLUMNS, ablation_figure, confusion_figure, summed_confusion, training_curves_figure
from dpaat.metrics import metrics_frame, model_metrics

CLASSES = ["mel", "bkl", "nv"]
ARCHS = ("mobilenet_v2", "shufflenet_v2_x1_0")


def _metrics(methods=("std", "at", "dpaat", "d_a"), seeds=(0, 1)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    rows = []
    for seed in seeds:
        for method in methods:
            for arch in ARCHS:
                for attack in ("clean", "pgd20"):
                    logits = rng.normal(size=(30, 3)) + 2.0 * np.eye(3)[labels]
                    rows.append(
                        model_metrics(labels, logits, CLASSES, method=method, arch=arch, seed=seed, attack=attack)
                    )
    return metrics_frame(rows)


def _assert_png(path, min_size=(400, 250)) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        assert im.size[0] <= 6000 and im.size[1] <= 6000
        # Not a blank canvas: a figure has more than a handful of distinct colours.
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def test_summed_confusion_adds_seeds() -> None:
    df = _metrics()
    sub = df[(df["arch"] == "mobilenet_v2")]
    seeds = sub[(sub["method"] == "at") & (sub["attack"] == "pgd20")]["confusion"]
    expected = sum(np.array([list(r) for r in c]) for c in seeds)
    got = summed_confusion(sub, "at", "pgd20")
    assert (got == expected).all() and got.sum() == 60


def test_confusion_figure_writes_png_and_skips_missing_methods(tmp_path) -> None:
    path = tmp_path / "confusion_mobilenet_v2.png"
    with pytest.warns(UserWarning, match=r"\['sat'\] have no metrics"):
        confusion_figure(_metrics(), "mobilenet_v2", ["std", "at", "sat", "dpaat"], "pgd20", path)
    _assert_png(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_confusion_figure_errors(tmp_path) -> None:
    df = _metrics()
    with pytest.raises(ValueError, match="no metrics for arch 'resnet34'"):
        confusion_figure(df, "resnet34", ["at"], "pgd20", tmp_path / "x.png")
    with pytest.raises(ValueError, match="none of the methods"):
        confusion_figure(df, "mobilenet_v2", ["amat"], "pgd20", tmp_path / "x.png")
    with pytest.raises(ValueError, match="under attack 'fgsm'"):
        confusion_figure(df, "mobilenet_v2", ["at"], "fgsm", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_ablation_figure_writes_png(tmp_path) -> None:
    path = tmp_path / "ablation.png"
    with pytest.warns(UserWarning, match=r"\['d_b'\] have no metrics"):
        ablation_figure(_metrics(), list(ARCHS), "pgd20", path)
    _assert_png(path)


def test_ablation_figure_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="none of the methods"):
        ablation_figure(_metrics(methods=("std",), seeds=(0,)), list(ARCHS), "pgd20", tmp_path / "a.png")
    with pytest.raises(ValueError, match="under attack 'fgsm'"), pytest.warns(UserWarning):
        ablation_figure(_metrics(seeds=(0,)), list(ARCHS), "fgsm", tmp_path / "a.png")


def _histories() -> pd.DataFrame:
    rows = []
    for method in ("std", "dpaat"):
        for arch in ARCHS:
            for epoch in range(1, 6):
                adversarial = method != "std"
                rows.append({
                    "seed": 0, "method": method, "arch": arch, "epoch": epoch,
                    "train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch, "val_clean_acc": 0.5 + 0.05 * epoch,
                    "val_adv_acc": 0.3 + 0.04 * epoch if adversarial else np.nan,
                    "eps_mean": 0.3 + 0.01 * epoch if adversarial else np.nan,
                    "eps_std": 0.05 if adversarial else np.nan,
                    "phase": "warmup" if epoch <= 2 else "full",
                })  # fmt: skip
    return pd.DataFrame(rows)


def test_training_curves_figure_writes_png(tmp_path) -> None:
    path = tmp_path / "training_curves.png"
    training_curves_figure(_histories(), path)
    _assert_png(path)


def test_training_curves_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"lacks columns \['eps_std'\]"):
        training_curves_figure(_histories().drop(columns="eps_std"), tmp_path / "c.png")
    with pytest.raises(ValueError, match="empty"):
        training_curves_figure(pd.DataFrame(columns=list(HISTORY_COLUMNS)), tmp_path / "c.png")
    restarted = _histories().assign(epoch=lambda d: np.where(d["phase"] == "full", d["epoch"] - 2, d["epoch"]))
    with pytest.raises(ValueError, match="epoch must count over the whole run"):
        training_curves_figure(restarted, tmp_path / "c.png")


def test_robustness_curves_figure(tmp_path) -> None:
    from dpaat.figures import robustness_curves_figure
    from dpaat.sanity import CurvePoint

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 10)
    curve = [
        CurvePoint("curvel2x1", "l2", 0.15),
        CurvePoint("curvel2x2", "l2", 0.3),
        CurvePoint("curvelinf4", "linf", 4 / 255),
    ]
    rows = [
        model_metrics(labels, rng.normal(size=(30, 3)) + 2.0 * np.eye(3)[labels], CLASSES, method=m, arch=a, seed=0, attack=atk)
        for m in ("std", "at") for a in ARCHS for atk in ("clean", *[p.name for p in curve])
    ]  # fmt: skip
    path = tmp_path / "curves.png"
    robustness_curves_figure(metrics_frame(rows), curve, path, training_eps=0.15, chance=1 / 3)
    _assert_png(path)
    with pytest.raises(ValueError, match="no curve attacks"):
        robustness_curves_figure(metrics_frame(rows), [], path)
