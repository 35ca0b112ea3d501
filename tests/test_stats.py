"""Statistics: weighted metrics against scikit-learn, bootstrap against scipy, tests against hand-worked cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    precision_recall_fscore_support,
    recall_score,
)
from statsmodels.stats.multitest import multipletests

from dpaat import stats
from test_metrics import HAND_F1, HAND_MAP, HAND_PRECISION, HAND_RECALL, LABELS, PROBS


def _sklearn(metric: str, y: np.ndarray, probs: np.ndarray, w: np.ndarray) -> float:
    pred = probs.argmax(1)
    if metric == "accuracy":
        return accuracy_score(y, pred, sample_weight=w)
    if metric == "map":
        return average_precision_score(np.eye(probs.shape[1])[y], probs, average="macro", sample_weight=w)
    if metric == "balanced_accuracy":
        return balanced_accuracy_score(y, pred, sample_weight=w)
    if metric == "worst_recall":
        present = sorted(set(y[w > 0]))
        return recall_score(y, pred, labels=present, average=None, sample_weight=w, zero_division=0).min()
    p, r, f, _ = precision_recall_fscore_support(
        y, pred, labels=list(range(probs.shape[1])), average="macro", sample_weight=w, zero_division=0
    )
    return {"precision": p, "recall": r, "f1": f}[metric]


def test_unit_weights_give_the_hand_worked_metrics():
    w = np.ones(len(LABELS))
    got = {m: float(stats.weighted_metric(m, LABELS, PROBS, w)) for m in stats.METRIC_NAMES}
    assert got["accuracy"] == pytest.approx(3 / 5)
    assert got["map"] == pytest.approx(HAND_MAP)  # with a tie between a positive and a negative
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((HAND_PRECISION, HAND_RECALL, HAND_F1))
    assert (got["balanced_accuracy"], got["worst_recall"]) == pytest.approx((HAND_RECALL, 0.0))


@pytest.mark.parametrize("metric", stats.METRIC_NAMES)
def test_weighted_metrics_equal_sklearn_with_sample_weights(metric):
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 3, 40)
        probs = rng.dirichlet(np.ones(3), 40)
        probs[:5] = probs[5:10]  # ties of scores, as a bootstrap resample has
        w = rng.integers(0, 4, 40).astype(float)
        w[y == 0][:1] = 1.0
        batch = stats.weighted_metric(metric, y, probs[None].repeat(2, 0), np.stack([w, np.ones(40)]))
        assert batch[0] == pytest.approx(_sklearn(metric, y, probs, w), abs=1e-12)
        assert batch[1] == pytest.approx(_sklearn(metric, y, probs, np.ones(40)), abs=1e-12)


def test_accuracy_interval_is_scipys_bootstrap_of_the_mean():
    rng = np.random.default_rng(1)
    y = np.arange(60) % 3
    correct = rng.random(60) < 0.7
    probs = np.eye(3)[np.where(correct, y, (y + 1) % 3)][None, None]
    ours = stats.cell_interval("accuracy", y, probs, n_resamples=2000, seed=7)
    ref = scipy_stats.bootstrap(
        (correct.astype(float),), np.mean, n_resamples=2000, batch=100, method="BCa", rng=np.random.default_rng(7)
    )
    assert ours.estimate == pytest.approx(correct.mean())
    assert (ours.low, ours.high) == pytest.approx(tuple(ref.confidence_interval), abs=1e-12)


def test_seeds_and_images_are_resampled_independently():
    rng = np.random.default_rng(2)
    y = np.arange(30) % 3
    correct = rng.random((3, 30)) < 0.6  # 3 seeds
    probs = np.eye(3)[np.where(correct, y, (y + 1) % 3)][None]  # (1 arch, 3 seeds, 30, 3)

    def naive(seed_idx, image_idx, axis=-1):
        # Resamples of both samples, or BCa's jackknife of one beside the other's original data.
        seeds2, images2 = np.atleast_2d(seed_idx), np.atleast_2d(image_idx)
        n = max(len(seeds2), len(images2))
        seeds2 = np.repeat(seeds2, n, axis=0) if len(seeds2) == 1 else seeds2
        images2 = np.repeat(images2, n, axis=0) if len(images2) == 1 else images2
        out = np.array([correct[np.ix_(s, i)].mean() for s, i in zip(seeds2, images2)])
        return out if max(np.ndim(seed_idx), np.ndim(image_idx)) > 1 else out[0]

    ours = stats.cell_interval("accuracy", y, probs, n_resamples=500, seed=3)
    ref = scipy_stats.bootstrap(
        (np.arange(3), np.arange(30)), naive, n_resamples=500, batch=100, vectorized=True, method="BCa",
        rng=np.random.default_rng(3),
    )  # fmt: skip
    assert (ours.low, ours.high) == pytest.approx(tuple(ref.confidence_interval), abs=1e-12)


def test_degenerate_interval_is_the_point():
    y = np.arange(30) % 3
    probs = np.eye(3)[y][None, None]
    # BCa is undefined when every resample is equal: the percentile interval stands in, and says so.
    degenerate = stats.cell_interval("accuracy", y, probs, n_resamples=200, seed=0)
    assert degenerate == stats.Interval(1.0, 1.0, 1.0, "percentile")
    assert stats.cell_interval("accuracy", y, probs[..., ::-1], n_resamples=200, seed=0).method == "BCa"


def test_difference_interval_is_paired():
    y = np.arange(60) % 3
    rng = np.random.default_rng(4)
    correct = rng.random(60) < 0.5
    probs = np.eye(3)[np.where(correct, y, (y + 1) % 3)][None, None]
    same = stats.difference_interval("accuracy", y, probs, probs.copy(), n_resamples=300, seed=0)
    assert same == stats.Interval(0.0, 0.0, 0.0, "percentile")  # identical predictions: no difference in any resample


def test_mcnemar_exact_hand_worked():
    # 1 image only A gets right, 7 only B: p = 2 * P(X <= 1 | 8, 1/2) = 2 * 9/256.
    a = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0], dtype=bool)
    test = stats.mcnemar_exact(a, b)
    assert (test.n, test.b, test.c) == (11, 1, 7)
    assert test.pvalue == pytest.approx(18 / 256)
    assert test.pvalue == pytest.approx(scipy_stats.binomtest(1, 8).pvalue)
    assert test.difference == pytest.approx(-6 / 11)
    assert stats.mcnemar_exact(a, a).pvalue == 1.0


def test_holm_hand_worked_and_statsmodels():
    # sorted 0.01, 0.03, 0.04 -> 3·0.01, max(0.03, 2·0.03), max(0.06, 0.04)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    p = np.random.default_rng(5).random(12) / 10
    assert stats.holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    assert np.isnan(stats.holm([0.01, np.nan])[1])


def test_sign_flip_detectable_difference_is_mcnemars_on_single_pairs():
    # One CNN, one seed: each discordant image is ±1 and the sign-flip test is McNemar's exact (binomial) test.
    # No discordant image: it needs 6 all one way (2/2^6 < 0.05 <= 2/2^5).
    none = stats.sign_flip(np.zeros((1, 60), bool), np.zeros((1, 60), bool))
    assert scipy_stats.binomtest(6, 6).pvalue < 0.05 <= scipy_stats.binomtest(5, 5).pvalue
    assert none.detectable(0.05) == pytest.approx(6 / 60)
    # At Holm's strictest threshold over 9 claims it needs 9 (2/2^9 < 0.05/9 <= 2/2^8).
    assert scipy_stats.binomtest(9, 9).pvalue < 0.05 / 9 <= scipy_stats.binomtest(8, 8).pvalue
    assert none.detectable(0.05 / 9) == pytest.approx(9 / 60)
    # 20 discordant images: 15 vs 5 gives p = 0.041, 14 vs 6 gives 0.115 -> a gap of 10 images.
    a, b = np.zeros(60, bool), np.zeros(60, bool)
    a[:10], b[10:20] = True, True
    flip = stats.sign_flip(a[None], b[None])
    assert scipy_stats.binomtest(5, 20).pvalue < 0.05 < scipy_stats.binomtest(6, 20).pvalue
    assert flip.detectable(0.05) == pytest.approx(10 / 60)
    assert flip.pvalue == pytest.approx(stats.mcnemar_exact(a, b).pvalue) == 1.0


def test_sign_flip_p_is_the_full_enumeration_of_image_swaps():
    # 2 CNNs x 2 seeds x 12 images: swap A's and B's outcomes of an image in every CNN and seed at once.
    rng = np.random.default_rng(8)
    a = rng.random((2, 2, 12)) < 0.7
    b = rng.random((2, 2, 12)) < 0.4
    observed = a.mean() - b.mean()
    null = []
    for swap in itertools.product([False, True], repeat=12):
        s = np.array(swap)
        null.append(np.where(s, b, a).mean() - np.where(s, a, b).mean())
    null = np.array(null)
    exact = (np.abs(null) >= abs(observed) - 1e-12).mean()
    flip = stats.sign_flip(a, b)
    assert flip.difference == pytest.approx(observed)
    assert flip.pvalue == pytest.approx(exact, rel=1e-12)
    ref = scipy_stats.permutation_test(
        (flip.totals / flip.pairs,), np.mean, permutation_type="samples", n_resamples=np.inf
    )
    assert flip.pvalue == pytest.approx(ref.pvalue, rel=1e-9)


def _flip(only_a: int, only_b: int, n: int, pairs: int = 1) -> stats.SignFlip:
    """Per-image differences: `only_a` images +pairs, `only_b` images −pairs, the rest 0."""
    totals = np.zeros(n, dtype=np.int64)
    totals[:only_a], totals[only_a : only_a + only_b] = pairs, -pairs
    return stats.SignFlip(totals=totals, pairs=pairs)


def _tango(b: int, c: int, n: int, delta: float) -> float:
    """Tango's (1998) score statistic for paired proportions, his closed-form restricted MLE of the (2, 1) cell."""
    a, bb, cc = 2 * n, -b - c + (2 * n - b + c) * delta, -c * delta * (1 - delta)
    q21 = (-bb + math.sqrt(bb * bb - 4 * a * cc)) / (2 * a)
    return (b - c - n * delta) / math.sqrt(n * (2 * q21 + delta * (1 - delta)))


