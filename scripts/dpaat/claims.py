"""A verdict on each claim of the paper, and the paired method comparisons behind it.

The claims are data (`claims.yaml` beside this module). Each expands into paired
comparisons of two *arms* (a method under an attack) on the same test images, archs
and seeds: the effect is the difference of the two table cells (archs averaged, then
seeds) with a paired bootstrap interval; the p-value is McNemar's exact test for
accuracy and a paired permutation test for mAP; all comparisons of all claims are one
family, Holm-corrected. A claim is

- supported when every comparison is significant in the claimed direction (for an
  equality claim: no difference is significant and every interval lies within the margin),
- contradicted when a comparison is significant the other way (equality: any difference
  is significant),
- inconclusive otherwise, and reported with the smallest difference the test could detect.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from dpaat import stats
from dpaat.io import write_text
from dpaat.paper_results import ALL_GROUP, ARCH_GROUPS, TABLE1, TABLE2, arch_label, attack_label, method_label

CLAIMS_FILE = Path(__file__).with_name("claims.yaml")
RELATIONS = ("greater", "equal")
VERDICTS = ("supported", "contradicted", "inconclusive", "not tested")
PAPER_TABLES = {"table1": TABLE1, "table2": TABLE2}
# The columns of the evaluate job's predictions files (dpaat.evaluation.PREDICTION_COLUMNS).
PREDICTION_COLUMNS: tuple[str, ...] = ("attack", "image_id", "label", "prediction", "logits")
# Percentage points for accuracy (as Table I), fractions for mAP (as Table II).
SCALE = {"accuracy": 100.0, "map": 1.0}


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: `relation` between arms (method, attack) on `metric`, in a CNN `group`."""

    id: str
    source: str
    statement: str
    relation: str
    metric: str
    group: str
    methods: tuple[str, ...]  # greater: subject first, then the others
    attacks: tuple[str, ...]  # greater: one attack; equal: the two attacks compared
    margin: float = 0.0
    paper: Mapping[str, str] | None = None
    ablation: bool = False  # tested on Fig. 3's models (the ablation's own schedule, when it has one)
    any_dataset: bool = False  # a method-against-method claim, tested on any dataset (not only HAM10000's)
    paper_dataset: bool = True  # false: the run is on another dataset, so the paper's numbers do not apply

    def arms(self) -> list[tuple[tuple[str, str], tuple[str, str]]]:
        """The paired comparisons (arm A, arm B), A the side the claim says is higher (or equal)."""
        if self.relation == "greater":
            subject, *others = self.methods
            return [((subject, self.attacks[0]), (other, self.attacks[0])) for other in others]
        return [((method, self.attacks[0]), (method, self.attacks[1])) for method in self.methods]


def load_claims(path: str | os.PathLike = CLAIMS_FILE) -> list[Claim]:
    """Parse and check the claims file."""
    entries = yaml.safe_load(Path(path).read_text())
    claims, seen = [], set()
    groups = {gid for gid, *_ in ARCH_GROUPS} | {ALL_GROUP[0]}
    for entry in entries:
        cid = entry.get("id")
        if not cid or cid in seen:
            raise ValueError(f"{path}: every claim needs a unique id, got {cid!r}")
        seen.add(cid)
        relation = entry.get("relation")
        if relation not in RELATIONS:
            raise ValueError(f"{path}: claim {cid} has relation {relation!r}; use one of {list(RELATIONS)}")
        if entry.get("metric") not in SCALE:
            raise ValueError(f"{path}: claim {cid} has metric {entry.get('metric')!r}; use one of {sorted(SCALE)}")
        if entry.get("group") not in groups:
            raise ValueError(f"{path}: claim {cid} has group {entry.get('group')!r}; use one of {sorted(groups)}")
        if relation == "greater":
            methods = (entry["subject"], *entry["others"])
            attacks = (entry["attack"],)
        else:
            methods = tuple(entry["methods"])
            attacks = tuple(entry["attacks"])
            if len(attacks) != 2:
                raise ValueError(f"{path}: equality claim {cid} compares exactly two attacks, got {list(attacks)}")
        paper = entry.get("paper")
        if paper is not None and paper.get("table") not in PAPER_TABLES:
            raise ValueError(f"{path}: claim {cid} cites paper table {paper.get('table')!r}; use table1 or table2")
        claims.append(
            Claim(
                id=cid,
                source=" ".join(str(entry["source"]).split()),
                statement=entry["statement"],
                relation=relation,
                metric=entry["metric"],
                group=entry["group"],
                methods=methods,
                attacks=attacks,
                margin=float(entry.get("margin", 0.0)),
                paper=paper,
                ablation=bool(entry.get("ablation", False)),
                any_dataset=bool(entry.get("any_dataset", False)),
            )
        )
    return claims


