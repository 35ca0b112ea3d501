"""A verdict on each claim of the paper (`dpaat.claims`) from the paired comparisons behind it.

The test image is the unit of every test and interval (it is seen by every
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dpaat import stats
from dpaat.claims import SCALE, Claim, group_archs, paper_numbers
from dpaat.io import write_text
from dpaat.paper_results import arch_label, attack_label, method_label
from dpaat.prediction_store import Predictions
from dpaat.tables import LEFT, RIGHT, csv_text, markdown, markdown_table, p_text, percent

log = logging.getLogger(__name__)
VERDICTS = ("supported", "contradicted", "inconclusive", "not tested")


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
    # Every tested claim, directional and equality, is one Holm family.
    decisions = [d for _, d, _ in plans if d is not None]
    for d, p_holm in zip(decisions, stats.holm([d.p for d in decisions], alpha)):
        d.p_holm = float(p_holm)
    # Holm's threshold at each claim's rank: α / (K − rank + 1); the deciding comparison's own p
    # must also beat the claim's Bonferroni factor.
    for rank, i in enumerate(np.argsort([d.p for d in decisions], kind="stable")):
        decisions[i].threshold = alpha / (len(decisions) - rank) / decisions[i].factor
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


def _equality_verdict(claim: Claim, decision: Decision, alpha: float) -> tuple[str, str, float, float]:
    """(verdict, reason, confidence level, detectable) of an equality claim (TOST, Holm over the family)."""
    c, scale, p_holm = decision.deciding, SCALE[claim.metric], decision.p_holm
    unit = " points" if claim.metric == "accuracy" else ""
    level = 1 - 2 * alpha
    margin = claim.margin * scale
    within = f"±{margin:g}{' point' if margin == 1 else unit}"
    # For an equality claim, "detectable" is the narrowest margin every interval fits inside.
    mdd = max(max(abs(x.effect.low), abs(x.effect.high)) for x in decision.comparisons)
    arm = f"{method_label(c.a[0])}'s {percent(level)} interval"
    if p_holm < alpha and decision.direction == "supported":
        why = (f"every {percent(level)} interval lies inside {within} "
               f"(TOST p {p_text(c.pvalue)}, Holm {p_text(p_holm)})")  # fmt: skip
        return "supported", why, level, mdd
    if p_holm < alpha:
        why = (f"{method_label(c.a[0])}'s {percent(1 - alpha)} interval lies outside {within} "
               f"(p {p_text(c.p_different)} × {decision.factor}, Holm {p_text(p_holm)})")  # fmt: skip
        return "contradicted", why, level, mdd
    why = (f"{arm} reaches beyond {within} (TOST p {p_text(c.pvalue)}, Holm {p_text(p_holm)}); "
           f"every interval fits within ±{mdd:.{1 if scale > 1 else 3}f}{unit}")  # fmt: skip
    return "inconclusive", why, level, mdd


def _directional_verdict(claim: Claim, decision: Decision, alpha: float) -> tuple[str, str, float, float]:
    """(verdict, reason, confidence level, detectable) of a directional claim (Holm over the family)."""
    c, p_holm = decision.deciding, decision.p_holm
    other = f"{method_label(c.b[0])} ({attack_label(c.b[1])})"
    mdd = c.detectable_at(decision.threshold)
    raw = f"p {p_text(c.pvalue)}" + (f" × {decision.factor}" if decision.factor > 1 else "")
    if p_holm < alpha and decision.direction == "supported":
        above = f"each significantly above {other}" if claim.relation == "not_below" else "significantly above every competitor"
        largest = "largest " if len(decision.comparisons) > 1 else ""
        return "supported", f"{above} ({largest}{raw}, Holm {p_text(p_holm)})", stats.CONFIDENCE, mdd
    if p_holm < alpha:
        return "contradicted", f"{other} is significantly higher ({raw}, Holm {p_text(p_holm)})", stats.CONFIDENCE, mdd
    vs = f"vs {other}: " if len(decision.comparisons) > 1 else ""
    return "inconclusive", f"{vs}{raw}, Holm {p_text(p_holm)} ≥ {alpha:g}", stats.CONFIDENCE, mdd


def _claim_columns(claim: Claim, decimals: int) -> dict[str, Any]:
    """The claims-table columns that describe the claim itself and the paper's numbers."""
    paper = paper_numbers(claim)
    paper_text = "; ".join(_arm_text(arm, v, decimals) for arm, v in paper.items())
    if not paper:
        paper_text = "ours, not the paper's" if claim.origin == "ours" else "figure only" if claim.paper_dataset else "—"
    return {"id": claim.id, "statement": claim.statement, "source": claim.source, "metric": claim.metric,
            "relation": claim.relation, "origin": claim.origin, "paper": paper_text}  # fmt: skip


