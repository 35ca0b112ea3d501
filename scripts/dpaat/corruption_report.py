"""The corruption and calibration tables and figures, from the per-image predictions.

- Corruption table: per CNN group and method, clean accuracy, mean corruption accuracy (over
  every corruption and severity, CNN and seed), the worst corruption (lowest accuracy averaged
  over its severities), each with its bootstrap interval over test images (`dpaat.stats`), and
  MedMNIST-C's balanced error BE and relative balanced error RBE with STD as the baseline
  (Di Salvo et al. 2024 normalise by AlexNet): per corruption c, with err = 1 - balanced accuracy
  averaged over severities, CNNs and seeds, BE_c = err_c / err_c(STD) and
  RBE_c = (err_c - err_clean) / (err_c(STD) - err_clean(STD)); BE and RBE are their means over c.
- Calibration table: expected calibration error (`dpaat.calibration`) on clean, attacked and
  corrupted predictions (the corrupted ones: the mean over every corrupted test set).
- Figures: accuracy against severity per method, reliability diagrams, and one test image
  under each corruption.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dpaat import stats
from dpaat.calibration import N_BINS, ece_interval, reliability_curve
from dpaat.claims import group_archs
from dpaat.corruptions import MEAN_CORRUPTION, corrupt, image_seed, parse_condition
from dpaat.paper_results import ALL_GROUP, ARCH_GROUPS, arch_label, attack_label, method_label
from dpaat.prediction_store import Predictions

BASELINE = "std"


def _groups(archs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(group id, its archs present) for All and each paper group that has archs here and differs from All."""
    everything = group_archs(ALL_GROUP[0], archs)
    groups = [(ALL_GROUP[0], everything)]
    for gid, *_ in ARCH_GROUPS:
        members = group_archs(gid, archs)
        if members and members != everything:
            groups.append((gid, members))
    return groups


def _methods(preds: Predictions, methods: Sequence[str], attack: str, archs: Sequence[str]) -> list[str]:
    return [m for m in methods if all(preds.has(m, a, attack) for a in archs)]


def _balanced_error(labels: np.ndarray, probs: np.ndarray) -> float:
    """1 - balanced accuracy, averaged over the first two axes of probs (A, S, N, C)."""
    from sklearn.metrics import balanced_accuracy_score

    return float(np.mean([[1 - balanced_accuracy_score(labels, p.argmax(-1)) for p in per_arch] for per_arch in probs]))


def corruption_table(preds: Predictions, methods: Sequence[str], *, n_resamples: int, seed: int) -> pd.DataFrame:
    """One row per CNN group and method: clean, mean and worst corruption accuracy (percent, intervals), BE, RBE."""
    conditions = preds.corruptions()
    if not conditions:
        raise ValueError("the predictions hold no corrupted test set; set corruptions.set and rerun the evaluation")
    corruptions = list(dict.fromkeys(parse_condition(c)[0] for c in conditions))
    of = {c: [n for n in conditions if parse_condition(n)[0] == c] for c in corruptions}
    rows = []
    for group, archs in _groups(preds.archs()):
        archs = [a for a in archs if any(preds.has(m, a, MEAN_CORRUPTION) for m in methods)]
        present = _methods(preds, methods, MEAN_CORRUPTION, archs)
        if not archs or not present:
            continue
        labels = preds.labels(archs)

        def stacked(method: str, names: Sequence[str]) -> np.ndarray:
            return np.concatenate([preds.probs(method, n, archs) for n in names])

        def cell(method: str, names: Sequence[str]) -> stats.Interval:
            return stats.cell_interval(
                "accuracy", labels, stacked(method, names), n_resamples=n_resamples, seed=seed, scale=100.0
            )

        errors = {
            m: {c: _balanced_error(labels, stacked(m, of[c])) for c in corruptions}
            | {"clean": _balanced_error(labels, stacked(m, ["clean"]))}
            for m in present
        }
        for method in present:
            # Equal-sized stacks: the plain mean is the mean over CNNs, then seeds.
            accuracy = {c: float((stacked(method, of[c]).argmax(-1) == labels).mean()) for c in corruptions}
            worst = min(accuracy, key=accuracy.get)
            clean, mean, worst_cell = cell(method, ["clean"]), cell(method, conditions), cell(method, of[worst])
            be, rbe = _relative_errors(errors, method, corruptions)
            rows.append(
                {"group": group, "method": method, "cnns": ";".join(archs), "n_images": len(labels),
                 "clean": clean.estimate, "clean_low": clean.low, "clean_high": clean.high,
                 "mean_corruption": mean.estimate, "mean_low": mean.low, "mean_high": mean.high,
                 "worst_corruption": worst, "worst": worst_cell.estimate, "worst_low": worst_cell.low,
                 "worst_high": worst_cell.high, "balanced_error": be, "relative_error": rbe}
            )  # fmt: skip
    return pd.DataFrame(rows)


