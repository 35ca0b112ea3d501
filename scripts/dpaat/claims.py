"""A verdict on each claim of the paper, and the paired method comparisons behind it.

The claims are data (`claims.yaml` beside this module). Each expands into paired
comparisons of two *arms* (a method under an attack) on the same test images, archs
and seeds; the test image is the unit of every test and interval (it is seen by every
CNN and seed, so those outcomes are not independent pairs). The trained networks are
fixed: the inference is conditional on them (seeds are not resampled). The effect is the
difference of the two table cells (archs averaged, then seeds) with, for accuracy, the
score interval of the per-image differences (`stats.score_interval`) and, for mAP, a paired
bootstrap interval over images.

- "X exceeds Y" (and "X is the highest of Y, Z, ..."): accuracy by the exact sign-flip test
  of the per-image differences summed over the claim's CNNs and seeds, mAP by the paired
  permutation test (an image's predictions swap in every CNN and seed at once). With every
  effect in the claimed direction the claim's p is the largest p of its comparisons (it needs
  all of them; an intersection-union test); otherwise it is the smallest p of a comparison
  going the other way times the number of comparisons (Bonferroni: it needs any one).
- "X and Y give the same": a two one-sided score test (TOST) of each comparison's difference
  within ±margin: supported when every (1 − 2α) score interval lies inside ±margin (p = the
  largest TOST p), contradicted when one (1 − α) interval lies entirely outside (twice the
  smaller one-sided p, times the comparisons: Bonferroni), inconclusive otherwise.

Every claim's p, directional or equality, is one family, Holm-corrected: supported /
contradicted when the Holm p is below α, inconclusive otherwise; the chance of any false
verdict in the table is at most α.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from dpaat import stats
from dpaat.corruptions import MEAN_CORRUPTION, parse_condition
from dpaat.io import write_text
from dpaat.paper_results import ALL_GROUP, ARCH_GROUPS, TABLE1, TABLE2, arch_label, attack_label, method_label

log = logging.getLogger(__name__)
CLAIMS_FILE = Path(__file__).with_name("claims.yaml")
# not_below: each of `methods` is at least `baseline` (with no margin, decided like greater:
# supported only when each is significantly above, contradicted when one is significantly below).
RELATIONS = ("greater", "equal", "not_below")
# Whose claim it is: the paper's, or ours (the baselines TRADES and MART, which the paper never ran).
ORIGINS = ("paper", "ours")
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
    methods: tuple[str, ...]  # greater: subject first, then the others; not_below: the methods, then the baseline
    attacks: tuple[str, ...]  # greater: one attack; equal: the two attacks compared
    margin: float = 0.0
    paper: Mapping[str, str] | None = None
    ablation: bool = False  # tested on Fig. 3's models (the ablation's own schedule, when it has one)
    origin: str = "paper"
    any_dataset: bool = False  # a method-against-method claim, tested on any dataset (not only HAM10000's)
    paper_dataset: bool = True  # false: the run is on another dataset, so the paper's numbers do not apply

    def arms(self) -> list[tuple[tuple[str, str], tuple[str, str]]]:
        """The paired comparisons (arm A, arm B), A the side the claim says is higher (or equal)."""
        if self.relation == "greater":
            subject, *others = self.methods
            return [((subject, self.attacks[0]), (other, self.attacks[0])) for other in others]
        if self.relation == "not_below":
            *methods, baseline = self.methods
            return [((method, self.attacks[0]), (baseline, self.attacks[0])) for method in methods]
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
        elif relation == "not_below":
            methods = (*entry["methods"], entry["baseline"])
            attacks = (entry["attack"],)
        else:
            methods = tuple(entry["methods"])
            attacks = tuple(entry["attacks"])
            if len(attacks) != 2:
                raise ValueError(f"{path}: equality claim {cid} compares exactly two attacks, got {list(attacks)}")
            if entry["metric"] != "accuracy" or not float(entry.get("margin", 0.0)) > 0:
                raise ValueError(
                    f"{path}: equality claim {cid} needs metric accuracy and a positive margin (TOST on per-image "
                    f"differences), got metric {entry['metric']!r}, margin {entry.get('margin')!r}"
                )
        origin = entry.get("origin", "paper")
        if origin not in ORIGINS:
            raise ValueError(f"{path}: claim {cid} has origin {origin!r}; use one of {list(ORIGINS)}")
        paper = entry.get("paper")
        if origin == "ours" and paper is not None:
            raise ValueError(f"{path}: claim {cid} is ours, so the paper has no numbers for it; set paper: null")
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
                origin=origin,
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

    def corruptions(self) -> list[str]:
        """The corrupted test sets ('<corruption>@<severity>') the predictions hold, in their order."""
        return list(dict.fromkeys(k[3] for k in self._probs if parse_condition(k[3]) is not None))

    def has(self, method: str, arch: str, attack: str) -> bool:
        """Whether every seed has predictions of this arm on this arch (for MEAN_CORRUPTION: under every corruption)."""
        if attack == MEAN_CORRUPTION:
            conditions = self.corruptions()
            return bool(conditions) and all(self.has(method, arch, c) for c in conditions)
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
        """Scores (archs, seeds, images, classes) of one arm.

        MEAN_CORRUPTION stacks every corrupted test set of each arch along the first axis, so
        that a cell (its mean over that axis) is the mean corruption accuracy and a paired test
        sums each image's differences over CNNs, seeds and corruptions.
        """
        if attack == MEAN_CORRUPTION:
            return np.concatenate([self.probs(method, c, archs) for c in self.corruptions()])
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
    """One paired comparison of arm A against arm B, with its statistics (effects in table units)."""

    claim: str
    a: tuple[str, str]
    b: tuple[str, str]
    archs: tuple[str, ...]
    value_a: stats.Interval
    value_b: stats.Interval
    effect: stats.Interval  # 95 % (directional) or 1 − 2α (equality) interval over images
    interval: str  # how the interval was made: score (accuracy), BCa or percentile (mAP)
    test: str
    pvalue: float  # two-sided directional p; equality: the TOST p
    n_images: int
    n_discordant: int | None  # images with a non-zero paired difference (accuracy)
    detectable_at: Callable[[float], float]  # smallest effect the test calls significant at a threshold
    p_different: float = math.nan  # equality: p of |difference| > margin


def compare(
    preds: Predictions,
    metric: str,
    a: tuple[str, str],
    b: tuple[str, str],
    archs: Sequence[str],
    *,
    n_resamples: int,
    n_permutations: int,
    seed: int,
    claim: str = "",
    margin: float | None = None,
    alpha: float = stats.ALPHA,
    cells: dict[tuple[Any, ...], stats.Interval] | None = None,
) -> Comparison:
    """Arm A against arm B on `archs`: both cells, their difference over images and the paired test.

    `margin` (a fraction) makes it an equivalence comparison (TOST, accuracy only).
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

    def scaled(interval: stats.Interval) -> stats.Interval:
        return stats.Interval(interval.estimate * scale, interval.low * scale, interval.high * scale, interval.method)

    value_a, value_b = cell(a, pa), cell(b, pb)
    common = dict(claim=claim, a=a, b=b, archs=tuple(archs), value_a=value_a, value_b=value_b, n_images=pa.shape[2])
    if metric != "accuracy":
        test = stats.permutation_test(metric, labels, pa, pb, n_resamples=n_permutations, seed=seed)
        diff = stats.difference_interval(
            metric, labels, pa, pb, n_resamples=n_resamples, seed=seed, resample_seeds=False
        )
        return Comparison(**common, effect=scaled(diff), interval=diff.method, test=f"permutation ({n_permutations})",
                          pvalue=test.pvalue,
                          n_discordant=None, detectable_at=lambda t: scale * test.detectable(t))  # fmt: skip
    flip = stats.sign_flip(pa.argmax(-1) == labels, pb.argmax(-1) == labels)
    detectable = lambda t: scale * flip.detectable(t)  # noqa: E731
    if margin is not None:
        tost = stats.equivalence_test(flip, margin, alpha=alpha)
        return Comparison(**common, effect=scaled(tost.interval), interval=tost.interval.method, test="TOST (score)",
                          pvalue=tost.p_equivalent, n_discordant=flip.discordant, detectable_at=detectable,
                          p_different=tost.p_different)  # fmt: skip
    diff = stats.score_interval(flip)
    return Comparison(**common, effect=scaled(diff), interval=diff.method, test="sign-flip (exact)", pvalue=flip.pvalue,
                      n_discordant=flip.discordant, detectable_at=detectable)  # fmt: skip