def test_score_statistic_is_tangos_for_one_pair_per_image():
    for (b, c, n), delta in itertools.product(
        [(0, 0, 60), (1, 0, 60), (0, 3, 60), (5, 4, 897), (50, 30, 897), (3, 7, 44)], [-0.3, -0.03, 0.01, 0.05, 0.2]
    ):
        assert stats.score_statistic(_flip(b, c, n), delta) == pytest.approx(_tango(b, c, n, delta), rel=1e-9)


def test_score_statistic_of_several_pairs_uses_the_constrained_mle_a_generic_optimiser_finds():
    from scipy.optimize import minimize

    # 3 pairs per image (e.g. three seeds): differences in {−1, −2/3, ..., 1}, +1 and −1 unobserved.
    totals = np.array([2] * 7 + [1] * 9 + [-1] * 5 + [-2] * 2 + [0] * 37)
    flip = stats.SignFlip(totals=totals, pairs=3)
    support = np.arange(-3, 4) / 3
    counts = np.array([(totals == k).sum() for k in range(-3, 4)])
    for mean0 in (-0.1, 0.0, 0.12, 0.5, 0.9):
        # Maximise the multinomial log-likelihood on the full support subject to the mean.
        fit = minimize(
            lambda p: -np.sum(counts * np.log(np.maximum(p, 1e-300))), np.full(7, 1 / 7), method="SLSQP",
            bounds=[(0, 1)] * 7, options={"ftol": 1e-14, "maxiter": 1000},
            constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1},
                         {"type": "eq", "fun": lambda p: p @ support - mean0}],
        )  # fmt: skip
        variance = fit.x @ support**2 - mean0**2
        expected = (flip.difference - mean0) / math.sqrt(variance / totals.size)
        assert stats.score_statistic(flip, mean0) == pytest.approx(expected, rel=1e-4), mean0