def _relative_errors(
    errors: dict[str, dict[str, float]], method: str, corruptions: Sequence[str]
) -> tuple[float, float]:
    """MedMNIST-C's BE and RBE of `method` against the baseline (NaN without STD or where a denominator is 0)."""
    if BASELINE not in errors:
        return math.nan, math.nan
    mine, base = errors[method], errors[BASELINE]
    be, rbe = [], []
    for c in corruptions:
        be.append(mine[c] / base[c] if base[c] > 0 else math.nan)
        drop = base[c] - base["clean"]
        rbe.append((mine[c] - mine["clean"]) / drop if drop != 0 else math.nan)
    return float(np.mean(be)), float(np.mean(rbe))


def _group_label(group: str, cnns: str) -> str:
    """The paper's group name with the CNNs it holds here, e.g. 'Lightweight CNNs (MobileNetV2, ShuffleNetV2)'."""
    name = dict([(ALL_GROUP[0], ALL_GROUP[2])] + [(gid, prefix) for gid, _, prefix, _ in ARCH_GROUPS])[group]
    return f"{name} ({', '.join(arch_label(a) for a in cnns.split(';'))})"


def _ci(estimate: float, low: float, high: float, digits: int = 1) -> str:
    if math.isnan(low):
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def corruption_markdown(table: pd.DataFrame, n_conditions: int) -> str:
    """The corruption table as Markdown with its caption."""
    lines = [
        f"**Accuracy under MedMNIST-C's dermoscopy corruptions** ({n_conditions} corrupted test sets: corruption "
        "× severity). Accuracy in percent, averaged over the group's CNNs and the seeds, with its bootstrap 95 % "
        "interval over test images; Mean = over every corruption and severity; Worst = the corruption with the "
        "lowest accuracy averaged over its severities. BE / RBE: MedMNIST-C's balanced error and relative "
        "balanced error against STD (1 = as STD; lower is more robust).",
        "",
        "| Group | Method | Clean | Mean corruption | Worst corruption | BE | RBE |",
        "| :-- | :-- | --: | --: | :-- | --: | --: |",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {_group_label(r['group'], r['cnns'])} | {method_label(r['method'])} | {_ci(r['clean'], r['clean_low'], r['clean_high'])} | "
            f"{_ci(r['mean_corruption'], r['mean_low'], r['mean_high'])} | "
            f"{r['worst_corruption']} {_ci(r['worst'], r['worst_low'], r['worst_high'])} | "
            f"{r['balanced_error']:.3f} | {r['relative_error']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def calibration_table(
    preds: Predictions,
    methods: Sequence[str],
    attacks: Sequence[str],
    *,
    n_bins: int = N_BINS,
    n_resamples: int,
    seed: int,
) -> pd.DataFrame:
    """ECE (percent, with its interval) of each method on the clean, each attack's and the corrupted predictions."""
    archs = group_archs(ALL_GROUP[0], preds.archs())
    rows = []
    for condition in ["clean", *attacks, *([MEAN_CORRUPTION] if preds.corruptions() else [])]:
        for method in methods:
            usable = [a for a in archs if preds.has(method, a, condition)]
            if not usable:
                continue
            labels = preds.labels(usable)
            ece = ece_interval(labels, preds.probs(method, condition, usable), n_bins=n_bins,
                               n_resamples=n_resamples, seed=seed, scale=100.0)  # fmt: skip
            rows.append({"method": method, "condition": condition, "cnns": ";".join(usable), "n_images": len(labels),
                         "ece": ece.estimate, "ece_low": ece.low, "ece_high": ece.high})  # fmt: skip
    return pd.DataFrame(rows)