@dataclass
class Decision:
    """How a claim's comparisons combine: the claim's p, the comparison that decides it, and the direction."""

    claim: Claim
    comparisons: list[Comparison]
    deciding: Comparison
    p: float  # the claim's p before Holm
    direction: str  # the verdict a small p gives: supported or contradicted
    factor: int  # Bonferroni factor on the deciding comparison's p (1 when the claim needs every comparison)
    p_holm: float = math.nan
    threshold: float = math.nan  # the level the deciding comparison's own p must beat


def decide(claim: Claim, mine: list[Comparison], alpha: float = stats.ALPHA) -> Decision:
    """The claim's p and deciding comparison (see the module docstring for the rule)."""
    k = len(mine)
    if claim.relation == "equal":
        weakest = max(mine, key=lambda c: c.pvalue)
        if weakest.pvalue < alpha:
            return Decision(claim, mine, weakest, weakest.pvalue, "supported", 1)
        strongest = min(mine, key=lambda c: c.p_different)
        p_diff = min(1.0, k * strongest.p_different)
        if p_diff < alpha:
            return Decision(claim, mine, strongest, p_diff, "contradicted", k)
        return Decision(claim, mine, weakest, weakest.pvalue, "supported", 1)
    against = [c for c in mine if not c.effect.estimate > 0]
    if not against:
        weakest = max(mine, key=lambda c: c.pvalue)
        return Decision(claim, mine, weakest, weakest.pvalue, "supported", 1)
    strongest = min(against, key=lambda c: c.pvalue)
    return Decision(claim, mine, strongest, min(1.0, k * strongest.pvalue), "contradicted", k)