def for_dataset(claims: Sequence[Claim], paper_dataset: bool) -> list[Claim]:
    """The claims a run tests: all on HAM10000's three classes, else the `any_dataset` ones without paper numbers."""
    if paper_dataset:
        return list(claims)
    return [replace(c, paper=None, paper_dataset=False) for c in claims if c.any_dataset]


def paper_numbers(claim: Claim) -> dict[tuple[str, str], float]:
    """The paper's value of each arm (method, attack) of the claim, looked up in dpaat.paper_results."""
    if claim.paper is None:
        return {}
    table = PAPER_TABLES[claim.paper["table"]][claim.group]
    arms = {arm for pair in claim.arms() for arm in pair}
    # Table II keys its columns by metric (map, marp); Table I by attack.
    column = claim.paper.get("column")
    return {
        (m, a): table[m][column or a] for m, a in sorted(arms, key=lambda arm: (claim.methods.index(arm[0]), arm[1]))
    }


class Predictions:
    """Per-image softmax scores of every evaluated model, indexed by (seed, method, arch, attack)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        needed = {"seed", "method", "arch", "attack", "image_id", "label", "logits"}
        missing = needed - set(frame.columns)
        if missing:
            raise ValueError(f"predictions lack columns {sorted(missing)}")
        self._probs: dict[tuple[int, str, str, str], np.ndarray] = {}
        self._labels: dict[str, np.ndarray] = {}
        self._ids: dict[str, list[str]] = {}
        for (seed, method, arch, attack), rows in frame.groupby(["seed", "method", "arch", "attack"], sort=False):
            logits = np.stack(rows["logits"].to_numpy()).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            ids = rows["image_id"].tolist()
            if arch in self._ids and self._ids[arch] != ids:
                raise ValueError(f"predictions of {arch} cover different test images; rerun their evaluation")
            self._ids[arch] = ids
            self._labels[arch] = rows["label"].to_numpy(dtype=np.int64)
            self._probs[(int(seed), method, arch, attack)] = probs / probs.sum(axis=1, keepdims=True)
        self.seeds = sorted({k[0] for k in self._probs})

    @classmethod
    def read(cls, paths: Iterable[str | os.PathLike]) -> Predictions:
        """Load results/predictions/{seed}/{method}/{arch}.parquet files (identity from the path)."""
        frames = []
        for path in paths:
            seed, method, arch = Path(path).with_suffix("").parts[-3:]
            # Read here, not through dpaat.evaluation, so that the report jobs never import torch.
            frames.append(
                pd.read_parquet(path, columns=list(PREDICTION_COLUMNS)).assign(seed=int(seed), method=method, arch=arch)
            )
        if not frames:
            raise ValueError("no predictions files given")
        return cls(pd.concat(frames, ignore_index=True))

    def has(self, method: str, arch: str, attack: str) -> bool:
        """Whether every seed has predictions of this arm on this arch."""
        return all((s, method, arch, attack) in self._probs for s in self.seeds)

    def archs(self) -> list[str]:
        return list(self._ids)

    def labels(self, archs: Sequence[str]) -> np.ndarray:
        """Labels of the test images shared by `archs` (the same split at each arch's resolution)."""
        labels = self._labels[archs[0]]
        for arch in archs[1:]:
            if self._ids[arch] != self._ids[archs[0]] or not np.array_equal(self._labels[arch], labels):
                raise ValueError(
                    f"{arch} and {archs[0]} were evaluated on different test images; a group needs one test set"
                )
        return labels

    def probs(self, method: str, attack: str, archs: Sequence[str]) -> np.ndarray:
        """Scores (archs, seeds, images, classes) of one arm."""
        return np.stack([np.stack([self._probs[(s, method, a, attack)] for s in self.seeds]) for a in archs])


def group_archs(group: str, available: Iterable[str]) -> list[str]:
    """The archs of a paper group (all = every arch) among `available`, in the paper's order."""
    available = list(available)
    if group == ALL_GROUP[0]:
        order = [a for _, _, _, members in ARCH_GROUPS for a in members]
        return [a for a in order if a in available] + sorted(set(available) - set(order))
    (members,) = [m for gid, _, _, m in ARCH_GROUPS if gid == group]
    return [a for a in members if a in available]


@dataclass
class Comparison:
    """One paired comparison of arm A against arm B, with its statistics."""

    claim: str
    a: tuple[str, str]
    b: tuple[str, str]
    archs: tuple[str, ...]
    value_a: stats.Interval
    value_b: stats.Interval
    effect: stats.Interval
    pvalue: float
    mdd: float
    n: int
    p_holm: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)


