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


def forward_units(attack: Mapping[str, Any], n_classes: int) -> int:
    """Upper bound on the forward passes per image of one attack entry, an input-gradient step counting 2.

    Every kind ends with one prediction of the adversarial images. Square (alone or in
    AutoAttack) is counted at its full query budget, though it stops on the images it has
    fooled; FAB needs the gradient of every class's logit at each step.
    """
    kind = attack["kind"]
    steps = attack.get("steps") or DEFAULT_STEPS[kind]
    restarts = attack.get("restarts") or default_restarts(kind)
    queries = attack.get("queries") or DEFAULT_QUERIES
    if kind in ("fgsm", "ifgsm", "pgd"):
        return max(1, restarts) * 2 * steps + 1
    if kind == "apgd":
        return restarts * 2 * (steps + 1) + 1
    if kind == "square":
        return restarts * queries + 1
    if autoattack_version(n_classes) == "standard":
        # APGD-CE; APGD-T and FAB-T once per target class (FAB-T: one backward per step); Square.
        targets = autoattack_targets(n_classes)
        return 2 * (steps + 1) + targets * 2 * (steps + 1) + targets * 2 * steps + queries + 1
    # Untargeted: APGD-CE and (three classes) APGD-DLR, FAB (one backward per class), Square.
    apgd_runs = 2 if n_classes >= 3 else 1
    return apgd_runs * 2 * (steps + 1) + 2 * steps * n_classes + queries + 1


# The standard AutoAttack's targeted attacks aim at up to this many most likely other classes.
AUTOATTACK_TARGETS = 9


def autoattack_version(n_classes: int) -> str:
    """Which AutoAttack runs for `n_classes`: the standard (targeted) version from four classes, else untargeted."""
    return "standard" if n_classes >= 4 else "untargeted"


def autoattack_targets(n_classes: int) -> int:
    """Target classes of the standard version's APGD-T and FAB-T: the nine most likely others, or all others."""
    return min(AUTOATTACK_TARGETS, n_classes - 1)