def _verdict_row(claim: Claim, decision: Decision | None, reason: str, alpha: float) -> dict[str, Any]:
    """One claims-table row: the claim, the paper's and our numbers, the deciding comparison and the verdict."""
    decimals = 2 if claim.metric == "accuracy" else 4
    row = _claim_columns(claim, decimals)
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
    if claim.relation == "equal":
        verdict, why, level, mdd = _equality_verdict(claim, decision, alpha)
    else:
        verdict, why, level, mdd = _directional_verdict(claim, decision, alpha)
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


def _claim_cells(r: pd.Series) -> list[str]:
    """One claims-table row as Markdown cells."""
    if r["verdict"] == "not tested":
        return [f"{r['statement']} (`{r['id']}`)", r["paper"], *["—"] * 5, f"not tested: {r['reason']}"]
    digits = 1 if r["metric"] == "accuracy" else 3
    cnns = ", ".join(arch_label(a) for a in str(r["cnns"]).split(";"))
    tost = " (TOST)" if r["relation"] == "equal" and r["verdict"] != "contradicted" else ""
    effect = f"{r['effect']:+.{digits}f} [{r['effect_low']:+.{digits}f}, {r['effect_high']:+.{digits}f}]"
    return [
        f"{r['statement']} (`{r['id']}`; {cnns})",
        r["paper"],
        r["versus"],
        f"{effect} ({percent(r['ci_level'])}, {r['interval']})",
        f"{r['test']}, {int(r['n_images'])} images",
        f"{p_text(r['p_claim'])}{tost} → Holm {p_text(r['p_holm'])}",
        f"{r['mdd']:.{digits}f}",
        f"**{r['verdict']}** ({r['reason']})",
    ]


def claims_markdown(table: pd.DataFrame, alpha: float = stats.ALPHA) -> str:
    """The claims table as Markdown, its caption stating the tests, the unit, the families and the levels."""
    caption = (
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
        f"{percent(1 - 2 * alpha)} interval (shown) lies inside ±margin, contradicted when a {percent(1 - alpha)} "
        "interval lies entirely outside it (twice the smaller one-sided p, times the comparisons). Every claim's "
        "p, directional and equality, is Holm-adjusted over one family (p → Holm), significant below "
        f"α = {alpha:g}: "
        "the chance of any false verdict in the table is at most α. 'Detectable' = the smallest difference the "
        "same test would call significant at the threshold the claim faces (its rank's Holm α / (K − rank + 1), "
        "divided by the claim's Bonferroni factor when a comparison going the other way decides it); for an "
        "equality claim, the narrowest margin every interval fits in."
    )
    header = ["Claim", "Paper", "Ours", "Effect [interval]", "Test", "p", "Detectable", "Verdict"]
    align = [LEFT, LEFT, LEFT, RIGHT, LEFT, RIGHT, RIGHT, LEFT]
    return markdown(caption, "", markdown_table(header, align, (_claim_cells(r) for _, r in table.iterrows())))


def write_claims(table: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike) -> None:
    """Write the claims table as CSV and Markdown, atomically."""
    write_text(csv_text(table), csv_path)
    write_text(claims_markdown(table), md_path)