def compare(
    preds: Predictions,
    metric: str,
    a: tuple[str, str],
    b: tuple[str, str],
    archs: Sequence[str],
    *,
    n_resamples: int,
    seed: int,
    claim: str = "",
    cells: dict[tuple[Any, ...], stats.Interval] | None = None,
) -> Comparison:
    """Arm A against arm B on `archs`: both cells, their difference (paired bootstrap) and the paired test.

    `cells` memoises each arm's interval across calls: a claim's subject meets every competitor.
    """
    labels = preds.labels(archs)
    pa, pb = preds.probs(*a, archs), preds.probs(*b, archs)
    scale = SCALE[metric]
    cells = {} if cells is None else cells

    def cell(arm: tuple[str, str], probs: np.ndarray) -> stats.Interval:
        key = (id(preds), metric, arm, tuple(archs))
        if key not in cells:
            cells[key] = stats.cell_interval(metric, labels, probs, n_resamples=n_resamples, seed=seed, scale=scale)
        return cells[key]

    value_a, value_b = cell(a, pa), cell(b, pb)
    diff = stats.difference_interval(metric, labels, pa, pb, n_resamples=n_resamples, seed=seed)
    effect = stats.Interval(diff.estimate * scale, diff.low * scale, diff.high * scale)
    n = pa.shape[0] * pa.shape[1] * pa.shape[2]
    extra: dict[str, Any] = {}
    if metric == "accuracy":
        test = stats.mcnemar_exact(pa.argmax(-1) == labels, pb.argmax(-1) == labels)
        pvalue = test.pvalue
        mdd = stats.minimum_detectable_difference(test.n, test.b + test.c) * scale
        extra = {"only_a": test.b, "only_b": test.c}
    else:
        pvalue = stats.permutation_pvalue(metric, labels, pa, pb, n_resamples=n_resamples, seed=seed)
        # No closed form for mAP: half the width of the difference's interval.
        mdd = (effect.high - effect.low) / 2
    return Comparison(claim, a, b, tuple(archs), value_a, value_b, effect, pvalue, mdd, n, extra=extra)


def _arm_text(arm: tuple[str, str], value: float, decimals: int) -> str:
    method, attack = arm
    return f"{method_label(method)} ({attack_label(attack)}) {value:.{decimals}f}"


def evaluate_claims(
    main: Predictions,
    claims: Sequence[Claim],
    *,
    n_resamples: int,
    seed: int,
    alpha: float = stats.ALPHA,
    ablation: Predictions | None = None,
) -> tuple[pd.DataFrame, list[Comparison]]:
    """Every claim's verdict (one row each) and the comparisons behind them, Holm-corrected as one family.

    Claims marked `ablation` are tested on `ablation` (Fig. 3's models trained under the
    ablation's own schedule) when given, else on the main models like the others.
    """
    plans, comparisons = [], []
    cells: dict[tuple[Any, ...], stats.Interval] = {}
    for claim in claims:
        preds = ablation if claim.ablation and ablation is not None else main
        archs = [
            arch
            for arch in group_archs(claim.group, preds.archs())
            if all(preds.has(m, arch, atk) for pair in claim.arms() for m, atk in pair)
        ]
        if not archs:
            arms = sorted({arm for pair in claim.arms() for arm in pair})
            missing = [f"{m} under {atk}" for m, atk in arms if not any(preds.has(m, a, atk) for a in preds.archs())]
            reason = f"this run lacks {', '.join(missing)}" if missing else "no CNN has every method of this claim"
            plans.append((claim, [], reason))
            continue
        mine = [
            compare(preds, claim.metric, a, b, archs, n_resamples=n_resamples, seed=seed, claim=claim.id, cells=cells)
            for a, b in claim.arms()
        ]
        comparisons += mine
        plans.append((claim, mine, ""))
    adjusted = stats.holm([c.pvalue for c in comparisons], alpha)
    for c, p in zip(comparisons, adjusted):
        c.p_holm = float(p)
    return pd.DataFrame([_verdict_row(claim, mine, reason, alpha) for claim, mine, reason in plans]), comparisons


