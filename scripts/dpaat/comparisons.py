"""DPAAT's paired comparisons with each other AT method: per CNN and seed (McNemar) and pooled (sign-flip)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dpaat import stats
from dpaat.paper_results import arch_label, attack_label, method_label
from dpaat.prediction_store import Predictions
from dpaat.tables import LEFT, RIGHT, markdown, markdown_table, p_text


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
    caption = (
        "**Paired comparisons of DPAAT with the other AT methods.** Accuracy difference (percentage points, "
        "DPAAT minus the other) on the same test images with its 95 % score interval of the per-image differences "
        "(unadjusted; Tango's for paired proportions, at every count of discordant images). Per CNN and seed: "
        "b / c = images only DPAAT / only the other method gets right, McNemar's exact test. 'pooled' over every "
        "CNN and seed: the image is the unit (its outcomes are not independent across "
        "CNNs and seeds), b / c = images DPAAT gets right more / less often, the exact sign-flip test of the "
        "per-image differences. Holm-corrected over every row at α = 0.05."
    )
    rows = (
        [
            "pooled" if r["cnn"] == "pooled" else arch_label(r["cnn"]),
            str(r["seed"]),
            attack_label(r["attack"]),
            method_label(r["versus"]),
            r["test"],
            f"{r['only_method']} / {r['only_versus']}",
            f"{r['difference']:+.1f} [{r['difference_low']:+.1f}, {r['difference_high']:+.1f}]",
            p_text(r["p_value"]),
            p_text(r["p_holm"]),
        ]
        for _, r in table.iterrows()
    )
    header = ["CNN", "Seed", "Attack", "vs", "Test", "b / c", "Difference [95 % CI]", "p", "p (Holm)"]
    align = [LEFT, LEFT, LEFT, LEFT, LEFT, RIGHT, RIGHT, RIGHT, RIGHT]
    return markdown(caption, "", markdown_table(header, align, rows))