def evaluate_claims(
    main: Predictions,
    claims: Sequence[Claim],
    *,
    n_resamples: int,
    seed: int,
    n_permutations: int = stats.PERMUTATIONS,
    alpha: float = stats.ALPHA,
    ablation: Predictions | None = None,
) -> tuple[pd.DataFrame, list[Decision]]:
    """Every claim's verdict (one row each) and the decisions behind them; directional claims Holm-corrected.

    Claims marked `ablation` are tested on `ablation` (Fig. 3's models trained under the
    ablation's own schedule) when given, else on the main models like the others.
    """
    plans: list[tuple[Claim, Decision | None, str]] = []
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
            plans.append((claim, None, reason))
            continue
        margin = claim.margin if claim.relation == "equal" else None
        mine = [
            compare(preds, claim.metric, a, b, archs, n_resamples=n_resamples, n_permutations=n_permutations,
                    seed=seed, claim=claim.id, margin=margin, alpha=alpha, cells=cells)
            for a, b in claim.arms()
        ]  # fmt: skip
        plans.append((claim, decide(claim, mine, alpha), ""))
    decisions = [d for _, d, _ in plans if d is not None]
    family = decisions
    for d, p_holm in zip(family, stats.holm([d.p for d in family], alpha)):
        d.p_holm = float(p_holm)
    # Holm's threshold at each claim's rank: α / (K − rank + 1); the deciding comparison's own p
    # must also beat the claim's Bonferroni factor.
    for rank, i in enumerate(np.argsort([d.p for d in family], kind="stable")):
        family[i].threshold = alpha / (len(family) - rank) / family[i].factor
    _warn_of_floors(decisions, n_permutations, alpha)
    rows = [_verdict_row(claim, d, reason, alpha) for claim, d, reason in plans]
    return pd.DataFrame(rows), decisions


def _warn_of_floors(decisions: Sequence[Decision], n_permutations: int, alpha: float) -> None:
    """Log a warning where a resampled p cannot fall far (10x) below the strictest level its claim may face."""
    family = len(decisions)
    floor = 2 / (n_permutations + 1)
    for d in decisions:
        strictest = alpha / family / len(d.comparisons)
        if any(c.test.startswith("permutation") for c in d.comparisons) and floor > strictest / 10:
            log.warning(
                "%s: the smallest p of the permutation test (%.2g) is not far below the level %.2g it may face "
                "(Holm over %d claims, %d comparisons); raise report.permutation_resamples",
                d.claim.id, floor, strictest, family, len(d.comparisons),
            )  # fmt: skip