def test_score_interval_with_no_discordant_image_is_wilsons_bound_of_zero():
    from statsmodels.stats.proportion import proportion_confint

    for pairs in (1, 3):
        interval = stats.score_interval(_flip(0, 0, 60, pairs))
        wilson = proportion_confint(0, 60, alpha=0.05, method="wilson")[1]  # z² / (N + z²) = 6.0 points
        assert interval.method == "score" and interval.high == pytest.approx(wilson, rel=1e-8)
        assert interval.low == pytest.approx(-wilson, rel=1e-8) and interval.estimate == 0
    # The interval inverts its test: at each bound the score statistic is the normal quantile.
    flip = _flip(7, 2, 120)
    interval = stats.score_interval(flip, 0.9)
    assert stats.score_statistic(flip, interval.low) == pytest.approx(scipy_stats.norm.ppf(0.95), rel=1e-7)
    assert stats.score_statistic(flip, interval.high) == pytest.approx(-scipy_stats.norm.ppf(0.95), rel=1e-7)
    # One discordant image of 60: the bound on the empty side reaches beyond 0 (the percentile bootstrap's cannot).
    assert stats.score_interval(_flip(1, 0, 60)).low < 0


def test_tost_and_its_converse_decide_as_the_score_intervals_do():
    # (only A right, only B right) of 2000 images, margin 2 points.
    cases = (((100, 100), "supported"), ((200, 20), "contradicted"), ((120, 80), "inconclusive"))
    for (only_a, only_b), verdict in cases:
        flip = _flip(only_a, only_b, 2000)
        tost = stats.equivalence_test(flip, 0.02)
        wide = stats.score_interval(flip, 0.95)
        assert tost.interval == stats.score_interval(flip, 0.90)
        inside = -0.02 < tost.interval.low and tost.interval.high < 0.02
        outside = wide.low > 0.02 or wide.high < -0.02
        assert inside == (tost.p_equivalent < 0.05) and outside == (tost.p_different < 0.05)
        got = "supported" if inside else "contradicted" if outside else "inconclusive"
        assert got == verdict, (only_a, only_b, tost)
        # The p's are the normal tails of the score statistics at ±margin.
        z_up, z_down = stats.score_statistic(flip, 0.02), stats.score_statistic(flip, -0.02)
        assert tost.p_equivalent == pytest.approx(max(scipy_stats.norm.cdf(z_up), scipy_stats.norm.sf(z_down)))
        one_sided = min(scipy_stats.norm.sf(z_up), scipy_stats.norm.cdf(z_down))
        assert tost.p_different == pytest.approx(min(1, 2 * one_sided))
    # The verdict moves monotonically with the evidence: no switch of method at any count of discordant images.
    p = [stats.equivalence_test(_flip(5, k, 897), 0.01).p_equivalent for k in range(0, 12)]
    assert all(x >= y for x, y in zip(p[:5], p[1:6])) and all(x <= y for x, y in zip(p[5:], p[6:]))


