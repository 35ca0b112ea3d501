"""Tables I and II of the paper from the metrics table, as CSV, Markdown and LaTeX.

Each cell is the mean over seeds of a group average: for every seed, the metric is
averaged over the group's architectures, then mean (± sample std when several seeds)
over seeds. Groups follow the paper (three widely used CNNs, three lightweight CNNs,
all CNNs) restricted to the architectures present. The best AT-family value of each
column and group is bold (STD excluded, as in the paper: "best results among AT methods").
TRADES and MART, baselines that are not the paper's, stay out of Tables I and II and
appear with the paper's five methods in `baselines_table`.
`add_intervals` gives every cell its 95 % bootstrap interval over test images (and seeds),
computed from the per-image predictions by `dpaat.stats`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from dpaat import stats
from dpaat.io import write_text
from dpaat.tables import LEFT, RIGHT, csv_text, latex_row, latex_table, markdown, markdown_table, tex
from dpaat.paper_results import (
    ALL_GROUP,
    ARCH_GROUPS,
    ARCH_LABELS,
    BASELINE_TABLE_METHODS,
    BASELINES,
    METHODS,
    TABLE1,
    TABLE1_ATTACKS,
    TABLE2,
    TABLE2_ATTACK,
    arch_label,
    attack_label,
    method_label,
)

TABLE_NAMES: tuple[str, ...] = ("table1", "table2")
FORMATS: tuple[str, ...] = ("csv", "md", "tex")
OUT_KEYS: tuple[str, ...] = tuple(f"{t}_{f}" for t in TABLE_NAMES for f in FORMATS)


@dataclass(frozen=True)
class ArchGroup:
    """A group of architectures averaged together; `complete` when it is the paper's full group."""

    id: str
    name: str
    archs: tuple[str, ...]
    complete: bool


@dataclass(frozen=True)
class Column:
    """One table column: `metric` of the `attack` rows times `scale`; `paper_key` indexes the paper's table."""

    key: str
    label: str
    attack: str
    metric: str
    scale: float
    paper_key: str | None


@dataclass(frozen=True)
class Table:
    """A rendered-ready table: `cells` has one row per (group, method, column)."""

    name: str
    title: str
    caption: str
    columns: tuple[Column, ...]
    decimals: int
    cells: pd.DataFrame


def arch_groups(archs: Iterable[str]) -> list[ArchGroup]:
    """The paper's groups restricted to `archs`, then all of them (omitted when it repeats a group)."""
    present = set(archs)
    groups = []
    for gid, full_name, prefix, members in ARCH_GROUPS:
        here = tuple(a for a in members if a in present)
        if here:
            complete = len(here) == len(members)
            name = full_name if complete else f"{prefix} ({', '.join(map(arch_label, here))})"
            groups.append(ArchGroup(gid, name, here, complete))
    known = [a for _, _, _, members in ARCH_GROUPS for a in members]
    everything = tuple(a for a in known if a in present) + tuple(sorted(present - set(known)))
    if everything and not any(set(g.archs) == set(everything) for g in groups):
        complete = set(everything) == set(ARCH_LABELS)
        gid, full_name, prefix = ALL_GROUP
        name = full_name if complete else f"{prefix} ({', '.join(map(arch_label, everything))})"
        groups.append(ArchGroup(gid, name, everything, complete))
    return groups


def _ordered_methods(methods: Iterable[str]) -> list[str]:
    """Methods in the paper's order, unknown ones after in name order."""
    present = set(methods)
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def _paper_methods(methods: Iterable[str]) -> list[str]:
    """`_ordered_methods` without the baselines (Tables I and II compare the paper's methods)."""
    return [m for m in _ordered_methods(methods) if m not in BASELINES]


def _check_attacks(df: pd.DataFrame, attacks: Sequence[str]) -> None:
    """Every (seed, method, arch) model must have a row for each attack a table needs."""
    if df.empty:
        raise ValueError("the metrics table is empty; run the evaluate and aggregate steps first")
    models = df[["seed", "method", "arch"]].drop_duplicates()
    have = set(map(tuple, df[["seed", "method", "arch", "attack"]].to_numpy().tolist()))
    missing = [
        (s, m, a, atk) for s, m, a in models.to_numpy().tolist() for atk in attacks if (s, m, a, atk) not in have
    ]
    if missing:
        raise ValueError(
            f"metrics missing for {len(missing)} (seed, method, arch, attack) combinations, e.g. {missing[:5]}; "
            "evaluate every model under every attack (or drop the attack from the config)"
        )


