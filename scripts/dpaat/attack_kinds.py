"""The test attack kinds' vocabulary and defaults, without torch (the Snakefile's resource model reads them).

`dpaat.attacks` implements the kinds; this module says what a config entry of each kind
may hold, what it defaults to, and what one costs in forward passes per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Norm = Literal["l2", "linf"]
AttackKind = Literal["fgsm", "ifgsm", "pgd", "apgd", "square", "autoattack"]

# The norm each test attack uses unless its config says otherwise (SPEC: FGSM and
# I-FGSM are Linf by definition, PGD and the stronger attacks use the L2 training threat model).
DEFAULT_NORM: Mapping[AttackKind, Norm] = {
    "fgsm": "linf", "ifgsm": "linf", "pgd": "l2", "apgd": "l2", "square": "l2", "autoattack": "l2",
}  # fmt: skip
# Steps when the config names none: APGD and AutoAttack's 100 iterations (Croce & Hein 2020).
DEFAULT_STEPS: Mapping[AttackKind, int] = {"fgsm": 1, "ifgsm": 1, "pgd": 1, "apgd": 100, "square": 1, "autoattack": 100}
DEFAULT_QUERIES = 5000  # Square's query budget in AutoAttack
# The optional config keys each kind understands (beyond name, kind, eps, norm).
KIND_KEYS: Mapping[AttackKind, frozenset[str]] = {
    "fgsm": frozenset({"steps", "step_size"}),  # only 1 and eps: checked with a clearer message
    "ifgsm": frozenset({"steps", "step_size"}),
    "pgd": frozenset({"steps", "step_size", "restarts", "seed"}),
    "apgd": frozenset({"steps", "loss", "restarts", "seed"}),
    "square": frozenset({"queries", "restarts", "seed"}),
    "autoattack": frozenset({"steps", "queries", "seed"}),
}
OPTIONAL_KEYS = frozenset().union(*KIND_KEYS.values())


def default_restarts(kind: str) -> int:
    """Restarts when the config names none: one run for APGD and Square, none beyond the first for PGD."""
    return 1 if kind in ("apgd", "square") else 0


# Mean Square queries an image needs before it is fooled, over the images it fools. An
# assumption, not yet a measurement: the tiny test models are never fooled by Square, and
# benchmarks/count_work.py (counted against modelled units on the default run's models) is
# what measures it. It matters little: the robust images' full budgets dominate Square's work.
SQUARE_QUERIES_TO_FOOL = 9.0


def _square_units(queries: int, clean: float, robust: float) -> float:
    """torchattacks' Square on every image: a first prediction, then on the correctly classified
    ones a start, a query per iteration until fooled (all `queries` for the robust ones) and a check."""
    fooled = max(0.0, clean - robust)
    return 1 + clean * 2 + robust * queries + fooled * min(queries, SQUARE_QUERIES_TO_FOOL)


def _apgd_units(steps: int, restarts: int, clean: float, robust: float) -> float:
    """torchattacks' APGD: a first prediction, then 2 × (steps + 1) per image still robust for each restart
    (the first restart runs on the correctly classified images, later ones on those left)."""
    return 1 + 2 * (steps + 1) * (clean + (restarts - 1) * robust)


def forward_units(attack: Mapping[str, Any], n_classes: int, clean: float = 1.0, robust: float = 1.0) -> float:
    """Expected forward-equivalent passes per test image of one attack entry, its final prediction included.

    An input-gradient step counts 2 (forward and input-only backward), as `dpaat.work_count` counts.
    `clean` is the fraction of images classified correctly, `robust` the fraction the attack leaves
    correct (its robust accuracy): Square and the restarts only work on the images still correct,
    Square stops on an image once fooled, and AutoAttack runs each attack only on the images the
    earlier ones left (modelled as the final `robust` fraction from the second attack on). With
    the defaults (every image correct and robust) it is the most the attack can cost.
    """
    kind = attack["kind"]
    steps = attack.get("steps") or DEFAULT_STEPS[kind]
    restarts = attack.get("restarts") or default_restarts(kind)
    queries = attack.get("queries") or DEFAULT_QUERIES
    if kind in ("fgsm", "ifgsm") or (kind == "pgd" and restarts <= 1):
        # A random start (pgd restarts 1) adds one check of which images it fooled.
        return 2 * steps + 1 + (1 if kind == "pgd" and restarts == 1 else 0)
    if kind == "pgd":
        # The first start on every image, then each further start on the images the ones before left.
        return 2 * steps + 1 + (restarts - 1) * robust * (2 * steps + 1) + 1
    if kind == "apgd":
        return _apgd_units(steps, restarts, clean, robust) + 1
    if kind == "square":
        return _square_units(queries, clean, robust) + (restarts - 1) * robust * (queries + 2) + 1
    # AutoAttack (torchattacks.MultiAttack): the first attack sees every image, each later one the
    # images still correct; after each, a prediction of the images it was given.
    first = _apgd_units(steps, 1, clean, clean) + 1
    if autoattack_version(n_classes) == "standard":
        # APGD-T: one 2 × (steps + 1) run per target class; FAB-T: per target a start, then a
        # forward, one backward and a check per step, and a final check.
        targets = autoattack_targets(n_classes)
        later = robust * (1 + targets * 2 * (steps + 1) + 1) + robust * (1 + targets * (2 + 3 * steps) + 1)
    else:
        # APGD-DLR (three classes and up); FAB: a start, then per step a forward, one backward per
        # class and a check, and a final check.
        later = (robust * (_apgd_units(steps, 1, 1.0, 1.0) + 1) if n_classes >= 3 else 0.0) + robust * (
            1 + 2 + steps * (n_classes + 2) + 1
        )
    square = robust * (_square_units(queries, 1.0, 1.0) + 1)
    # The class-count check (one image per batch) and the final prediction.
    return first + later + square + 1


# The standard AutoAttack's targeted attacks aim at up to this many most likely other classes.
AUTOATTACK_TARGETS = 9


def autoattack_version(n_classes: int) -> str:
    """Which AutoAttack runs for `n_classes`: the standard (targeted) version from four classes, else untargeted."""
    return "standard" if n_classes >= 4 else "untargeted"


def autoattack_targets(n_classes: int) -> int:
    """Target classes of the standard version's APGD-T and FAB-T: the nine most likely others, or all others."""
    return min(AUTOATTACK_TARGETS, n_classes - 1)


