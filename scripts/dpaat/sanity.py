"""Sanity checks against gradient masking, per model (Carlini et al., "On Evaluating Adversarial Robustness").

A defence that only hides its gradients looks robust to gradient attacks while being
no more robust. Its tell-tale signs, each a named check here: robust accuracy does not
fall as eps grows, or stays above chance at an eps large enough to change any image's
class; more PGD steps score *higher* than fewer; the best of k random starts breaks
markedly more images than its first start alone (one run gets stuck on a rugged loss
surface); the black-box Square attack (which needs no gradient) breaks markedly more
images than the white-box attacks at the same eps; iterative I-FGSM is weaker than
single-step FGSM. Where a test AutoAttack runs at the training eps with at least the
check's query budget, the black-box check reads its cascade (the images its Square broke
after APGD and FAB failed) instead of running a Square of its own.

`SanityPlan.from_config` turns the `sanity` config into extra test attacks (ordinary
attack config entries, run by the evaluation like the others); `sanity_checks` reads the
accuracies of one model under them and returns one row per check. No torch here: the
workflow imports this module when it builds its list of attacks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from dpaat.attack_kinds import KINDS, queries_of
from dpaat.tables import CENTRE, LEFT, RIGHT, markdown, markdown_table

# Every check, in report order, with the property it verifies (a failed check is a flag).
CHECKS: dict[str, str] = {
    "l2_falls_with_eps": "L2 robust accuracy does not rise as eps grows (PGD curve over eps multiples)",
    "l2_reaches_chance": "L2 robust accuracy at the largest eps is at or below chance",
    "linf_falls_with_eps": "Linf robust accuracy does not rise as eps grows (I-FGSM curve)",
    "linf_reaches_chance": "Linf robust accuracy at the largest eps is at or below chance",
    "more_steps_not_weaker": "PGD with more steps never scores higher than with fewer (training eps, L2)",
    "restarts_not_weaker": "PGD from one random start is not markedly weaker than the best of k random starts",
    "square_not_stronger": (
        "black-box Square is not markedly stronger than the white-box attacks at the same eps (in AutoAttack's "
        "cascade: it breaks few of the images APGD and FAB left; without AutoAttack: a Square of its own against PGD)"
    ),
    "ifgsm_not_weaker": "I-FGSM is not weaker than FGSM at the same eps",
}
SANITY_COLUMNS: tuple[str, ...] = ("seed", "method", "arch", "check", "passed", "value", "detail")
# Standard errors of an accuracy on n test images that the restart check allows on top of the tolerance.
RESTART_NOISE_SE = 2.0


def _eps_name(value: float) -> str:
    """A file-name-safe rendering of a number: 0.5 -> 0p5, 4 -> 4."""
    return f"{value:g}".replace(".", "p").replace("-", "m")


@dataclass(frozen=True)
class CurvePoint:
    """One point of a robustness curve: the attack's name, its norm and its eps."""

    name: str
    norm: str
    eps: float