def _column_values(df: pd.DataFrame, column: Column) -> pd.DataFrame:
    """seed, method, arch, column, value: one column's value for every model."""
    rows = df[df["attack"] == column.attack]
    return rows[["seed", "method", "arch"]].assign(column=column.key, value=rows[column.metric] * column.scale)


def _group_cells(df: pd.DataFrame, columns: Sequence[Column], methods: Sequence[str], paper: Mapping) -> pd.DataFrame:
    """Per (group, method, column): mean and std over seeds of the per-seed group average."""
    values = pd.concat([_column_values(df, c) for c in columns], ignore_index=True)
    records = []
    for group in arch_groups(df["arch"].unique()):
        for method in methods:
            sub = values[(values["method"] == method) & values["arch"].isin(group.archs)]
            if sub.empty:
                continue
            coverage = sub.groupby("seed")["arch"].nunique()
            if (coverage < len(group.archs)).any():
                warnings.warn(
                    f"{method} lacks some of {list(group.archs)} for some seed; its '{group.name}' row is left out",
                    stacklevel=3,
                )
                continue
            per_seed = sub.groupby(["column", "seed"])["value"].mean()
            for c in columns:
                seeds = per_seed.loc[c.key]
                paper_value = paper.get(group.id, {}).get(method, {}).get(c.paper_key, np.nan)
                records.append(
                    {
                        "group_id": group.id,
                        "group": group.name,
                        "archs": ";".join(group.archs),
                        "method": method,
                        "column": c.key,
                        "mean": float(seeds.mean()),
                        "std": float(seeds.std(ddof=1)) if len(seeds) > 1 else np.nan,
                        "n_seeds": int(len(seeds)),
                        "paper": paper_value if group.complete and c.paper_key else np.nan,
                    }
                )
    cells = pd.DataFrame.from_records(records)
    if cells.empty:
        raise ValueError("no method covers all architectures of any group; nothing to tabulate")
    return cells


def _mark_best(cells: pd.DataFrame, decimals: int) -> pd.DataFrame:
    """Bold the best displayed AT-family value per (group, column); ties all bold; needs two candidates."""
    cells = cells.copy()
    shown = cells["mean"].round(decimals)
    at_family = cells["method"] != "std"
    cells["bold"] = False
    for _, idx in cells[at_family].groupby(["group_id", "column"]).groups.items():
        if len(idx) > 1:
            cells.loc[idx, "bold"] = shown.loc[idx] == shown.loc[idx].max()
    return cells


def _seeds_phrase(cells: pd.DataFrame) -> str:
    """How the cells were averaged over seeds, for captions."""
    n = sorted(cells["n_seeds"].unique())
    if n == [1]:
        return "one seed"
    return f"mean ± std over {'/'.join(map(str, n))} seeds"


def ordered_attacks(df: pd.DataFrame, attacks: Sequence[str] | None = None) -> list[str]:
    """Adversarial attack names for Table I: `attacks` as given, else the paper's order then the rest by name."""
    present = set(df["attack"]) - {"clean"}
    if attacks is None:
        return [a for a in TABLE1_ATTACKS if a in present] + sorted(present - set(TABLE1_ATTACKS))
    unknown = [a for a in attacks if a not in present]
    if unknown:
        raise ValueError(f"attacks {unknown} have no metrics; present: {sorted(present)}")
    return [a for a in attacks if a != "clean"]


def table1(df: pd.DataFrame, attacks: Sequence[str] | None = None) -> Table:
    """Table I: RAcc (%) under each attack and GAcc (%), the paper's methods, per architecture group."""
    order = ordered_attacks(df, attacks)
    columns = tuple(
        Column(f"racc_{a}", attack_label(a), a, "accuracy", 100.0, a if a in TABLE1_ATTACKS else None) for a in order
    ) + (
        Column("gacc", "GAcc", "clean", "accuracy", 100.0, "clean"),
    )
    _check_attacks(df, [c.attack for c in columns])
    cells = _mark_best(_group_cells(df, columns, _paper_methods(df["method"]), TABLE1), decimals=2)
    caption = (
        "Robust accuracy RAcc (%) under each test attack and generalisation accuracy GAcc (%) on the clean test "
        f"set, averaged over the architectures of each group ({_seeds_phrase(cells)}). Best value among AT "
        "methods (STD excluded) per column and group in bold."
    )
    return Table("table1", "Table I", caption, columns, 2, cells)