def _pgd_settings(entry: Mapping[str, Any]) -> tuple[float, int, float, str, int]:
    """A PGD entry's (eps, steps, step_size, norm, seed) with the defaults `dpaat.attacks.AttackSpec` fills in."""
    eps = float(entry["eps"])
    steps = int(entry.get("steps") or DEFAULT_STEPS["pgd"])
    step_size = entry.get("step_size")
    step_size = 2.5 * eps / steps if step_size is None else float(step_size)
    return eps, steps, step_size, entry.get("norm") or DEFAULT_NORM["pgd"], int(entry.get("seed") or 0)


def first_start_pairs(attacks: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """{best-of-k PGD's name: the name of its own first start}: pairs the evaluation runs as one attack.

    A PGD entry with `restarts: 1` is the first start of a later entry with more restarts and
    otherwise the same settings (the same seed draws the same first start), so the evaluation
    reads it off that run instead of attacking the images again (`dpaat.evaluation`).
    """
    pairs: dict[str, str] = {}
    for first, entry in attacks.items():
        if entry.get("kind") != "pgd" or (entry.get("restarts") or 0) != 1:
            continue
        for best, other in attacks.items():
            if (
                best not in pairs
                and other.get("kind") == "pgd"
                and (other.get("restarts") or 0) > 1
                and _pgd_settings(other) == _pgd_settings(entry)
            ):
                pairs[best] = first
                break
    return pairs