def _draw_totals(rng: np.random.Generator, n: int, up: float, down: float, pairs: int) -> np.ndarray:
    """Per-image differences over `pairs` correlated pairs: an image favours A (rate up) or B (down) or neither;
    each pair keeps the image's lean with probability 0.8, else shows no difference."""
    u = rng.random(n)
    lean = np.where(u < up, 1, np.where(u < up + down, -1, 0))
    keeps = rng.random((pairs, n)) < (0.8 if pairs > 1 else 1.0)
    return (lean * keeps).sum(axis=0)


def _rate_bound(draws: int, nominal: float) -> float:
    """Two Monte Carlo standard errors at the nominal rate."""
    return 2 * math.sqrt(nominal * (1 - nominal) / draws)


@pytest.mark.parametrize(
    "n, up, down, pairs, discordance",
    [
        (60, 0.01, 0.0, 1, "0"),  # most draws have no discordant image (55 %)
        (60, 0.05, 0.02, 1, "1-9"),
        (60, 0.03, 0.03, 3, "1-9"),
        (300, 0.08, 0.04, 1, ">=10"),
        (200, 0.1, 0.05, 3, ">=10"),
    ],
)
def test_score_interval_keeps_its_coverage_at_every_discordance(n, up, down, pairs, discordance):
    rng = np.random.default_rng(25)
    draws, nominal = 400, 0.95
    true = (up - down) * (0.8 if pairs > 1 else 1.0)
    covered, counted = {}, {}
    for _ in range(draws):
        flip = stats.SignFlip(totals=_draw_totals(rng, n, up, down, pairs), pairs=pairs)
        k = flip.discordant
        band = "0" if k == 0 else "1-9" if k < 10 else ">=10"
        interval = stats.score_interval(flip, nominal)
        counted[band] = counted.get(band, 0) + 1
        covered[band] = covered.get(band, 0) + (interval.low <= true <= interval.high)
    coverage = sum(covered.values()) / draws
    in_band = covered[discordance] / counted[discordance]
    print(f"coverage {coverage:.4f} over {draws} draws; {in_band:.4f} over the {counted[discordance]} with "
          f"{discordance} discordant images (N {n}, rates +{up} −{down}, {pairs} pairs)")  # fmt: skip
    assert counted[discordance] >= draws / 2  # the scenario is mostly in its band
    assert coverage >= nominal - _rate_bound(draws, nominal)
    assert in_band >= nominal - _rate_bound(counted[discordance], nominal)