def table2(df: pd.DataFrame, confusion_attack: str) -> Table:
    """Table II, like with like: clean mAP, P, R, F1 (the paper's beside them) and mARP, P, R, F1, worst-class recall under attack.

    The paper's Table II puts precision, recall and F1 "under 20-PGD", but its values track clean
    accuracy; on a balanced test set macro recall under attack is RAcc. So both are shown: the
    paper's P/R/F1 beside our clean ones, and ours under `confusion_attack` beside them.
    """
    if confusion_attack not in set(df["attack"]):
        raise ValueError(f"confusion attack {confusion_attack!r} has no metrics; present: {sorted(set(df['attack']))}")
    same_as_paper = confusion_attack == TABLE2_ATTACK
    label = attack_label(confusion_attack)
    columns = (
        Column("map", "mAP", "clean", "map", 1.0, "map"),
        Column("precision_clean", "Precision (clean)", "clean", "precision", 1.0, "precision"),
        Column("recall_clean", "Recall (clean)", "clean", "recall", 1.0, "recall"),
        Column("f1_clean", "F1 (clean)", "clean", "f1", 1.0, "f1"),
        Column("marp", "mARP", confusion_attack, "map", 1.0, "marp" if same_as_paper else None),
        Column("precision", f"Precision ({label})", confusion_attack, "precision", 1.0, None),
        Column("recall", f"Recall ({label})", confusion_attack, "recall", 1.0, None),
        Column("f1", f"F1 ({label})", confusion_attack, "f1", 1.0, None),
        Column("worst_recall", f"Worst-class recall ({label})", confusion_attack, "worst_recall", 1.0, None),
    )
    _check_attacks(df, ["clean", confusion_attack])
    methods = [m for m in _paper_methods(df["method"]) if m != "std"]
    if not methods:
        raise ValueError("Table II lists AT-family methods only, and the metrics hold none besides STD")
    cells = _mark_best(_group_cells(df, columns, methods, TABLE2), decimals=4)
    caption = (
        f"mAP and macro precision, recall and F1 on the clean test set; mARP (mAP on adversarial data), macro "
        f"precision, recall, F1 and the lowest per-class recall under {label}; averaged over the architectures of "
        f"each group ({_seeds_phrase(cells)}). The paper's precision, recall and F1 (reported as under 20-PGD, "
        "but tracking clean accuracy) stand beside our clean ones. Best value per column and group in bold."
    )
    return Table("table2", "Table II", caption, columns, 4, cells)


def baselines_table(df: pd.DataFrame, attacks: Sequence[str] | None = None) -> Table:
    """Table I's columns for the paper's five methods and the baselines TRADES and MART side by side."""
    if not set(BASELINES) & set(df["method"]):
        raise ValueError(f"the metrics hold none of the baselines {list(BASELINES)}; add them to training.methods")
    order = ordered_attacks(df, attacks)
    columns = tuple(Column(f"racc_{a}", attack_label(a), a, "accuracy", 100.0, None) for a in order) + (
        Column("gacc", "GAcc", "clean", "accuracy", 100.0, None),
    )
    _check_attacks(df, [c.attack for c in columns])
    methods = [m for m in BASELINE_TABLE_METHODS if m in set(df["method"])]
    cells = _mark_best(_group_cells(df, columns, methods, {}), decimals=2)
    caption = (
        "The paper's methods beside the baselines TRADES (Zhang et al. 2019) and MART (Wang et al. 2020), "
        "trained with the same adversary, schedule and CNNs: RAcc (%) under each test attack and GAcc (%), "
        f"averaged over the architectures of each group ({_seeds_phrase(cells)}). Best value among AT methods "
        "(STD excluded) per column and group in bold."
    )
    return Table("baselines", "Baselines", caption, columns, 2, cells)