def calibration_markdown(table: pd.DataFrame, n_bins: int = N_BINS) -> str:
    """The calibration table as Markdown: methods as rows, conditions as columns."""
    conditions = list(dict.fromkeys(table["condition"]))
    lines = [
        f"**Expected calibration error** (top-label ECE, {n_bins} equal-width confidence bins, in percent; lower is "
        "better calibrated), averaged over every CNN and seed (and, under 'mean corruption', every corrupted test "
        "set), with its bootstrap 95 % interval over test images. ECE is biased upward under resampling (a resample "
        "repeats images, which adds binning noise); BCa corrects for that bias, so an interval can lie below its estimate.",
        "",
        "| Method | " + " | ".join(attack_label(c) for c in conditions) + " |",
        "| :-- | " + " | ".join("--:" for _ in conditions) + " |",
    ]
    for method, rows in table.groupby("method", sort=False):
        cells = {r["condition"]: _ci(r["ece"], r["ece_low"], r["ece_high"]) for _, r in rows.iterrows()}
        lines.append(f"| {method_label(method)} | " + " | ".join(cells.get(c, "—") for c in conditions) + " |")
    return "\n".join(lines) + "\n"


def severity_figure(preds: Predictions, methods: Sequence[str]) -> Figure:
    """Accuracy (over every corruption, CNN and seed) against severity, 0 = clean, one line per method."""
    conditions = preds.corruptions()
    severities = sorted({parse_condition(c)[1] for c in conditions})
    archs = group_archs(ALL_GROUP[0], preds.archs())
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for method in methods:
        usable = [a for a in archs if preds.has(method, a, MEAN_CORRUPTION)]
        if not usable:
            continue
        labels = preds.labels(usable)

        def accuracy(names: Sequence[str]) -> float:
            probs = np.concatenate([preds.probs(method, n, usable) for n in names])
            return 100 * float((probs.argmax(-1) == labels).mean())

        values = [accuracy(["clean"])] + [
            accuracy([c for c in conditions if parse_condition(c)[1] == s]) for s in severities
        ]
        ax.plot([0, *severities], values, marker="o", label=method_label(method))
    ax.set_xticks([0, *severities], ["clean", *map(str, severities)])
    ax.set_xlabel("MedMNIST-C severity")
    ax.set_ylabel("accuracy (%), mean over corruptions, CNNs and seeds")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def reliability_figure(preds: Predictions, methods: Sequence[str], attack: str, n_bins: int = N_BINS) -> Figure:
    """Reliability diagrams: one panel per method, clean, `attack` and corrupted predictions of every CNN and seed."""
    archs = group_archs(ALL_GROUP[0], preds.archs())
    kinds = ["clean", attack, *([MEAN_CORRUPTION] if preds.corruptions() else [])]
    fig = Figure(figsize=(3 * len(methods), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(methods), sharey=True))
    for ax, method in zip(axes, methods):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for kind in kinds:
            usable = [a for a in archs if preds.has(method, a, kind)]
            if usable:
                accuracy, confidence = reliability_curve(
                    preds.labels(usable), preds.probs(method, kind, usable), n_bins
                )
                ax.plot(confidence, accuracy, marker=".", label=attack_label(kind))
        ax.set_title(method_label(method))
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(fontsize="small", loc="lower right")
    return fig


def panel_figure(image: np.ndarray, image_id: str, corruptions: Sequence[str], severity: int, seed: int) -> Figure:
    """One test image (RGB uint8 H, W, 3) clean and under each corruption at `severity`, as the corrupt job makes them."""
    tiles = [("clean", image)] + [
        (name, corrupt(image, name, severity, image_seed(seed, name, severity, image_id))) for name in corruptions
    ]
    columns = 4
    rows = math.ceil(len(tiles) / columns)
    fig = Figure(figsize=(2.2 * columns, 2.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (name, tile) in zip(axes, tiles):
        ax.imshow(tile)
        ax.set_title(name if name == "clean" else f"{name} ({severity})", fontsize="small")
    fig.suptitle(f"test image {image_id} at {image.shape[0]} px, severity {severity}")
    return fig