@dataclass(frozen=True)
class SanityPlan:
    """The sanity attacks (as attack config entries) and which checks read which attacks.

    The black-box check reads either `square_name` (a Square of its own) or `black_box`
    (the white-box stages' entry, the AutoAttack test attack it is read off).
    """

    curve: tuple[CurvePoint, ...]
    attacks: dict[str, dict[str, Any]]
    restart_name: str | None
    restart_reference: str | None
    square_name: str | None
    training_eps: float
    tolerance: float
    black_box: tuple[str, str] | None = None

    @classmethod
    def from_config(
        cls,
        sanity: Mapping[str, Any],
        adversary: Mapping[str, Any],
        test_attacks: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> SanityPlan:
        """The plan of the `sanity` config section for the training threat model `adversary` {norm, eps},
        beside the configured `test_attacks` ({name: entry}), whose AutoAttack the black-box check may read."""
        eps = float(adversary["eps"])
        if not sanity.get("enabled", True):
            return cls((), {}, None, None, None, eps, float(sanity.get("tolerance", 0.05)))
        norm = adversary.get("norm", "l2")
        steps = int(sanity["curve_steps"])
        curve: list[CurvePoint] = []
        attacks: dict[str, dict[str, Any]] = {}
        # The L2 curve uses the training norm, so it is the threat model the methods were trained for.
        for multiple in sanity["eps_multiples"]:
            point = CurvePoint(f"curve{norm}x{_eps_name(multiple)}", norm, eps * float(multiple))
            curve.append(point)
            attacks[point.name] = {"kind": "pgd", "eps": point.eps, "steps": steps, "norm": norm}
        if norm != "linf":
            for linf_eps in sanity["linf_eps"]:
                point = CurvePoint(f"curvelinf{_eps_name(round(float(linf_eps) * 255, 3))}", "linf", float(linf_eps))
                curve.append(point)
                attacks[point.name] = {"kind": "ifgsm", "eps": point.eps, "steps": steps}
        restart_name = restart_reference = None
        restarts = int(sanity["restarts"])
        if restarts == 1:
            raise ValueError(
                "sanity.restarts is the k of the restart check's best-of-k PGD, compared with its first start: "
                "set it to 2 or more, or to 0 for no restart check"
            )
        if restarts > 1:
            # The same seed draws the same first start: the two runs differ only in the starts after it.
            restart_reference, restart_name = "restart1", "restarts"
            for name, runs in ((restart_reference, 1), (restart_name, restarts)):
                attacks[name] = {"kind": "pgd", "eps": eps, "steps": steps, "norm": norm, "restarts": runs}
        square_name = black_box = None
        queries = int(sanity["square_queries"])
        test_attacks = test_attacks or {}
        source = _autoattack_at(test_attacks, eps, norm, queries) if queries > 0 else None
        if source is not None:
            # AutoAttack's own Square, after its white-box attacks (dpaat.attack_kinds.read_off).
            entry = test_attacks[source]
            white_box = f"{source}whitebox"
            same = {key: entry[key] for key in ("steps", "seed") if entry.get(key) is not None}
            attacks[white_box] = {"kind": "autoattack", "eps": float(entry["eps"]), "norm": norm, **same, "queries": 0}
            black_box = (white_box, source)
        elif queries > 0:
            square_name = "square"
            attacks[square_name] = {"kind": "square", "eps": eps, "norm": norm, "queries": queries}
        tolerance = float(sanity["tolerance"])
        return cls(tuple(curve), attacks, restart_name, restart_reference, square_name, eps, tolerance, black_box)

    def check_names(self, test_attacks: Mapping[str, Mapping[str, Any]]) -> None:
        """Refuse sanity attack names that collide with configured test attacks."""
        clash = sorted(set(self.attacks) & set(test_attacks))
        if clash:
            raise ValueError(f"test attacks {clash} share names with the sanity attacks; rename them in config attacks")


def _autoattack_at(
    test_attacks: Mapping[str, Mapping[str, Any]], eps: float, norm: str, queries: int
) -> str | None:
    """The first test AutoAttack at the training eps and norm whose Square has at least `queries` queries."""
    for name, entry in test_attacks.items():
        if (
            entry.get("kind") == "autoattack"
            and math.isclose(float(entry["eps"]), eps)
            and (entry.get("norm") or KINDS["autoattack"].norm) == norm
            and queries_of(entry) >= queries
        ):
            return name
    return None


def chance_level(confusion: Sequence[Sequence[int]]) -> float:
    """Accuracy of always predicting the most frequent true class of a confusion matrix."""
    totals = [sum(row) for row in confusion]
    return max(totals) / sum(totals)


def _row(check: str, passed: bool | None, value: float, detail: str) -> dict[str, Any]:
    return {"check": check, "passed": passed, "value": float(value), "detail": detail}


def _curve_rows(norm: str, points: list[tuple[float, float]], chance: float, tol: float) -> list[dict[str, Any]]:
    """Monotonicity and chance checks of one curve, points (eps, accuracy) sorted by eps, eps 0 = clean."""
    if len(points) < 2:
        return [
            _row(f"{norm}_falls_with_eps", None, math.nan, "no curve"),
            _row(f"{norm}_reaches_chance", None, math.nan, "no curve"),
        ]
    rises = [(b[1] - a[1], a[0], b[0]) for a, b in zip(points, points[1:])]
    worst, lo, hi = max(rises)
    text = ", ".join(f"{e:.4g}: {a:.3f}" for e, a in points)
    last_eps, last_acc = points[-1]
    return [
        _row(
            f"{norm}_falls_with_eps",
            worst <= tol,
            worst,
            f"largest rise {worst:+.3f} from eps {lo:.4g} to {hi:.4g} ({text})",
        ),
        _row(
            f"{norm}_reaches_chance",
            last_acc <= chance + tol,
            last_acc - chance,
            f"accuracy {last_acc:.3f} at eps {last_eps:.4g}, chance {chance:.3f}",
        ),
    ]


def sanity_checks(
    accuracy: Mapping[str, float],
    plan: SanityPlan,
    test_attacks: Mapping[str, Mapping[str, Any]],
    chance: float,
    n_images: int | None = None,
) -> list[dict[str, Any]]:
    """One row per check (CHECKS order) for one model: passed (None when its attacks are absent), value, detail.

    `accuracy` maps attack names ("clean" included) to accuracies; `test_attacks` are the
    configured test attacks (name -> config entry), whose PGD, FGSM and I-FGSM runs the
    steps and FGSM checks also read. `value` is the check's measured gap (positive = the
    wrong way); a check fails when the gap exceeds `plan.tolerance` (the restart check
    also allows the sampling noise of an accuracy on `n_images` test images).
    """
    tol = plan.tolerance
    rows: list[dict[str, Any]] = []
    clean = accuracy.get("clean")
    for norm in ("l2", "linf"):
        points = sorted((p.eps, accuracy[p.name]) for p in plan.curve if p.norm == norm and p.name in accuracy)
        if points and clean is not None:
            points = [(0.0, clean), *points]
        rows += _curve_rows(norm, points, chance, tol)

    # More steps: every L2 PGD run from the clean image at the training eps, by number of steps.
    same_eps = {**test_attacks, **plan.attacks}
    runs = sorted(
        (int(cfg.get("steps") or KINDS["pgd"].steps), name)
        for name, cfg in same_eps.items()
        if cfg.get("kind") == "pgd"
        and not cfg.get("restarts")
        and (cfg.get("norm") or KINDS["pgd"].norm) == "l2"
        and math.isclose(float(cfg["eps"]), plan.training_eps)
        and name in accuracy
    )
    if len(runs) >= 2:
        rises = [(accuracy[b] - accuracy[a], a, b) for (_, a), (_, b) in zip(runs, runs[1:])]
        worst, a, b = max(rises)
        text = ", ".join(f"{name} ({steps} steps): {accuracy[name]:.3f}" for steps, name in runs)
        rows.append(
            _row("more_steps_not_weaker", worst <= tol, worst, f"largest rise {worst:+.3f} from {a} to {b} ({text})")
        )
    else:
        rows.append(_row("more_steps_not_weaker", None, math.nan, "fewer than two PGD runs at the training eps"))

    rows.append(_restart_row(accuracy, plan, n_images))

    white_box = [name for _, name in runs]
    if plan.black_box is not None and set(plan.black_box) <= set(accuracy):
        stages, whole = plan.black_box
        gap = accuracy[stages] - accuracy[whole]
        detail = (
            f"Square broke {gap:.3f} of the test images AutoAttack's white-box attacks left "
            f"({stages} {accuracy[stages]:.3f}, {whole} {accuracy[whole]:.3f})"
        )
        rows.append(_row("square_not_stronger", gap <= tol, gap, detail))
    elif plan.square_name in accuracy and white_box:
        strongest = min(white_box, key=lambda name: accuracy[name])
        gap = accuracy[strongest] - accuracy[plan.square_name]
        detail = f"Square {accuracy[plan.square_name]:.3f} vs strongest PGD ({strongest}) {accuracy[strongest]:.3f}"
        rows.append(_row("square_not_stronger", gap <= tol, gap, detail))
    else:
        rows.append(_row("square_not_stronger", None, math.nan, "no Square run or no PGD at the training eps"))

    fgsm = {
        float(cfg["eps"]): name for name, cfg in test_attacks.items() if cfg.get("kind") == "fgsm" and name in accuracy
    }
    pairs = [
        (accuracy[name] - accuracy[fgsm[float(cfg["eps"])]], name, fgsm[float(cfg["eps"])])
        for name, cfg in test_attacks.items()
        if cfg.get("kind") == "ifgsm" and name in accuracy and float(cfg["eps"]) in fgsm
    ]
    if pairs:
        worst, name, ref = max(pairs)
        rows.append(
            _row("ifgsm_not_weaker", worst <= tol, worst, f"{name} {accuracy[name]:.3f} vs {ref} {accuracy[ref]:.3f}")
        )
    else:
        rows.append(_row("ifgsm_not_weaker", None, math.nan, "no FGSM / I-FGSM pair at one eps"))
    return rows


def restart_allowance(tolerance: float, accuracy: float, n_images: int | None) -> float:
    """The restart check's allowed gain: the tolerance plus RESTART_NOISE_SE binomial standard errors on n images.

    Which images a random start breaks is chance; on 60 test images at 50 % accuracy one
    standard error is 6.5 points, so a few images gained by other starts are no sign of masking.
    """
    if not n_images:
        return tolerance
    return tolerance + RESTART_NOISE_SE * math.sqrt(accuracy * (1 - accuracy) / n_images)


def _restart_row(accuracy: Mapping[str, float], plan: SanityPlan, n_images: int | None) -> dict[str, Any]:
    """restarts_not_weaker: what the best of k random starts gains over its own first start (same seed)."""
    if plan.restart_name not in accuracy or plan.restart_reference not in accuracy:
        return _row("restarts_not_weaker", None, math.nan, "no restart run")
    first, best = accuracy[plan.restart_reference], accuracy[plan.restart_name]
    gain, allowed = first - best, restart_allowance(plan.tolerance, first, n_images)
    images = f" on {n_images} images" if n_images else ""
    detail = (
        f"first random start {first:.3f}, best of the restarts {best:.3f}: "
        f"gain {gain:+.3f}, allowed {allowed:.3f}{images}"
    )
    return _row("restarts_not_weaker", gain <= allowed, gain, detail)


def sanity_table(
    metrics: pd.DataFrame, plan: SanityPlan, test_attacks: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """The sanity checks of every model in a metrics table: SANITY_COLUMNS, one row per model and check."""
    records = []
    for (seed, method, arch), rows in metrics.groupby(["seed", "method", "arch"], sort=False):
        accuracy = dict(zip(rows["attack"], rows["accuracy"]))
        clean = rows[rows["attack"] == "clean"]
        if clean.empty:
            raise ValueError(f"model {seed}/{method}/{arch} has no clean metrics row; rerun its evaluation")
        confusion = clean["confusion"].iloc[0]
        n_images = sum(sum(row) for row in confusion)
        for row in sanity_checks(accuracy, plan, test_attacks, chance_level(confusion), n_images):
            records.append({"seed": int(seed), "method": method, "arch": arch, **row})
    table = pd.DataFrame.from_records(records, columns=list(SANITY_COLUMNS))
    return table.astype({"passed": "boolean"})


def sanity_markdown(table: pd.DataFrame, labels: Mapping[str, str] | None = None) -> str:
    """A Markdown page: one row per model with each check as pass / FLAG, then every flag named with its detail."""
    labels = labels or {}
    checks = [c for c in CHECKS if c in set(table["check"])]
    rows, flags = [], []
    for (seed, method, arch), model_rows in table.groupby(["seed", "method", "arch"], sort=False):
        by_check = {r["check"]: r for _, r in model_rows.iterrows()}
        cells = []
        for c in checks:
            passed = by_check[c]["passed"] if c in by_check else pd.NA
            cells.append("n/a" if pd.isna(passed) else "ok" if passed else "**FLAG**")
            if not pd.isna(passed) and not passed:
                flags.append(
                    f"- {labels.get(method, method)} / {labels.get(arch, arch)} (seed {seed}): `{c}`: {by_check[c]['detail']}"
                )
        rows.append([str(seed), labels.get(method, method), labels.get(arch, arch), *cells])
    header = ["Seed", "Method", "CNN", *(f"`{c}`" for c in checks)]
    caption = [
        "**Sanity checks against gradient masking.** One row per model; each column is a check "
        "(`ok` passed, **FLAG** failed, `n/a` not run). Checks:",
        "",
        *[f"- `{c}`: {CHECKS[c]}." for c in checks],
        "",
    ]
    table_lines = markdown_table(header, [RIGHT, LEFT, LEFT] + [CENTRE] * len(checks), rows)
    return markdown(caption, table_lines, "", f"**Flags ({len(flags)}).**" if flags else "**No flags.**", "", flags)