def gradcam_table(scores: pd.DataFrame) -> Table:
    """Grad-CAM localisation against the lesion masks: per-model means of the per-image scores, grouped like Table I."""
    needed = {"seed", "method", "arch", "energy_in_mask", "pointing_hit", "mask_fraction"}
    if scores.empty or not needed <= set(scores.columns):
        raise ValueError(
            f"Grad-CAM scores need rows with columns {sorted(needed)}; run the gradcam step on data with masks"
        )
    per_model = (
        scores.astype({"pointing_hit": float})
        .groupby(["seed", "method", "arch"], as_index=False)[["energy_in_mask", "pointing_hit", "mask_fraction"]]
        .mean()
        .assign(attack="clean")
    )
    columns = (
        Column("energy", "CAM energy in lesion (%)", "clean", "energy_in_mask", 100.0, None),
        Column("pointing", "Pointing game (%)", "clean", "pointing_hit", 100.0, None),
        Column("chance", "Lesion area (%)", "clean", "mask_fraction", 100.0, None),
    )
    cells = _mark_best(_group_cells(per_model, columns, _ordered_methods(per_model["method"]), {}), decimals=2)
    caption = (
        "Grad-CAM on correctly predicted test images: fraction of CAM energy inside the lesion mask, pointing-game "
        "hit rate (CAM maximum inside the lesion), and the lesion's share of the image (the chance level of both); "
        f"averaged over the architectures of each group ({_seeds_phrase(cells)})."
    )
    return Table("gradcam", "Grad-CAM localisation", caption, columns, 2, cells)


IntervalOf = Callable[[tuple[str, ...], str, Column], stats.Interval]


def add_intervals(table: Table, interval_of: IntervalOf, confidence: float = stats.CONFIDENCE) -> Table:
    """The table with each cell's interval (`low`, `high`): interval_of(archs of the cell's group, method, column)."""
    columns = {c.key: c for c in table.columns}
    bounds = [
        interval_of(tuple(row["archs"].split(";")), row["method"], columns[row["column"]])
        for _, row in table.cells.iterrows()
    ]
    cells = table.cells.assign(low=[b.low for b in bounds], high=[b.high for b in bounds])
    percent = f"{confidence:.0%}"
    caption = f"{table.caption} In brackets: {percent} bootstrap interval over test images (and seeds)."
    return replace(table, cells=cells, caption=caption)


def prediction_intervals(predictions, *, n_resamples: int, seed: int) -> IntervalOf:
    """Cell intervals of Tables I and II from per-image predictions (a `dpaat.claims.Predictions`)."""

    def interval_of(archs: tuple[str, ...], method: str, column: Column) -> stats.Interval:
        probs = predictions.probs(method, column.attack, archs)
        labels = predictions.labels(archs)
        return stats.cell_interval(column.metric, labels, probs, n_resamples=n_resamples, seed=seed, scale=column.scale)

    return interval_of


def gradcam_intervals(scores: pd.DataFrame, *, n_resamples: int, seed: int) -> IntervalOf:
    """Cell intervals of the Grad-CAM table: each arch's per-image scores resampled (mean over archs of image means)."""

    def interval_of(archs: tuple[str, ...], method: str, column: Column) -> stats.Interval:
        rows = scores[scores["method"] == method]
        groups = [rows.loc[rows["arch"] == a, column.metric].astype(float).to_numpy() for a in archs]
        return stats.mean_interval(groups, n_resamples=n_resamples, seed=seed, scale=column.scale)

    return interval_of


def to_csv(table: Table, paper_numbers: bool) -> str:
    """Machine-readable CSV: one row per (group, method), `<key>`, `<key>_std` [, `_low`, `_high`] [, `_paper`] per column."""
    index = ["group_id", "group", "archs", "method", "n_seeds"]
    intervals = "low" in table.cells.columns
    values = ["mean", "std", "paper"] + (["low", "high"] if intervals else [])
    wide = table.cells.pivot(index=index, columns="column", values=values)
    out = pd.DataFrame(index=wide.index)
    for c in table.columns:
        out[c.key] = wide[("mean", c.key)]
        out[f"{c.key}_std"] = wide[("std", c.key)]
        if intervals:
            out[f"{c.key}_low"] = wide[("low", c.key)]
            out[f"{c.key}_high"] = wide[("high", c.key)]
        if paper_numbers:
            out[f"{c.key}_paper"] = wide[("paper", c.key)]
    out = out.reset_index()
    # pivot sorts rows; restore the table's group and method order.
    order = table.cells[index].drop_duplicates().reset_index(drop=True).reset_index()
    return csv_text(out.merge(order, on=index).sort_values("index").drop(columns="index"))


def _cell_text(cell: pd.Series, decimals: int, paper_numbers: bool, pm: str) -> tuple[str, str]:
    """(our value, paper suffix) as display strings."""
    ours = f"{cell['mean']:.{decimals}f}"
    if cell["n_seeds"] > 1:
        ours += f"{pm}{cell['std']:.{decimals}f}"
    if "low" in cell.index and not np.isnan(cell["low"]):
        ours += f" [{cell['low']:.{decimals}f}, {cell['high']:.{decimals}f}]"
    paper = f" / {cell['paper']:.{decimals}f}" if paper_numbers and not np.isnan(cell["paper"]) else ""
    return ours, paper


