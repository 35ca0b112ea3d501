"""The claims file reproduces the paper's numbers from paper_results; verdicts follow their rules."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from dpaat import stats
from dpaat.claims import CLAIMS_FILE, Claim, for_dataset, load_claims, paper_numbers
from dpaat.comparisons import comparisons_markdown, method_comparisons
from dpaat.prediction_store import Predictions
from dpaat.verdicts import claims_markdown, evaluate_claims
from dpaat.evaluation import predictions_frame
from dpaat.metrics import metrics_frame, model_metrics
from dpaat.paper_results import TABLE1, TABLE2
from dpaat.report import add_intervals, prediction_intervals, table1, table2, to_csv, to_markdown

import torch

N = 60
LABELS = np.arange(N) % 3
IDS = [f"ISIC_{i:07d}" for i in range(N)]


def test_the_claims_file_holds_no_copy_of_the_papers_numbers():
    text = CLAIMS_FILE.read_text()
    numbers = {f"{v:.2f}" for g in TABLE1.values() for m in g.values() for v in m.values()}
    numbers |= {f"{v:.4f}" for g in TABLE2.values() for m in g.values() for v in m.values()}
    found = sorted(n for n in numbers if re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", text))
    assert not found, f"claims.yaml repeats the paper's numbers {found}; reference paper_results instead"


def test_claims_reproduce_the_papers_numbers_and_say_what_they_say():
    claims = {c.id: c for c in load_claims()}
    assert len(claims) == 13
    # Four are ours, not the paper's: DPAAT against the baselines TRADES and MART, which the paper never ran,
    # and two on MedMNIST-C's dermoscopy corruptions, which it never tested.
    ours = {cid for cid, c in claims.items() if c.origin == "ours"}
    assert ours == {"dpaat_racc_pgd20_exceeds_baselines", "dpaat_gacc_exceeds_baselines",
                    "at_corruption_not_below_std", "dpaat_corruption_highest_of_at"}  # fmt: skip
    assert claims["at_corruption_not_below_std"].arms() == [
        ((m, "corrupted"), ("std", "corrupted")) for m in ("at", "sat", "amat", "dpaat")
    ]
    assert claims["dpaat_corruption_highest_of_at"].methods == ("dpaat", "at", "sat", "amat")
    assert paper_numbers(claims["dpaat_racc_pgd20_highest"]) == {
        ("dpaat", "pgd20"): TABLE1["all"]["dpaat"]["pgd20"],
        ("at", "pgd20"): TABLE1["all"]["at"]["pgd20"],
        ("sat", "pgd20"): TABLE1["all"]["sat"]["pgd20"],
        ("amat", "pgd20"): TABLE1["all"]["amat"]["pgd20"],
    }
    assert paper_numbers(claims["sat_marp_exceeds_at"]) == {
        ("sat", "pgd20"): TABLE2["all"]["sat"]["marp"],
        ("at", "pgd20"): TABLE2["all"]["at"]["marp"],
    }
    for claim in claims.values():
        numbers = paper_numbers(claim)
        if claim.origin == "ours":
            assert numbers == {}
            continue
        if claim.paper is None:
            assert numbers == {} and "Fig. 3" in claim.source
            continue
        # Each claim, as encoded, holds in the paper's own numbers.
        for a, b in claim.arms():
            if claim.relation == "greater":
                assert numbers[a] > numbers[b], (claim.id, a, b)
            else:
                assert abs(numbers[a] - numbers[b]) <= claim.margin * 100, (claim.id, a, b)


def _logits(correct: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    logits = rng.normal(size=(N, 3)).astype(np.float32)
    logits[np.arange(N), LABELS] += np.where(correct, 6.0, -6.0)
    return logits


def _predictions(correct: dict[tuple[str, str, str], np.ndarray], seed: int = 0) -> pd.DataFrame:
    """A predictions frame (as the evaluate job writes, with identity columns) from per-image successes."""
    rng = np.random.default_rng(seed)
    frames = []
    models = sorted({(m, a) for m, a, _ in correct})
    for method, arch in models:
        logits = {
            atk: torch.from_numpy(_logits(c, rng)) for (m, a, atk), c in correct.items() if (m, a) == (method, arch)
        }
        frame = predictions_frame(logits, torch.from_numpy(LABELS), IDS)
        frames.append(frame.assign(seed=0, method=method, arch=arch))
    return pd.concat(frames, ignore_index=True)


def _claim(**kw) -> Claim:
    base = dict(id="c", source="s", statement="x", relation="greater", metric="accuracy", group="all",
                methods=("dpaat", "at"), attacks=("pgd20",))  # fmt: skip
    return Claim(**{**base, **kw})


def _correct(rate: float, rng: np.random.Generator) -> np.ndarray:
    c = np.zeros(N, dtype=bool)
    c[rng.permutation(N)[: round(rate * N)]] = True
    return c


def test_verdicts_supported_contradicted_inconclusive():
    rng = np.random.default_rng(0)
    base = _correct(0.3, rng)
    better = base | _correct(0.5, rng)  # everything base gets right and more: many discordant pairs one way
    slightly = base.copy()
    slightly[np.flatnonzero(~base)[:2]] = True  # two more images
    preds = Predictions(
        _predictions(
            {("at", "mobilenet_v2", "pgd20"): base, ("dpaat", "mobilenet_v2", "pgd20"): better,
             ("sat", "mobilenet_v2", "pgd20"): slightly, ("amat", "mobilenet_v2", "pgd20"): base,
             ("amat", "mobilenet_v2", "pgd50"): base}
        )
    )  # fmt: skip
    claims = [
        _claim(id="up", methods=("dpaat", "at")),
        _claim(id="down", methods=("at", "dpaat")),
        _claim(id="tiny", methods=("sat", "at")),
        _claim(id="same", relation="equal", methods=("amat",), attacks=("pgd20", "pgd50"), margin=0.01),
        _claim(id="same_wide", relation="equal", methods=("amat",), attacks=("pgd20", "pgd50"), margin=0.1),
        _claim(id="absent", methods=("d_a", "at")),
    ]
    table, decisions = evaluate_claims(preds, claims, n_resamples=300, seed=0)
    verdict = dict(zip(table["id"], table["verdict"]))
    # Zero flips on 60 images cannot show a gap below 1 point (TOST p 0.22) but can show one below 10 (p 0.005).
    assert verdict == {"up": "supported", "down": "contradicted", "tiny": "inconclusive", "same": "inconclusive",
                       "same_wide": "supported", "absent": "not tested"}  # fmt: skip
    rows = table.set_index("id")
    # No discordant image: the score statistic at margin m is −sqrt(N m / (1 − m)); the 90 % bound is Wilson's.
    assert rows.loc["same", "p_claim"] == pytest.approx(scipy_stats.norm.cdf(-math.sqrt(N * 0.01 / 0.99)))
    assert rows.loc["same_wide", "p_claim"] == pytest.approx(scipy_stats.norm.cdf(-math.sqrt(N * 0.1 / 0.9)))
    z = scipy_stats.norm.ppf(0.95)
    assert rows.loc["same", "effect_high"] == pytest.approx(100 * z**2 / (N + z**2)) == -rows.loc["same", "effect_low"]
    tiny = rows.loc["tiny"]
    assert tiny["effect"] == pytest.approx(100 * 2 / N)
    # tiny has the largest p of the three directional claims: Holm's threshold at its rank is α itself, and
    # the exact test needs 6 images all one way there (binomial: 2/2^6 < 0.05 <= 2/2^5).
    assert tiny["threshold"] == pytest.approx(0.05)
    assert scipy_stats.binomtest(6, 6).pvalue < 0.05 <= scipy_stats.binomtest(5, 5).pvalue
    assert tiny["mdd"] == pytest.approx(100 * 6 / N)
    # Holm over every tested claim, equality ones included: one family at α for the whole table.
    assert [d.p_holm for d in decisions] == pytest.approx(list(stats.holm([d.p for d in decisions])))
    tested = ["up", "down", "tiny", "same", "same_wide"]
    assert rows.loc[tested, "p_holm"].tolist() == pytest.approx([d.p_holm for d in decisions])
    md = claims_markdown(table)
    assert md.count("\n| ") == 2 + len(claims) and "**supported**" in md and "not tested" in md
    for words in ("unit of every test", "conditional on them", "Holm", "TOST", "unadjusted", "α = 0.05", "90 %",
                  "score interval", "at most α", "Bonferroni factor"):  # fmt: skip
        assert words in md.split("\n")[0], words


def test_a_multi_competitor_claim_shows_the_comparison_that_decides_it():
    rng = np.random.default_rng(4)
    low = _correct(0.2, rng)
    mid = low.copy()
    mid[np.flatnonzero(~low)[:8]] = True
    high = mid.copy()
    high[np.flatnonzero(~mid)[:25]] = True
    preds = Predictions(
        _predictions({("dpaat", "mobilenet_v2", "pgd20"): high, ("at", "mobilenet_v2", "pgd20"): low,
                      ("sat", "mobilenet_v2", "pgd20"): mid, ("amat", "mobilenet_v2", "pgd20"): high})
    )  # fmt: skip
    table, decisions = evaluate_claims(
        preds,
        [_claim(id="over_two", methods=("dpaat", "at", "sat")), _claim(id="under", methods=("sat", "at", "dpaat"))],
        n_resamples=200,
        seed=0,
    )
    rows = table.set_index("id")
    over = {c.b[0]: c.pvalue for c in decisions[0].comparisons}
    # It needs both competitors: the claim's p is the larger (SAT's, the closer), shown in the row.
    assert rows.loc["over_two", "p_claim"] == rows.loc["over_two", "p_value"] == max(over.values()) == over["sat"]
    assert rows.loc["over_two", "versus"].split(" vs ")[1].startswith("SAT")
    # SAT below DPAAT (33 images) contradicts "SAT is the highest": that comparison's p times the two competitors.
    under = {c.b[0]: c.pvalue for c in decisions[1].comparisons}
    assert rows.loc["under", "p_value"] == under["dpaat"]
    assert rows.loc["under", "p_claim"] == pytest.approx(2 * under["dpaat"])
    assert rows.loc["under", "verdict"] == "contradicted"
    assert rows.loc["over_two", "p_holm"] == pytest.approx(stats.holm([2 * under["dpaat"], over["sat"]])[1])


def test_an_equality_claim_is_inconclusive_on_zero_flips_of_120_pairs():
    rng = np.random.default_rng(5)
    correct = {}
    for arch in ("mobilenet_v2", "shufflenet_v2_x1_0"):
        same = _correct(0.5, rng)
        correct[("amat", arch, "pgd20")] = correct[("amat", arch, "pgd50")] = same
    preds = Predictions(_predictions(correct))
    claim = _claim(id="same", relation="equal", methods=("amat",), attacks=("pgd20", "pgd50"), margin=0.01)
    table, _ = evaluate_claims(preds, [claim], n_resamples=200, seed=0)
    row = table.iloc[0]
    assert row["verdict"] == "inconclusive" and row["n_discordant"] == 0 and row["interval"] == "score"
    # The image is the unit: 60 images, not 120 pairs; the score statistic at 1 point is −sqrt(N m / (1 − m)).
    assert row["n_images"] == N and row["p_claim"] == pytest.approx(scipy_stats.norm.cdf(-math.sqrt(N * 0.01 / 0.99)))


def test_a_family_too_large_for_the_permutation_count_is_warned_of(caplog):
    rng = np.random.default_rng(6)
    correct = {(m, "mobilenet_v2", "clean"): _correct(0.6, rng) for m in ("at", "sat", "amat", "dpaat")}
    preds = Predictions(_predictions(correct))
    claims = [_claim(id=f"map{i}", metric="map", methods=(m, "at"), attacks=("clean",))
              for i, m in enumerate(("sat", "amat", "dpaat"))]  # fmt: skip
    with caplog.at_level("WARNING", logger="dpaat.verdicts"):
        evaluate_claims(preds, claims, n_resamples=200, n_permutations=1000, seed=0)
    assert "permutation_resamples" in caplog.text  # 2/1001 is not far below 0.05/3
    caplog.clear()
    with caplog.at_level("WARNING", logger="dpaat.verdicts"):
        evaluate_claims(preds, claims, n_resamples=200, seed=0)  # the default 20 000
    assert "permutation_resamples" not in caplog.text


def test_ablation_claims_are_tested_on_the_ablations_own_models():
    rng = np.random.default_rng(2)
    low, high = _correct(0.2, rng), _correct(0.2, rng)
    high |= _correct(0.6, rng)
    # Main schedule: D-A below AT; the ablation's own schedule: D-A above AT.
    main = Predictions(_predictions({("at", "mobilenet_v2", "clean"): high, ("d_a", "mobilenet_v2", "clean"): low}))
    own = Predictions(_predictions({("at", "mobilenet_v2", "clean"): low, ("d_a", "mobilenet_v2", "clean"): high}))
    claims = [
        _claim(id="fig3", methods=("d_a", "at"), attacks=("clean",), ablation=True),
        _claim(id="main", methods=("d_a", "at"), attacks=("clean",)),
    ]
    with_own, _ = evaluate_claims(main, claims, n_resamples=200, seed=0, ablation=own)
    assert dict(zip(with_own["id"], with_own["verdict"])) == {"fig3": "supported", "main": "contradicted"}
    # Without models of its own schedule, the ablation claim reads the main models (the default config).
    reused, _ = evaluate_claims(main, claims, n_resamples=200, seed=0)
    assert dict(zip(reused["id"], reused["verdict"])) == {"fig3": "contradicted", "main": "contradicted"}
    flagged = {c.id for c in load_claims() if c.ablation}
    assert flagged == {"da_gacc_exceeds_at", "db_gacc_highest_of_ablation", "dab_racc_highest_of_ablation"}


def test_method_comparisons_mcnemar_per_cnn_and_seed_and_the_image_pooled():
    rng = np.random.default_rng(1)
    correct = {}
    for arch in ("mobilenet_v2", "shufflenet_v2_x1_0"):
        for method in ("dpaat", "at", "sat", "amat"):
            for attack in ("clean", "pgd20"):
                correct[(method, arch, attack)] = _correct(0.5, rng)
    preds = Predictions(_predictions(correct))
    table = method_comparisons(preds, ["pgd20"])
    assert len(table) == 2 * 3 * 3  # (clean, pgd20) x (at, sat, amat) x (two CNNs, pooled)
    at = table[(table["attack"] == "pgd20") & (table["versus"] == "at")].set_index("cnn")
    a, b = correct[("dpaat", "mobilenet_v2", "pgd20")], correct[("at", "mobilenet_v2", "pgd20")]
    one = at.loc["mobilenet_v2"]
    # McNemar's exact test on one CNN and seed is the binomial test of the discordant pairs.
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    assert (one["test"], one["only_method"], one["only_versus"]) == ("McNemar (exact)", only_a, only_b)
    assert one["p_value"] == pytest.approx(scipy_stats.binomtest(only_a, only_a + only_b).pvalue)
    pooled = at.loc["pooled"]
    ref = stats.sign_flip(
        np.stack([correct[("dpaat", arch, "pgd20")] for arch in ("mobilenet_v2", "shufflenet_v2_x1_0")]),
        np.stack([correct[("at", arch, "pgd20")] for arch in ("mobilenet_v2", "shufflenet_v2_x1_0")]),
    )
    assert (pooled["test"], pooled["n_images"], pooled["n_pairs"]) == ("sign-flip (exact)", N, 2 * N)
    assert (pooled["only_method"], pooled["only_versus"], pooled["p_value"]) == (
        ref.positive,
        ref.negative,
        pytest.approx(ref.pvalue),
    )
    assert table["p_holm"].tolist() == pytest.approx(list(stats.holm(table["p_value"].tolist())))
    assert "pooled" in comparisons_markdown(table)


def test_table_intervals_come_from_the_same_predictions_as_the_metrics():
    rng = np.random.default_rng(2)
    logits, rows, frames = {}, [], []
    for arch in ("mobilenet_v2", "shufflenet_v2_x1_0"):
        for method in ("std", "at", "dpaat"):
            by_attack = {
                atk: torch.from_numpy(_logits(_correct(p, rng), rng)) for atk, p in (("clean", 0.8), ("pgd20", 0.4))
            }
            for atk, lg in by_attack.items():
                rows.append(
                    model_metrics(LABELS, lg, ["mel", "bkl", "nv"], method=method, arch=arch, seed=0, attack=atk)
                )
            frames.append(
                predictions_frame(by_attack, torch.from_numpy(LABELS), IDS).assign(seed=0, method=method, arch=arch)
            )
    metrics = metrics_frame(rows)
    intervals = prediction_intervals(Predictions(pd.concat(frames, ignore_index=True)), n_resamples=300, seed=0)
    for table in (table1(metrics), table2(metrics, "pgd20")):
        with_ci = add_intervals(table, intervals)
        cells = with_ci.cells
        assert ((cells["low"] <= cells["mean"] + 1e-9) & (cells["mean"] <= cells["high"] + 1e-9)).all()
        columns = {c.key: c for c in table.columns}
        for _, cell in cells.iterrows():
            column = columns[cell["column"]]
            estimate = intervals(tuple(cell["archs"].split(";")), cell["method"], column).estimate
            assert estimate == pytest.approx(cell["mean"], abs=1e-9)  # our weighted metric = sklearn's
        assert "_low" in to_csv(with_ci, paper_numbers=False) and " [" in to_markdown(with_ci, paper_numbers=False)


def test_gradcam_table_intervals_resample_each_archs_images():
    from dpaat.report import gradcam_intervals, gradcam_table

    rng = np.random.default_rng(3)
    rows = []
    for arch, n in (("mobilenet_v2", 12), ("shufflenet_v2_x1_0", 9)):
        for method in ("std", "at", "dpaat"):
            energy = rng.random(n)
            energy[0] = np.nan  # an all-zero CAM
            rows.append(pd.DataFrame({"seed": 0, "method": method, "arch": arch, "image_id": [f"i{k}" for k in range(n)],
                                      "energy_in_mask": energy, "pointing_hit": pd.array(rng.random(n) < 0.5, dtype="boolean"),
                                      "mask_fraction": rng.random(n)}))  # fmt: skip
    scores = pd.concat(rows, ignore_index=True)
    table = add_intervals(gradcam_table(scores), gradcam_intervals(scores, n_resamples=300, seed=0))
    cells = table.cells
    assert ((cells["low"] <= cells["mean"] + 1e-9) & (cells["mean"] <= cells["high"] + 1e-9)).all()
    assert (cells["high"] > cells["low"]).all()
    assert "bootstrap interval" in table.caption


def test_predictions_read_from_the_files_the_evaluate_job_writes(tmp_path):
    from dpaat.predictions import PREDICTION_COLUMNS, write_predictions

    path = tmp_path / "0" / "dpaat" / "mobilenet_v2.parquet"
    path.parent.mkdir(parents=True)
    frame = _predictions({("dpaat", "mobilenet_v2", "clean"): np.ones(N, dtype=bool)})
    write_predictions(frame[list(PREDICTION_COLUMNS)], path)
    preds = Predictions.read([path])
    assert preds.seeds == [0] and preds.has("dpaat", "mobilenet_v2", "clean")
    assert (preds.probs("dpaat", "clean", ["mobilenet_v2"]).argmax(-1) == LABELS).all()


def test_another_dataset_keeps_the_method_claims_with_no_paper_numbers():
    claims = load_claims()
    assert for_dataset(claims, paper_dataset=True) == claims
    other = for_dataset(claims, paper_dataset=False)
    ids = {c.id for c in other}
    assert {"dpaat_racc_pgd20_highest", "dpaat_gacc_highest_of_at", "std_gacc_highest"} <= ids
    assert "pgd20_equals_pgd50" not in ids and all(c.any_dataset and c.paper is None for c in other)
    empty = Predictions(pd.DataFrame(columns=["seed", "method", "arch", "attack", "image_id", "label", "logits"]))
    rows, _ = evaluate_claims(empty, other, n_resamples=100, seed=0)
    paper_claims = rows["origin"] == "paper"
    assert (rows.loc[paper_claims, "paper"] == "—").all() and (rows["verdict"] == "not tested").all()
    assert (rows.loc[~paper_claims, "paper"] == "ours, not the paper's").all()


def test_the_corruption_claims_pool_every_corrupted_test_set_per_image():
    """'corrupted' stacks each corruption beside the CNNs: the sign-flip test sums an image's differences over them."""
    rng = np.random.default_rng(5)
    conditions = ["gaussian_noise@1", "gaussian_noise@3", "motion_blur@2"]
    std = {c: _correct(0.3, rng) for c in conditions}
    correct = {("std", "mobilenet_v2", c): std[c] for c in conditions}
    for method in ("at", "sat", "amat", "dpaat"):
        for c in conditions:
            # Every AT method gets right what STD does and more; DPAAT the most.
            more = 0.6 if method == "dpaat" else 0.2
            correct[(method, "mobilenet_v2", c)] = std[c] | _correct(more, rng)
    for method in ("std", "at", "sat", "amat", "dpaat"):
        correct[(method, "mobilenet_v2", "clean")] = _correct(0.5, rng)
    preds = Predictions(_predictions(correct))
    claims = [c for c in load_claims() if c.attacks == ("corrupted",)]
    table, decisions = evaluate_claims(preds, claims, n_resamples=300, seed=0)
    rows = table.set_index("id")
    assert rows.loc["at_corruption_not_below_std", "verdict"] == "supported", rows["reason"].tolist()
    assert "each significantly above STD" in rows.loc["at_corruption_not_below_std", "reason"]
    assert rows.loc["dpaat_corruption_highest_of_at", "verdict"] == "supported", rows["reason"].tolist()
    # The cell is the mean accuracy over the corrupted test sets; the test's unit stays the image (N of them).
    dpaat = decisions[1].comparisons[0]
    expected = 100 * np.mean([correct[("dpaat", "mobilenet_v2", c)].mean() for c in conditions])
    assert dpaat.value_a.estimate == pytest.approx(expected) and dpaat.n_images == N
    # STD above every AT method contradicts the first claim.
    flipped = Predictions(_predictions({(("std" if m == "at" else "at" if m == "std" else m), a, c): v
                                        for (m, a, c), v in correct.items()}))  # fmt: skip
    table, _ = evaluate_claims(flipped, claims[:1], n_resamples=300, seed=0)
    assert table["verdict"].tolist() == ["contradicted"]