def test_contradicted_route_holds_its_level_under_the_null():
    """|δ| ≤ margin (δ = 0, N = 60, π+ = π− = 0.15): 'the difference exceeds the margin' at most α of draws."""
    rng = np.random.default_rng(251)
    draws, alpha, margin = 600, 0.05, 0.01
    rejected = 0
    for _ in range(draws):
        flip = stats.SignFlip(totals=_draw_totals(rng, 60, 0.15, 0.15, 1), pairs=1)
        rejected += stats.equivalence_test(flip, margin, alpha=alpha).p_different < alpha
    rate = rejected / draws
    print(f"contradicted under H0: {rate:.4f} of {draws} draws (2 MC s.e. {_rate_bound(draws, alpha):.4f})")
    assert rate <= alpha + _rate_bound(draws, alpha)


def test_tost_holds_its_level_at_the_margin():
    """δ = margin (N = 1000, π+ = 0.12, π− = 0.08, margin 4 points): 'equivalent' in at most α of draws."""
    rng = np.random.default_rng(252)
    draws, alpha, margin = 600, 0.05, 0.04
    rejected = sum(
        stats.equivalence_test(stats.SignFlip(totals=_draw_totals(rng, 1000, 0.12, 0.08, 1), pairs=1), margin,
                               alpha=alpha).p_equivalent < alpha
        for _ in range(draws)
    )  # fmt: skip
    # Not by having no power: at δ = 0 the same test says equivalent in most draws.
    power = np.mean([
        stats.equivalence_test(stats.SignFlip(totals=_draw_totals(rng, 1000, 0.1, 0.1, 1), pairs=1), margin,
                               alpha=alpha).p_equivalent < alpha
        for _ in range(100)
    ])  # fmt: skip
    rate = rejected / draws
    print(f"TOST at |δ| = margin: {rate:.4f} of {draws} draws (2 MC s.e. {_rate_bound(draws, alpha):.4f}); "
          f"at δ = 0: {power:.2f}")  # fmt: skip
    assert rate <= alpha + _rate_bound(draws, alpha)
    assert power > 0.5