def _rows(table: Table) -> Iterable[tuple[str, str, dict[str, pd.Series]]]:
    """(group name, method, {column key: cell}) in table order."""
    for (_, group, method), cells in table.cells.groupby(["group_id", "group", "method"], sort=False):
        yield group, method, {row["column"]: row for _, row in cells.iterrows()}


def _paper_note(table: Table, paper_numbers: bool) -> str:
    """Caption sentence explaining 'ours / paper' cells, when there are any."""
    if paper_numbers and table.cells["paper"].notna().any():
        return f" Cells with two values read ours / paper (Li et al., {table.title})."
    return ""


def to_markdown(table: Table, paper_numbers: bool) -> str:
    """Markdown table (bold as **...**) under a caption line."""
    rows, previous_group = [], None
    for group, method, cells in _rows(table):
        texts = []
        for c in table.columns:
            ours, paper = _cell_text(cells[c.key], table.decimals, paper_numbers, " ± ")
            texts.append((f"**{ours}**" if cells[c.key]["bold"] else ours) + paper)
        rows.append([group if group != previous_group else "", method_label(method), *texts])
        previous_group = group
    header = ["CNNs", "Method", *(c.label for c in table.columns)]
    align = [LEFT, LEFT] + [RIGHT] * len(table.columns)
    caption = f"**{table.title}.** {table.caption}{_paper_note(table, paper_numbers)}"
    return markdown(caption, "", markdown_table(header, align, rows))


def to_latex(table: Table, paper_numbers: bool) -> str:
    """A booktabs LaTeX table (\\textbf for the best values) with caption and label."""
    body, previous_group = [], None
    for group, method, cells in _rows(table):
        if group != previous_group:
            body += [r"\midrule", rf"\multicolumn{{{1 + len(table.columns)}}}{{l}}{{\textit{{{tex(group)}}}}} \\"]
            previous_group = group
        texts = []
        for c in table.columns:
            ours, paper = _cell_text(cells[c.key], table.decimals, paper_numbers, " ± ")
            texts.append((rf"\textbf{{{tex(ours)}}}" if cells[c.key]["bold"] else tex(ours)) + tex(paper))
        body.append(latex_row([tex(method_label(method)), *texts]))
    header = ["Method", *(tex(c.label) for c in table.columns)]
    caption = table.caption + _paper_note(table, paper_numbers)
    return latex_table(caption, table.name, "l" + "r" * len(table.columns), header, body)


_RENDERERS = {"csv": to_csv, "md": to_markdown, "tex": to_latex}


def write_tables(
    metrics_df: pd.DataFrame,
    out_paths: Mapping[str, str | os.PathLike],
    *,
    paper_numbers: bool,
    confusion_attack: str,
    attacks: Sequence[str] | None = None,
    interval_of: IntervalOf | None = None,
) -> None:
    """Write Tables I and II; `out_paths` maps keys like 'table1_csv' or 'table2_tex' (see OUT_KEYS) to files.

    With `interval_of` (e.g. `prediction_intervals`), every cell carries its interval.
    """
    unknown = sorted(set(out_paths) - set(OUT_KEYS))
    if unknown or not out_paths:
        raise ValueError(f"out_paths keys must be among {list(OUT_KEYS)}; got unknown {unknown or 'none at all'}")
    tables = {}
    if any(k.startswith("table1_") for k in out_paths):
        tables["table1"] = table1(metrics_df, attacks)
    if any(k.startswith("table2_") for k in out_paths):
        tables["table2"] = table2(metrics_df, confusion_attack)
    if interval_of is not None:
        tables = {name: add_intervals(table, interval_of) for name, table in tables.items()}
    for key, path in out_paths.items():
        name, fmt = key.split("_")
        write_table(tables[name], fmt, path, paper_numbers=paper_numbers)


def write_table(table: Table, fmt: str, path: str | os.PathLike, *, paper_numbers: bool = False) -> None:
    """Render `table` as csv, md or tex and write it atomically."""
    if fmt not in _RENDERERS:
        raise ValueError(f"unknown table format {fmt!r}; choose one of {sorted(_RENDERERS)}")
    write_text(_RENDERERS[fmt](table, paper_numbers), path)