def _verdict_row(claim: Claim, mine: list[Comparison], reason: str, alpha: float) -> dict[str, Any]:
    """One claims-table row: the claim, the paper's and our numbers, the deciding comparison and the verdict."""
    decimals = 2 if claim.metric == "accuracy" else 4
    paper = paper_numbers(claim)
    row: dict[str, Any] = {
        "id": claim.id,
        "statement": claim.statement,
        "source": claim.source,
        "metric": claim.metric,
        "relation": claim.relation,
        "paper": (
            "; ".join(_arm_text(arm, v, decimals) for arm, v in paper.items())
            if paper
            else "figure only" if claim.paper_dataset else "—"
        ),
    }
    if not mine:
        return {**row, "cnns": "", "ours": "", "versus": "", "effect": math.nan, "effect_low": math.nan,
                "effect_high": math.nan, "p_value": math.nan, "p_holm": math.nan, "mdd": math.nan, "n_pairs": 0,
                "verdict": "not tested", "reason": reason}  # fmt: skip
    values = {}
    for c in mine:
        values[c.a] = c.value_a.estimate
        values[c.b] = c.value_b.estimate
    significant = [c for c in mine if c.p_holm < alpha]
    if claim.relation == "greater":
        deciding = min(mine, key=lambda c: c.effect.estimate)  # the closest competitor
        if any(c.effect.estimate < 0 for c in significant):
            verdict, why = "contradicted", "a competitor is significantly higher"
        elif len(significant) == len(mine) and all(c.effect.estimate > 0 for c in mine):
            verdict, why = "supported", "significantly higher than every competitor"
        else:
            verdict, why = "inconclusive", "not every difference is significant"
    else:
        deciding = max(mine, key=lambda c: abs(c.effect.estimate))
        margin = claim.margin * SCALE[claim.metric]
        if significant:
            verdict, why = "contradicted", "a difference is significant"
        elif all(-margin <= c.effect.low and c.effect.high <= margin for c in mine):
            verdict, why = "supported", f"every 95 % interval lies within ±{margin:g}"
        else:
            verdict, why = "inconclusive", f"no significant difference, but an interval reaches beyond ±{margin:g}"
    return {
        **row,
        "cnns": ";".join(deciding.archs),
        "ours": "; ".join(_arm_text(arm, v, decimals) for arm, v in values.items()),
        "versus": f"{_arm_text(deciding.a, deciding.value_a.estimate, decimals)} vs "
        f"{_arm_text(deciding.b, deciding.value_b.estimate, decimals)}",
        "effect": deciding.effect.estimate,
        "effect_low": deciding.effect.low,
        "effect_high": deciding.effect.high,
        "p_value": deciding.pvalue,
        "p_holm": deciding.p_holm,
        "mdd": deciding.mdd,
        "n_pairs": deciding.n,
        "verdict": verdict,
        "reason": why,
    }