def _arm_text(arm: tuple[str, str], value: float, decimals: int) -> str:
    method, attack = arm
    return f"{method_label(method)} ({attack_label(attack)}) {value:.{decimals}f}"


def _verdict_row(claim: Claim, decision: Decision | None, reason: str, alpha: float) -> dict[str, Any]:
    """One claims-table row: the claim, the paper's and our numbers, the deciding comparison and the verdict."""
    decimals = 2 if claim.metric == "accuracy" else 4
    paper = paper_numbers(claim)
    paper_text = "; ".join(_arm_text(arm, v, decimals) for arm, v in paper.items())
    if not paper:
        paper_text = "ours, not the paper's" if claim.origin == "ours" else "figure only" if claim.paper_dataset else "—"
    row: dict[str, Any] = {
        "id": claim.id,
        "statement": claim.statement,
        "source": claim.source,
        "metric": claim.metric,
        "relation": claim.relation,
        "origin": claim.origin,
        "paper": paper_text,
    }
    if decision is None:
        return {**row, "cnns": "", "ours": "", "versus": "", "effect": math.nan, "effect_low": math.nan,
                "effect_high": math.nan, "ci_level": math.nan, "interval": "", "test": "", "p_value": math.nan,
                "p_claim": math.nan, "p_holm": math.nan, "threshold": math.nan, "mdd": math.nan, "n_images": 0,
                "n_discordant": math.nan, "verdict": "not tested", "reason": reason}  # fmt: skip
    c = decision.deciding
    values = {}
    for comp in decision.comparisons:
        values[comp.a] = comp.value_a.estimate
        values[comp.b] = comp.value_b.estimate
    scale = SCALE[claim.metric]
    unit = " points" if claim.metric == "accuracy" else ""
    other = f"{method_label(c.b[0])} ({attack_label(c.b[1])})"
    if claim.relation == "equal":
        p_decisive, level = decision.p_holm, 1 - 2 * alpha
        margin = claim.margin * scale
        within = f"±{margin:g}{' point' if margin == 1 else unit}"
        # For an equality claim, "detectable" is the narrowest margin every interval fits inside.
        mdd = max(max(abs(x.effect.low), abs(x.effect.high)) for x in decision.comparisons)
        arm = f"{method_label(c.a[0])}'s {_percent(level)} interval"
        if p_decisive < alpha and decision.direction == "supported":
            verdict = "supported"
            why = (f"every {_percent(level)} interval lies inside {within} "
                   f"(TOST p {_p_text(c.pvalue)}, Holm {_p_text(p_decisive)})")  # fmt: skip
        elif p_decisive < alpha:
            verdict = "contradicted"
            why = (f"{method_label(c.a[0])}'s {_percent(1 - alpha)} interval lies outside {within} "
                   f"(p {_p_text(c.p_different)} × {decision.factor}, Holm {_p_text(p_decisive)})")  # fmt: skip
        else:
            verdict = "inconclusive"
            why = (f"{arm} reaches beyond {within} (TOST p {_p_text(c.pvalue)}, Holm {_p_text(p_decisive)}); "
                   f"every interval fits within ±{mdd:.{1 if scale > 1 else 3}f}{unit}")  # fmt: skip
    else:
        p_decisive, level = decision.p_holm, stats.CONFIDENCE
        mdd = c.detectable_at(decision.threshold)
        raw = f"p {_p_text(c.pvalue)}" + (f" × {decision.factor}" if decision.factor > 1 else "")
        if p_decisive < alpha and decision.direction == "supported":
            verdict = "supported"
            above = f"each significantly above {other}" if claim.relation == "not_below" else "significantly above every competitor"
            why = f"{above} ({'largest ' if len(decision.comparisons) > 1 else ''}{raw}, Holm {_p_text(p_decisive)})"
        elif p_decisive < alpha:
            verdict, why = "contradicted", f"{other} is significantly higher ({raw}, Holm {_p_text(p_decisive)})"
        else:
            verdict = "inconclusive"
            vs = f"vs {other}: " if len(decision.comparisons) > 1 else ""
            why = f"{vs}{raw}, Holm {_p_text(p_decisive)} ≥ {alpha:g}"
    return {
        **row,
        "cnns": ";".join(c.archs),
        "ours": "; ".join(_arm_text(arm, v, decimals) for arm, v in values.items()),
        "versus": f"{_arm_text(c.a, c.value_a.estimate, decimals)} vs {_arm_text(c.b, c.value_b.estimate, decimals)}",
        "effect": c.effect.estimate,
        "effect_low": c.effect.low,
        "effect_high": c.effect.high,
        "ci_level": level,
        "interval": c.interval,
        "test": c.test,
        "p_value": c.p_different if verdict == "contradicted" and claim.relation == "equal" else c.pvalue,
        "p_claim": decision.p,
        "p_holm": decision.p_holm,
        "threshold": decision.threshold,
        "mdd": mdd,
        "n_images": c.n_images,
        "n_discordant": math.nan if c.n_discordant is None else c.n_discordant,
        "verdict": verdict,
        "reason": why,
    }


