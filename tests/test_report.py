"""dpaat.report (Tables I and II) on hand-built metrics frames, and the paper's numbers against its text."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dpaat.paper_results import ARCH_LABELS, TABLE1, TABLE1_ATTACKS, TABLE2, TABLE2_COLUMNS, attack_label
from dpaat.report import OUT_KEYS, arch_groups, table1, table2, to_csv, to_latex, to_markdown, write_tables

REPO = Path(__file__).resolve().parents[1]
PAPER_TEXT = next(
    (p for p in (REPO / "paper" / "dpaat.txt", REPO.parent / "shared" / "paper" / "dpaat.txt") if p.exists()), None
)
LIGHT = ("mobilenet_v2", "shufflenet_v2_x1_0")

# Hand-built accuracies: ACC[attack][seed][method] = (mobilenet_v2, shufflenet_v2_x1_0).
ACC = {
    "pgd20": {
        0: {"std": (0.10, 0.20), "at": (0.50, 0.70), "dpaat": (0.60, 0.70)},
        1: {"std": (0.10, 0.20), "at": (0.60, 0.60), "dpaat": (0.70, 0.70)},
    },
    "clean": {
        0: {"std": (0.90, 0.80), "at": (0.70, 0.70), "dpaat": (0.72, 0.74)},
        1: {"std": (0.90, 0.90), "at": (0.70, 0.80), "dpaat": (0.74, 0.76)},
    },
}


def _row(seed: int, method: str, arch: str, attack: str, acc: float) -> dict:
    # Other metrics derived from accuracy so each Table II column has a known value.
    return {
        "method": method, "arch": arch, "seed": seed, "attack": attack, "n": 100, "accuracy": acc,
        "map": 0.9 * acc, "precision": acc, "recall": 0.8 * acc, "f1": 0.7 * acc,
        "balanced_accuracy": 0.8 * acc, "worst_recall": 0.6 * acc, "confusion": [[1, 0], [0, 1]], "classes": ["a", "b"],
    }  # fmt: skip


def _hand_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [
            _row(seed, method, arch, attack, acc)
            for attack, by_seed in ACC.items()
            for seed, by_method in by_seed.items()
            for method, accs in by_method.items()
            for arch, acc in zip(LIGHT, accs)
        ]
    )


def _six_arch_frame(methods=("std", "at", "sat", "amat", "dpaat"), attacks=TABLE1_ATTACKS) -> pd.DataFrame:
    return pd.DataFrame([_row(0, m, arch, atk, 0.5) for m in methods for arch in ARCH_LABELS for atk in attacks])


def _cell(table, group_id: str, method: str, column: str) -> pd.Series:
    c = table.cells
    (row,) = c.index[(c["group_id"] == group_id) & (c["method"] == method) & (c["column"] == column)]
    return c.loc[row]


def test_group_names_follow_the_archs_present() -> None:
    (only,) = arch_groups(LIGHT)  # "All" would repeat the lightweight group
    assert (only.id, only.name, only.complete) == ("lightweight", "Lightweight CNNs (MobileNetV2, ShuffleNetV2)", False)
    groups = arch_groups(["shufflenet_v2_x1_0", "resnet34", "mobilenet_v2"])
    assert [g.name for g in groups] == [
        "Widely used CNNs (ResNet34)",
        "Lightweight CNNs (MobileNetV2, ShuffleNetV2)",
        "All CNNs (ResNet34, MobileNetV2, ShuffleNetV2)",
    ]
    assert [g.name for g in arch_groups(ARCH_LABELS)] == [
        "Three widely used CNNs",
        "Three lightweight CNNs",
        "All six CNNs",
    ]
    assert all(g.complete for g in arch_groups(ARCH_LABELS))


def test_group_average_then_mean_and_std_over_seeds() -> None:
    t = table1(_hand_frame())
    # dpaat 20-PGD: per-seed arch means 0.65 and 0.70 -> 67.5 ± std(65, 70, ddof=1) = 3.5355.
    cell = _cell(t, "lightweight", "dpaat", "racc_pgd20")
    assert (cell["mean"], cell["std"], cell["n_seeds"]) == pytest.approx((67.5, np.sqrt(12.5), 2))
    # std GAcc: per-seed means 85 and 90.
    cell = _cell(t, "lightweight", "std", "gacc")
    assert (cell["mean"], cell["std"]) == pytest.approx((87.5, np.sqrt(12.5)))
    # at 20-PGD: 60 and 60.
    assert (_cell(t, "lightweight", "at", "racc_pgd20")[["mean", "std"]].tolist()) == pytest.approx([60.0, 0.0])
    assert [c.label for c in t.columns] == ["20-PGD", "GAcc"]


def test_table2_columns_come_from_the_right_attack() -> None:
    t = table2(_hand_frame(), "pgd20")
    # mAP is clean (0.9 · 0.74 for dpaat); mARP, precision, recall, F1 are under 20-PGD (dpaat 0.675).
    assert _cell(t, "lightweight", "dpaat", "map")["mean"] == pytest.approx(0.9 * 0.74)
    assert _cell(t, "lightweight", "dpaat", "marp")["mean"] == pytest.approx(0.9 * 0.675)
    assert _cell(t, "lightweight", "dpaat", "precision")["mean"] == pytest.approx(0.675)
    assert _cell(t, "lightweight", "dpaat", "recall")["mean"] == pytest.approx(0.8 * 0.675)
    assert _cell(t, "lightweight", "dpaat", "f1")["mean"] == pytest.approx(0.7 * 0.675)
    assert _cell(t, "lightweight", "dpaat", "worst_recall")["mean"] == pytest.approx(0.6 * 0.675)
    # Like with like: the same metrics on clean data (dpaat clean 0.74), where the paper's P/R/F1 sit.
    assert _cell(t, "lightweight", "dpaat", "precision_clean")["mean"] == pytest.approx(0.74)
    assert _cell(t, "lightweight", "dpaat", "f1_clean")["mean"] == pytest.approx(0.7 * 0.74)
    assert "std" not in set(t.cells["method"])  # AT-family rows only


def test_bold_marks_the_best_at_method_not_std() -> None:
    t = table1(_hand_frame())
    bold = t.cells[t.cells["bold"]][["method", "column"]].values.tolist()
    # STD has the highest GAcc (87.5) but is not an AT method; dpaat leads both columns.
    assert sorted(bold) == [["dpaat", "gacc"], ["dpaat", "racc_pgd20"]]


def test_ties_are_all_bold() -> None:
    df = pd.DataFrame([_row(0, m, "mobilenet_v2", atk, 0.6) for m in ("at", "sat") for atk in ("clean", "pgd20")])
    assert table1(df).cells["bold"].all()


def _check_markdown(md: str) -> list[list[str]]:
    rows = [line for line in md.splitlines() if line.startswith("|")]
    widths = {line.count("|") for line in rows}
    assert len(widths) == 1, f"rows with different cell counts: {widths}"
    assert re.fullmatch(r"\|( :?-+:? \|)+", rows[1])
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in rows[2:]]


def test_markdown_is_well_formed_with_bold_cells() -> None:
    md = to_markdown(table1(_hand_frame()), paper_numbers=True)
    assert md.startswith("**Table I.**")
    rows = _check_markdown(md)
    assert rows[0][:2] == ["Lightweight CNNs (MobileNetV2, ShuffleNetV2)", "STD"]
    dpaat = next(r for r in rows if r[1] == "DPAAT")
    assert dpaat[2:] == ["**67.50 ± 3.54**", "**74.00 ± 1.41**"]
    assert "/" not in md.split("\n", 1)[1]  # no paper numbers for a partial group


def _check_latex(tex: str) -> list[list[str]]:
    unescaped = re.sub(r"\\[{}]", "", tex)
    assert unescaped.count("{") == unescaped.count("}")
    for env in ("table", "tabular"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") == 1
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", r"\label{"))
    n_cols = len(re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1))
    body = tex.split(r"\toprule")[1].split(r"\bottomrule")[0]
    rows = []
    for line in body.strip().splitlines():
        if line.startswith(r"\midrule"):
            continue
        assert line.endswith(r"\\"), line
        if line.startswith(r"\multicolumn"):
            assert line.startswith(rf"\multicolumn{{{n_cols}}}")
            continue
        cells = re.split(r"(?<!\\)&", line[: -len(r"\\")])
        assert len(cells) == n_cols, line
        rows.append([c.strip() for c in cells])
    return rows


def test_latex_is_well_formed_booktabs_with_bold() -> None:
    tex = to_latex(table2(_hand_frame(), "pgd20"), paper_numbers=False)
    rows = _check_latex(tex)
    assert rows[0] == [
        "Method", "mAP", "Precision (clean)", "Recall (clean)", "F1 (clean)", "mARP",
        "Precision (20-PGD)", "Recall (20-PGD)", "F1 (20-PGD)", "Worst-class recall (20-PGD)",
    ]  # fmt: skip
    dpaat = next(r for r in rows if r[0] == "DPAAT")
    assert dpaat[1] == r"\textbf{0.6660 $\pm$ 0.0127}"
    latex1 = to_latex(table1(_hand_frame()), paper_numbers=False)
    _check_latex(latex1)
    assert r"(\%)" in latex1 and "%)" not in latex1.replace(r"\%)", "")


def test_paper_numbers_beside_ours_for_complete_groups() -> None:
    df = _six_arch_frame()
    t1 = table1(df)
    assert _cell(t1, "widely", "dpaat", "racc_pgd20")["paper"] == 65.46
    assert _cell(t1, "all", "std", "gacc")["paper"] == 73.96
    md = to_markdown(t1, paper_numbers=True)
    assert "**50.00** / 65.46" in md and "ours / paper" in md  # all tie at 50.00, so all bold
    _check_markdown(md)
    _check_latex(to_latex(t1, paper_numbers=True))
    csv = pd.read_csv(io.StringIO(to_csv(t1, paper_numbers=True)))
    row = csv[(csv["group_id"] == "lightweight") & (csv["method"] == "amat")].iloc[0]
    assert (row["racc_ifgsm10"], row["racc_ifgsm10_paper"]) == (50.0, 54.93)
    # Table II's adversarial columns are the paper's only under 20-PGD; mAP is clean either way.
    t2 = table2(df, "pgd50")
    assert _cell(t2, "all", "dpaat", "map")["paper"] == 0.8317
    assert np.isnan(_cell(t2, "all", "dpaat", "marp")["paper"])
    assert _cell(table2(df, "pgd20"), "all", "dpaat", "marp")["paper"] == 0.8150
    # The paper's precision, recall and F1 stand beside our clean ones, never beside the adversarial ones.
    assert _cell(t2, "all", "dpaat", "precision_clean")["paper"] == 0.7193
    assert np.isnan(_cell(table2(df, "pgd20"), "all", "dpaat", "precision")["paper"])


def test_csv_is_machine_readable(tmp_path) -> None:
    paths = {key: tmp_path / f"{key}.{key.split('_')[1]}" for key in OUT_KEYS}
    write_tables(_hand_frame(), paths, paper_numbers=True, confusion_attack="pgd20")
    assert all(p.stat().st_size > 0 for p in paths.values())
    csv = pd.read_csv(paths["table1_csv"])
    assert list(csv["method"]) == ["std", "at", "dpaat"]
    assert list(csv.columns[-3:]) == ["gacc", "gacc_std", "gacc_paper"]
    assert csv.loc[csv["method"] == "dpaat", "racc_pgd20"].item() == pytest.approx(67.5)
    assert pd.read_csv(paths["table2_csv"])["marp"].tolist() == pytest.approx([0.9 * 0.60, 0.9 * 0.675])


def test_write_tables_subset_and_bad_keys(tmp_path) -> None:
    write_tables(_hand_frame(), {"table2_md": tmp_path / "t2.md"}, paper_numbers=False, confusion_attack="pgd20")
    assert (tmp_path / "t2.md").read_text().startswith("**Table II.**")
    with pytest.raises(ValueError, match="out_paths keys must be among"):
        write_tables(_hand_frame(), {"table3_csv": tmp_path / "x"}, paper_numbers=False, confusion_attack="pgd20")


def test_missing_metrics_are_clear_errors() -> None:
    df = _hand_frame()
    incomplete = df.drop(index=df.index[(df["attack"] == "pgd20") & (df["method"] == "at") & (df["seed"] == 1)][:1])
    with pytest.raises(ValueError, match="metrics missing for 1"):
        table1(incomplete)
    with pytest.raises(ValueError, match="confusion attack 'pgd50' has no metrics"):
        table2(df, "pgd50")
    with pytest.raises(ValueError, match=r"attacks \['fgsm'\] have no metrics"):
        table1(df, attacks=["fgsm"])
    with pytest.raises(ValueError, match="empty"):
        table1(df.iloc[:0])


def test_method_missing_an_arch_is_left_out_of_that_group() -> None:
    df = _hand_frame()
    partial = df[~((df["method"] == "at") & (df["arch"] == "shufflenet_v2_x1_0"))]
    with pytest.warns(UserWarning, match="at lacks some of"):
        t = table1(partial)
    assert "at" not in set(t.cells["method"])


def _paper_rows(start: str, end: str) -> list[tuple[str, list[float]]]:
    text = PAPER_TEXT.read_text()
    block = text[text.index(start) :]
    block = block[: block.index(end)]
    return [
        (m, [float(v) for v in vals.split()])
        for m, vals in re.findall(r"\b(STD|AT|SAT|AMAT|DPAAT)((?: \d+\.\d+)+)", block)
    ]


@pytest.mark.skipif(PAPER_TEXT is None, reason="the paper's text (shared/paper/dpaat.txt) is not available")
def test_paper_numbers_match_the_paper_text() -> None:
    labels = {"STD": "std", "AT": "at", "SAT": "sat", "AMAT": "amat", "DPAAT": "dpaat"}
    groups = ("widely", "lightweight", "all")
    rows1 = _paper_rows("TABLE I:", "In this section")
    assert len(rows1) == 15
    for i, (label, values) in enumerate(rows1):
        assert [TABLE1[groups[i // 5]][labels[label]][a] for a in TABLE1_ATTACKS] == values
    rows2 = _paper_rows("TABLE II:", "Refer to caption")
    assert len(rows2) == 12
    for i, (label, values) in enumerate(rows2):
        assert [TABLE2[groups[i // 4]][labels[label]][c] for c in TABLE2_COLUMNS] == values


def test_attack_labels_follow_the_paper() -> None:
    assert [attack_label(a) for a in TABLE1_ATTACKS] == ["FGSM", "10-IFGSM", "20-IFGSM", "20-PGD", "50-PGD", "Clean"]
    assert attack_label("cw") == "CW"