def test_image_clustered_test_holds_its_level_where_pooled_mcnemar_does_not():
    """Under the null, with three strongly correlated seeds, the sign-flip test rejects at most α (+ MC error)."""
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(2024)
    draws, n_images, n_seeds, alpha = 2000, 60, 3, 0.05
    clustered = pooled = 0
    for _ in range(draws):
        # A third of the images are contested; which arm wins one is a fair coin per image (the null), and
        # each seed keeps the image's winner with probability 0.9: seeds are correlated, not independent.
        contested = rng.random(n_images) < 1 / 3
        favours_a = rng.random(n_images) < 0.5
        keeps = rng.random((n_seeds, n_images)) < 0.9
        a_wins = np.where(keeps, favours_a, ~favours_a)
        both = rng.random(n_images) < 0.5  # uncontested images: both right or both wrong
        a = np.where(contested, a_wins, both)
        b = np.where(contested, ~a_wins, both)
        clustered += stats.sign_flip(a, b).pvalue < alpha
        only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
        table = [[int((a & b).sum()), only_a], [only_b, int((~a & ~b).sum())]]
        pooled += (only_a + only_b > 0) and mcnemar(table, exact=True).pvalue < alpha
    rate_clustered, rate_pooled = clustered / draws, pooled / draws
    mc_error = 2 * math.sqrt(alpha * (1 - alpha) / draws)
    print(f"rejection rate under the null: image-clustered sign-flip {rate_clustered:.4f}, "
          f"pooled McNemar {rate_pooled:.4f} (alpha {alpha}, 2 MC s.e. {mc_error:.4f}, {draws} draws)")  # fmt: skip
    assert rate_clustered <= alpha + mc_error
    assert rate_pooled > alpha + mc_error and rate_pooled > rate_clustered


def test_permutation_pvalue_is_the_exact_enumeration():
    rng = np.random.default_rng(6)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    pa = rng.dirichlet(np.ones(3), (1, 1, 8))
    pb = rng.dirichlet(np.ones(3), (1, 1, 8))
    # Ties between a class's scores: the presorted swap must end a threshold where sklearn does.
    pa[0, 0, 3], pb[0, 0, 5] = pb[0, 0, 1], pa[0, 0, 1]

    def diff(a, b):
        return _sklearn("map", y, a[0, 0], np.ones(8)) - _sklearn("map", y, b[0, 0], np.ones(8))

    observed = diff(pa, pb)
    null = []
    for swap in itertools.product([False, True], repeat=8):
        s = np.array(swap)[None, None, :, None]
        null.append(diff(np.where(s, pb, pa), np.where(s, pa, pb)))
    null = np.array(null)
    tol = 1e-12
    exact = min(1.0, 2 * min((null >= observed - tol).mean(), (null <= observed + tol).mean()))
    test = stats.permutation_test("map", y, pa, pb, n_resamples=1000, seed=0)  # 1000 >= 2^8: exact
    assert test.pvalue == pytest.approx(exact)
    assert test.statistic == pytest.approx(observed, abs=1e-12)
    assert np.sort(test.null) == pytest.approx(np.sort(null), abs=1e-12)
    # The smallest statistic it calls significant at 0.05: the enumerated null's critical value.
    crit = min(t for t in np.abs(null) if t > 0 and min(1.0, 2 * (null >= t - tol).mean()) < 0.05)
    assert test.detectable(0.05) == pytest.approx(crit)


def test_mean_interval_of_groups_with_nan():
    a = np.array([0.2, np.nan, 0.4, 0.6])
    b = np.array([np.nan, np.nan])
    ok = stats.mean_interval([a], n_resamples=300, seed=0)
    assert ok.estimate == pytest.approx(0.4) and ok.low <= 0.4 <= ok.high
    empty = stats.mean_interval([a, b], n_resamples=300, seed=0)
    assert np.isnan(empty.estimate) and np.isnan(empty.low) and np.isnan(empty.high)
