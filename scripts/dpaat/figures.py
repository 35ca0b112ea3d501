"""Figures of the paper from the metrics and training histories: Fig. 2 (confusion matrices),
Fig. 3 (ablation) and training curves.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot, so no global state
and no display backend) and saved as PNG atomically.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from dpaat.io import atomic_path
from dpaat.paper_results import METHODS, arch_label, attack_label, method_label

DPI = 150
# Fig. 3 of the paper: AT, adaptation only, synchronisation only, both.
ABLATION_METHODS: dict[str, str] = {"at": "AT", "d_a": "D-A", "d_b": "D-B", "dpaat": "D-(A+B)"}
HISTORY_COLUMNS: tuple[str, ...] = (
    "seed", "method", "arch", "epoch", "train_loss", "val_loss",
    "val_clean_acc", "val_adv_acc", "eps_mean", "eps_std", "phase",
)  # fmt: skip


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Save a figure as PNG atomically (the temporary name has no .png suffix, so the format is explicit)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise naming the missing columns of a figure's input frame."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; expected {list(columns)}")


def _arch_rows(metrics_df: pd.DataFrame, arch: str) -> pd.DataFrame:
    """The metrics rows of one architecture, or a clear error listing the ones present."""
    _require_columns(metrics_df, ["seed", "method", "arch", "attack", "accuracy", "confusion", "classes"], "metrics")
    sub = metrics_df[metrics_df["arch"] == arch]
    if sub.empty:
        raise ValueError(f"no metrics for arch {arch!r}; present: {sorted(metrics_df['arch'].unique())}")
    return sub


def _present_methods(sub: pd.DataFrame, methods: Sequence[str], arch: str) -> list[str]:
    """The requested methods that have metrics for `arch`, warning about the others; error if none."""
    present = [m for m in methods if m in set(sub["method"])]
    if not present:
        raise ValueError(f"none of the methods {list(methods)} has metrics for arch {arch!r}")
    skipped = [m for m in methods if m not in present]
    if skipped:
        warnings.warn(f"methods {skipped} have no metrics for {arch}; left out of the figure", stacklevel=3)
    return present


def summed_confusion(sub: pd.DataFrame, method: str, attack: str) -> np.ndarray:
    """Confusion counts (row = true class) of one method under one attack, summed over seeds."""
    rows = sub[(sub["method"] == method) & (sub["attack"] == attack)]
    if rows.empty:
        raise ValueError(f"no metrics for method {method!r} under attack {attack!r}")
    return np.sum([np.stack([np.asarray(r, dtype=np.int64) for r in c]) for c in rows["confusion"]], axis=0)


def confusion_figure(
    metrics_df: pd.DataFrame, arch: str, methods: Sequence[str], attack: str, path: str | os.PathLike
) -> None:
    """Fig. 2: confusion matrices of `arch`, rows clean / `attack`, one column per method, row-normalised."""
    sub = _arch_rows(metrics_df, arch)
    present = _present_methods(sub, methods, arch)
    classes = list(sub["classes"].iloc[0])
    n_seeds = sub["seed"].nunique()
    cmap, norm = "Blues", Normalize(0.0, 1.0)
    # Panels grow with the number of classes (three: the paper's size), so every cell keeps its annotation legible.
    scale = min(3.0, max(1.0, len(classes) / 3))
    fig = Figure(figsize=(2.6 * scale * len(present) + 1.4, 5.6 * scale), layout="constrained")
    axes = fig.subplots(2, len(present), squeeze=False)
    for row, atk in enumerate(["clean", attack]):
        for col, method in enumerate(present):
            counts = summed_confusion(sub, method, atk)
            totals = counts.sum(axis=1, keepdims=True)
            frac = np.divide(counts, totals, out=np.full(counts.shape, np.nan), where=totals > 0)
            annot = np.array([[f"{f:.2f}\n({c})" for f, c in zip(fr, co)] for fr, co in zip(frac, counts)])
            ax = axes[row, col]
            sns.heatmap(
                frac, ax=ax, cmap=cmap, vmin=0, vmax=1, cbar=False, square=True, annot=annot, fmt="",
                annot_kws={"fontsize": 8}, xticklabels=classes, linewidths=0.5, linecolor="white",
                # Beyond three classes the class names label the first column's rows only.
                yticklabels=classes if col == 0 or len(classes) <= 3 else False,
            )  # fmt: skip
            ax.set_title(f"{method_label(method)}, {'clean' if atk == 'clean' else attack_label(atk)}")
            ax.set_xlabel("predicted class" if row == 1 else "")
            ax.set_ylabel("true class" if col == 0 else "")
            ax.tick_params(axis="y", rotation=0)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.6, label="fraction of the true class")
    seeds = f", summed over {n_seeds} seeds" if n_seeds > 1 else ""
    fig.suptitle(
        f"{arch_label(arch)}: confusion matrices on clean and {attack_label(attack)} test data\n"
        f"(normalised per true class; counts in brackets{seeds})"
    )
    save_figure(fig, path)


def ablation_figure(metrics_df: pd.DataFrame, archs: Sequence[str], attack: str, path: str | os.PathLike) -> None:
    """Fig. 3: GAcc and RAcc under `attack` of AT, D-A, D-B and D-(A+B) = DPAAT, one panel per arch."""
    if not archs:
        raise ValueError("ablation_figure needs at least one arch")
    panels = []
    for arch in archs:
        sub = _arch_rows(metrics_df, arch)
        present = _present_methods(sub, list(ABLATION_METHODS), arch)
        rows = sub[sub["method"].isin(present) & sub["attack"].isin(["clean", attack])]
        if attack not in set(rows["attack"]):
            raise ValueError(f"no metrics under attack {attack!r} for arch {arch!r}")
        long = rows.assign(
            variant=rows["method"].map(ABLATION_METHODS),
            measure=np.where(rows["attack"] == "clean", "GAcc (clean)", f"RAcc ({attack_label(attack)})"),
            value=rows["accuracy"] * 100.0,
        )
        panels.append((arch, [ABLATION_METHODS[m] for m in present], long))
    fig = Figure(figsize=(4.2 * len(archs) + 0.6, 4.2), layout="constrained")
    axes = fig.subplots(1, len(archs), squeeze=False, sharey=True)[0]
    multi_seed = metrics_df["seed"].nunique() > 1
    for ax, (arch, order, long) in zip(axes, panels):
        sns.barplot(
            data=long, x="variant", y="value", hue="measure", order=order, ax=ax, palette=["#4C72B0", "#DD8452"],
            errorbar="sd" if multi_seed else None, capsize=0.1,
        )  # fmt: skip
        for container in ax.containers:
            ax.bar_label(container, fmt="%.1f", fontsize=8, label_type="center", color="white")
        ax.set_title(arch_label(arch))
        ax.set_xlabel("training method")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    # One legend under the panels: inside a panel it covers a bar.
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    seeds = f"mean ± std over {metrics_df['seed'].nunique()} seeds" if multi_seed else "one seed"
    fig.suptitle(f"Ablation: dynamic adaptation (A) and synchronisation (B) ({seeds})")
    save_figure(fig, path)


def _phase_ends(runs: pd.DataFrame) -> list[tuple[float, str]]:
    """(x position, phase) at the end of every phase but the last, from the runs of one arch."""
    last = runs.groupby("phase")["epoch"].max().sort_values()
    return [(float(epoch) + 0.5, str(phase)) for phase, epoch in last.iloc[:-1].items()]


def training_curves_figure(histories: pd.DataFrame, path: str | os.PathLike) -> None:
    """Loss, validation clean/adversarial accuracy and training eps per method, one column per arch."""
    _require_columns(histories, HISTORY_COLUMNS, "training histories")
    if histories.empty:
        raise ValueError("training histories are empty; nothing to plot")
    repeats = histories.duplicated(["seed", "method", "arch", "epoch"])
    if repeats.any():
        raise ValueError(
            "repeated (seed, method, arch, epoch) rows in the histories: epoch must count over the whole run, "
            "warm-up included"
        )
    archs = list(dict.fromkeys(histories["arch"]))
    methods = [m for m in METHODS if m in set(histories["method"])] + sorted(set(histories["method"]) - set(METHODS))
    palette = dict(zip(methods, sns.color_palette("tab10", len(methods))))
    has_eps = histories["eps_mean"].notna().any()
    panels = [
        ("loss", {"train_loss": "train", "val_loss": "validation"}),
        ("validation accuracy", {"val_clean_acc": "clean", "val_adv_acc": "adversarial"}),
    ] + ([("training eps (per-sample mean)", {"eps_mean": "eps"})] if has_eps else [])
    errorbar = "sd" if histories["seed"].nunique() > 1 else None
    fig = Figure(figsize=(5.0 * len(archs) + 1.8, 3.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), len(archs), squeeze=False, sharex="col")
    for col, arch in enumerate(archs):
        runs = histories[histories["arch"] == arch]
        for row, (ylabel, series) in enumerate(panels):
            ax = axes[row, col]
            long = runs.melt(
                id_vars=["seed", "method", "epoch"], value_vars=list(series), var_name="series", value_name="value"
            ).dropna(subset=["value"])
            long["series"] = long["series"].map(series)
            long["method"] = long["method"].map(method_label)
            show_legend = col == len(archs) - 1
            if not long.empty:
                sns.lineplot(
                    data=long, x="epoch", y="value", hue="method", style="series" if len(series) > 1 else None,
                    palette={method_label(m): c for m, c in palette.items()}, errorbar=errorbar, ax=ax,
                    legend="auto" if show_legend else False,
                )  # fmt: skip
            if "eps_mean" in series:
                band = runs.groupby(["method", "epoch"])[["eps_mean", "eps_std"]].mean().dropna().reset_index()
                for method, b in band.groupby("method"):
                    ax.fill_between(b["epoch"], b["eps_mean"] - b["eps_std"], b["eps_mean"] + b["eps_std"],
                                    color=palette[method], alpha=0.15, linewidth=0)  # fmt: skip
            for x, phase in _phase_ends(runs):
                ax.axvline(x, color="grey", linestyle=":", linewidth=1)
                if row == 0:
                    ax.text(x, 0.98, f" end of {phase}", transform=ax.get_xaxis_transform(), fontsize=7, va="top")
            if row == 0:
                ax.set_title(arch_label(arch))
            ax.set_ylabel(ylabel)
            ax.set_xlabel("epoch" if row == len(panels) - 1 else "")
            if show_legend and ax.get_legend() is not None:
                sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title=None, frameon=False)
    seeds = f"mean ± std over {histories['seed'].nunique()} seeds" if errorbar else "one seed"
    band = "; eps band = ± per-sample std" if has_eps else ""
    fig.suptitle(f"Training curves ({seeds}){band}")
    save_figure(fig, path)


def robustness_curves_figure(
    metrics_df: pd.DataFrame,
    curve: Sequence,
    path: str | os.PathLike,
    *,
    training_eps: float | None = None,
    chance: float | None = None,
) -> None:
    """Accuracy against eps per method, one column per CNN, one row per norm; eps 0 is the clean accuracy.

    `curve` holds the curve attacks (objects with name, norm, eps, e.g. `dpaat.sanity.CurvePoint`).
    """
    _require_columns(metrics_df, ["seed", "method", "arch", "attack", "accuracy"], "metrics")
    if not curve:
        raise ValueError("no curve attacks configured (sanity.eps_multiples / sanity.linf_eps)")
    points = pd.DataFrame([{"attack": p.name, "norm": p.norm, "eps": p.eps} for p in curve])
    norms = list(dict.fromkeys(points["norm"]))
    clean = metrics_df[metrics_df["attack"] == "clean"]
    long = pd.concat(
        [metrics_df.merge(points, on="attack")] + [clean.assign(norm=norm, eps=0.0) for norm in norms],
        ignore_index=True,
    )
    if long["attack"].ne("clean").sum() == 0:
        raise ValueError(f"the metrics hold none of the curve attacks {list(points['attack'])}; rerun the evaluation")
    # Linf budgets read as multiples of one grey level, as in the paper's 1/255.
    long = long.assign(
        value=long["accuracy"] * 100.0,
        method=long["method"].map(method_label),
        eps=np.where(long["norm"] == "linf", long["eps"] * 255, long["eps"]),
    )
    archs = list(dict.fromkeys(metrics_df["arch"]))
    order = [method_label(m) for m in METHODS if method_label(m) in set(long["method"])]
    order += sorted(set(long["method"]) - set(order))
    palette = dict(zip(order, sns.color_palette("tab10", len(order))))
    errorbar = "sd" if metrics_df["seed"].nunique() > 1 else None
    fig = Figure(figsize=(4.4 * len(archs) + 1.8, 3.4 * len(norms)), layout="constrained")
    axes = fig.subplots(len(norms), len(archs), squeeze=False, sharey=True)
    for row, norm in enumerate(norms):
        for col, arch in enumerate(archs):
            ax = axes[row, col]
            sub = long[(long["arch"] == arch) & (long["norm"] == norm)]
            show_legend = row == 0 and col == len(archs) - 1
            if not sub.empty:
                sns.lineplot(
                    data=sub, x="eps", y="value", hue="method", hue_order=[m for m in order if m in set(sub["method"])],
                    palette=palette, marker="o", errorbar=errorbar, ax=ax, legend="auto" if show_legend else False,
                )  # fmt: skip
            if chance is not None:
                ax.axhline(100 * chance, color="grey", linestyle="--", linewidth=1)
                ax.text(0, 100 * chance, " chance", fontsize=7, va="bottom", color="grey")
            if training_eps is not None and norm == points["norm"].iloc[0]:
                ax.axvline(training_eps, color="grey", linestyle=":", linewidth=1)
                ax.text(training_eps, 101, " training eps", fontsize=7, va="bottom", color="grey")
            if norm == "linf":
                ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
                ax.text(1.0, 101, " paper's FGSM / I-FGSM", fontsize=7, va="bottom", color="grey")
            ax.set_title(f"{arch_label(arch)}, {'L2' if norm == 'l2' else 'Linf'}")
            ax.set_xlabel("L2 eps" if norm == "l2" else "Linf eps (x 1/255)")
            ax.set_ylabel("accuracy (%)" if col == 0 else "")
            ax.set_ylim(-2, 105)
            if show_legend and ax.get_legend() is not None:
                sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title=None, frameon=False)
    seeds = f"mean ± std over {metrics_df['seed'].nunique()} seeds" if errorbar else "one seed"
    fig.suptitle(f"Robust accuracy against the attack budget ({seeds}; eps 0 = clean)")
    save_figure(fig, path)