def claims_markdown(table: pd.DataFrame, alpha: float = stats.ALPHA) -> str:
    """The claims table as Markdown, its caption stating the tests, the unit, the families and the levels."""
    lines = [
        "**Claims of the paper and our verdicts.** The unit of every test and interval is the test image "
        "(its outcomes under each CNN and seed are averaged, not counted as independent pairs); the trained "
        "networks are fixed, so the inference is *conditional on them* (seeds are not resampled). Effect = the "
        "claimed-higher side minus the other, in percentage points for accuracy and mAP units for mAP; the row "
        "shows the comparison that decides the verdict. *Directional claims* (X exceeds Y, X is the highest; "
        "X is not below Y, with no margin decided the same way: supported only when significantly above): "
        "accuracy by the exact sign-flip test of the per-image differences, mAP by a paired permutation test "
        "(an image's predictions swap in every CNN and seed; the count in the Test column); a claim's p is the "
        "largest p of the comparisons it needs (all in the claimed direction), or the smallest p going the "
        "other way times the number of comparisons. Their intervals are 95 % intervals *unadjusted* for "
        "multiplicity (accuracy: the score interval of the per-image differences, Tango's for paired "
        "proportions, at every count of discordant images; mAP: paired bootstrap, BCa or, where BCa is "
        "undefined, percentile), so one may exclude 0 while the Holm p is not significant. *Equality claims*: "
        "two one-sided score tests (TOST), p = the largest TOST p; supported when every "
        f"{_percent(1 - 2 * alpha)} interval (shown) lies inside ±margin, contradicted when a {_percent(1 - alpha)} "
        "interval lies entirely outside it (twice the smaller one-sided p, times the comparisons). Every claim's "
        "p, directional and equality, is Holm-adjusted over one family (p → Holm), significant below "
        f"α = {alpha:g}: "
        "the chance of any false verdict in the table is at most α. 'Detectable' = the smallest difference the "
        "same test would call significant at the threshold the claim faces (its rank's Holm α / (K − rank + 1), "
        "divided by the claim's Bonferroni factor when a comparison going the other way decides it); for an "
        "equality claim, the narrowest margin every interval fits in.",
        "",
        "| Claim | Paper | Ours | Effect [interval] | Test | p | Detectable | Verdict |",
        "| :-- | :-- | :-- | --: | :-- | --: | --: | :-- |",
    ]
    for _, r in table.iterrows():
        if r["verdict"] == "not tested":
            lines.append(
                f"| {r['statement']} (`{r['id']}`) | {r['paper']} | — | — | — | — | — | not tested: {r['reason']} |"
            )
            continue
        digits = 1 if r["metric"] == "accuracy" else 3
        cnns = ", ".join(arch_label(a) for a in str(r["cnns"]).split(";"))
        tost = " (TOST)" if r["relation"] == "equal" and r["verdict"] != "contradicted" else ""
        p = f"{_p_text(r['p_claim'])}{tost} → Holm {_p_text(r['p_holm'])}"
        lines.append(
            f"| {r['statement']} (`{r['id']}`; {cnns}) | {r['paper']} | {r['versus']} | "
            f"{r['effect']:+.{digits}f} [{r['effect_low']:+.{digits}f}, {r['effect_high']:+.{digits}f}] "
            f"({_percent(r['ci_level'])}, {r['interval']}) | {r['test']}, {int(r['n_images'])} images | {p} | "
            f"{r['mdd']:.{digits}f} | **{r['verdict']}** ({r['reason']}) |"
        )
    return "\n".join(lines) + "\n"