def claims_markdown(table: pd.DataFrame, n_images: int | None = None) -> str:
    """The claims table as Markdown: claim, paper, ours, effect [95 % CI], Holm p, detectable difference, verdict."""
    lines = [
        "**Claims of the paper and our verdicts.** Effect = the claimed-higher side minus the other "
        "(for several competitors: the closest one; for equality claims: the largest difference), in "
        "percentage points for accuracy and in mAP units for mAP, with its paired bootstrap 95 % interval; "
        "p = McNemar's exact test (accuracy) or a paired permutation test (mAP), Holm-corrected over all "
        "claims; 'detectable' = the smallest difference the test could call significant here.",
        "",
        "| Claim | Paper | Ours | Effect [95 % CI] | p (Holm) | Detectable | Verdict |",
        "| :-- | :-- | :-- | --: | --: | --: | :-- |",
    ]
    for _, r in table.iterrows():
        if r["verdict"] == "not tested":
            lines.append(
                f"| {r['statement']} (`{r['id']}`) | {r['paper']} | — | — | — | — | not tested: {r['reason']} |"
            )
            continue
        digits = 1 if r["metric"] == "accuracy" else 3
        cnns = ", ".join(arch_label(a) for a in str(r["cnns"]).split(";"))
        lines.append(
            f"| {r['statement']} (`{r['id']}`; {cnns}) | {r['paper']} | {r['versus']} | "
            f"{r['effect']:+.{digits}f} [{r['effect_low']:+.{digits}f}, {r['effect_high']:+.{digits}f}] | "
            f"{_p_text(r['p_holm'])} | {r['mdd']:.{digits}f} | **{r['verdict']}** ({r['reason']}) |"
        )
    return "\n".join(lines) + "\n"


def _p_text(p: float) -> str:
    return "—" if math.isnan(p) else f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def method_comparisons(
    preds: Predictions,
    attacks: Sequence[str],
    *,
    subject: str = "dpaat",
    others: Sequence[str] = ("at", "sat", "amat"),
    n_resamples: int,
    seed: int,
    alpha: float = stats.ALPHA,
) -> pd.DataFrame:
    """DPAAT against each other AT method per CNN and attack, and pooled over CNNs and seeds; Holm over all rows.

    McNemar's exact test on the images one method gets right and the other wrong.
    """
    rows = []
    archs = preds.archs()
    for attack in ["clean", *[a for a in attacks if a != "clean"]]:
        for other in others:
            usable = [a for a in archs if preds.has(subject, a, attack) and preds.has(other, a, attack)]
            scopes = [[a] for a in usable] + ([usable] if len(usable) > 1 else [])
            for scope in scopes:
                labels = preds.labels(scope)
                pa, pb = preds.probs(subject, attack, scope), preds.probs(other, attack, scope)
                test = stats.mcnemar_exact(pa.argmax(-1) == labels, pb.argmax(-1) == labels)
                diff = stats.difference_interval("accuracy", labels, pa, pb, n_resamples=n_resamples, seed=seed)
                rows.append(
                    {
                        "cnn": scope[0] if len(scope) == 1 else "pooled",
                        "attack": attack,
                        "method": subject,
                        "versus": other,
                        "n_pairs": test.n,
                        "only_method": test.b,
                        "only_versus": test.c,
                        "difference": 100 * diff.estimate,
                        "difference_low": 100 * diff.low,
                        "difference_high": 100 * diff.high,
                        "p_value": test.pvalue,
                    }
                )
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = stats.holm(table["p_value"].tolist(), alpha)
    return table


def comparisons_markdown(table: pd.DataFrame) -> str:
    """The paired method comparisons as Markdown."""
    lines = [
        "**Paired comparisons of DPAAT with the other AT methods.** Accuracy difference (percentage points, "
        "DPAAT minus the other) on the same test images with its paired bootstrap 95 % interval; b / c = images "
        "only DPAAT / only the other method gets right; McNemar's exact test, Holm-corrected over every row. "
        "'pooled' pools the pairs of every CNN and seed.",
        "",
        "| CNN | Attack | vs | b / c | Difference [95 % CI] | p | p (Holm) |",
        "| :-- | :-- | :-- | --: | --: | --: | --: |",
    ]
    for _, r in table.iterrows():
        cnn = "pooled" if r["cnn"] == "pooled" else arch_label(r["cnn"])
        lines.append(
            f"| {cnn} | {attack_label(r['attack'])} | {method_label(r['versus'])} | {r['only_method']} / {r['only_versus']} | "
            f"{r['difference']:+.1f} [{r['difference_low']:+.1f}, {r['difference_high']:+.1f}] | "
            f"{_p_text(r['p_value'])} | {_p_text(r['p_holm'])} |"
        )
    return "\n".join(lines) + "\n"


def write_claims(table: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike) -> None:
    """Write the claims table as CSV and Markdown, atomically."""
    write_text(table.to_csv(index=False, float_format="%.6g"), csv_path)
    write_text(claims_markdown(table), md_path)