def _percent(level: float) -> str:
    return f"{100 * level:.0f} %"


def _p_text(p: float) -> str:
    return "—" if math.isnan(p) else f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def method_comparisons(
    preds: Predictions,
    attacks: Sequence[str],
    *,
    subject: str = "dpaat",
    others: Sequence[str] = ("at", "sat", "amat"),
    alpha: float = stats.ALPHA,
) -> pd.DataFrame:
    """DPAAT against each other AT method per CNN, seed and attack, and pooled over CNNs and seeds; Holm over all rows.

    Per CNN and seed, McNemar's exact test on the images one method gets right and the other
    wrong (independent pairs); pooled, the image-clustered exact sign-flip test (an image is seen
    by every CNN and seed).
    """
    rows = []
    archs = preds.archs()
    for attack in ["clean", *[a for a in attacks if a != "clean"]]:
        for other in others:
            usable = [a for a in archs if preds.has(subject, a, attack) and preds.has(other, a, attack)]
            if not usable:
                continue
            labels = preds.labels(usable)
            pa, pb = preds.probs(subject, attack, usable), preds.probs(other, attack, usable)
            scopes = [([i], [j]) for i in range(len(usable)) for j in range(len(preds.seeds))]
            scopes += [(list(range(len(usable))), list(range(len(preds.seeds))))] if len(scopes) > 1 else []
            for arch_idx, seed_idx in scopes:
                sa, sb = pa[np.ix_(arch_idx, seed_idx)], pb[np.ix_(arch_idx, seed_idx)]
                flip = stats.sign_flip(sa.argmax(-1) == labels, sb.argmax(-1) == labels)
                diff = stats.score_interval(flip)
                pooled = len(arch_idx) * len(seed_idx) > 1
                if pooled:
                    test, p_value = "sign-flip (exact)", flip.pvalue
                else:
                    test, p_value = (
                        "McNemar (exact)",
                        stats.mcnemar_exact(sa.argmax(-1) == labels, sb.argmax(-1) == labels).pvalue,
                    )
                rows.append(
                    {
                        "cnn": "pooled" if pooled else usable[arch_idx[0]],
                        "seed": "all" if pooled else str(preds.seeds[seed_idx[0]]),
                        "attack": attack,
                        "method": subject,
                        "versus": other,
                        "test": test,
                        "n_images": flip.n_images,
                        "n_pairs": flip.n_images * flip.pairs,
                        "only_method": flip.positive,
                        "only_versus": flip.negative,
                        "difference": 100 * diff.estimate,
                        "difference_low": 100 * diff.low,
                        "difference_high": 100 * diff.high,
                        "p_value": p_value,
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
        "DPAAT minus the other) on the same test images with its 95 % score interval of the per-image differences "
        "(unadjusted; Tango's for paired proportions, at every count of discordant images). Per CNN and seed: "
        "b / c = images only DPAAT / only the other method gets right, McNemar's exact test. 'pooled' over every "
        "CNN and seed: the image is the unit (its outcomes are not independent across "
        "CNNs and seeds), b / c = images DPAAT gets right more / less often, the exact sign-flip test of the "
        "per-image differences. Holm-corrected over every row at α = 0.05.",
        "",
        "| CNN | Seed | Attack | vs | Test | b / c | Difference [95 % CI] | p | p (Holm) |",
        "| :-- | :-- | :-- | :-- | :-- | --: | --: | --: | --: |",
    ]
    for _, r in table.iterrows():
        cnn = "pooled" if r["cnn"] == "pooled" else arch_label(r["cnn"])
        lines.append(
            f"| {cnn} | {r['seed']} | {attack_label(r['attack'])} | {method_label(r['versus'])} | {r['test']} | "
            f"{r['only_method']} / {r['only_versus']} | "
            f"{r['difference']:+.1f} [{r['difference_low']:+.1f}, {r['difference_high']:+.1f}] | "
            f"{_p_text(r['p_value'])} | {_p_text(r['p_holm'])} |"
        )
    return "\n".join(lines) + "\n"


def write_claims(table: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike) -> None:
    """Write the claims table as CSV and Markdown, atomically."""
    write_text(table.to_csv(index=False, float_format="%.6g"), csv_path)
    write_text(claims_markdown(table), md_path)
