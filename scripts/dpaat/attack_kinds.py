"""The test attack kinds, one registry entry each, without torch (the Snakefile's resource model reads them).

`KINDS` says what a config entry of each kind may hold, what it defaults to, and what one
costs in forward passes per image; `dpaat.attacks` registers how each kind perturbs a batch
(`@perturbs(kind)`). Adding a kind: its entry here, its perturbation there, its name in the
schema's enum (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Norm = Literal["l2", "linf"]
AttackKind = Literal["fgsm", "ifgsm", "pgd", "apgd", "square", "autoattack"]

DEFAULT_QUERIES = 5000  # Square's query budget in AutoAttack
# The standard AutoAttack's targeted attacks aim at up to this many most likely other classes.
AUTOATTACK_TARGETS = 9


def autoattack_version(n_classes: int) -> str:
    """Which AutoAttack runs for `n_classes`: the standard (targeted) version from four classes, else untargeted."""
    return "standard" if n_classes >= 4 else "untargeted"


def autoattack_targets(n_classes: int) -> int:
    """Target classes of the standard version's APGD-T and FAB-T: the nine most likely others, or all others."""
    return min(AUTOATTACK_TARGETS, n_classes - 1)


# Forward passes per image of one entry, an input-gradient step counting 2; each ends with one
# prediction of the adversarial images. Arguments: steps, restarts, queries, number of classes.
Cost = Callable[[int, int, int, int], int]


def _gradient_cost(steps: int, restarts: int, queries: int, n_classes: int) -> int:
    return max(1, restarts) * 2 * steps + 1


def _apgd_cost(steps: int, restarts: int, queries: int, n_classes: int) -> int:
    return restarts * 2 * (steps + 1) + 1


def _square_cost(steps: int, restarts: int, queries: int, n_classes: int) -> int:
    # Counted at the full query budget, though Square stops on the images it has fooled.
    return restarts * queries + 1


def _autoattack_cost(steps: int, restarts: int, queries: int, n_classes: int) -> int:
    if autoattack_version(n_classes) == "standard":
        # APGD-CE; APGD-T and FAB-T once per target class (FAB-T: one backward per step); Square.
        targets = autoattack_targets(n_classes)
        return 2 * (steps + 1) + targets * 2 * (steps + 1) + targets * 2 * steps + queries + 1
    # Untargeted: APGD-CE and (three classes) APGD-DLR, FAB (the gradient of every class's logit), Square.
    apgd_runs = 2 if n_classes >= 3 else 1
    return apgd_runs * 2 * (steps + 1) + 2 * steps * n_classes + queries + 1


@dataclass(frozen=True)
class Kind:
    """One attack kind's config vocabulary, defaults and cost.

    `norm`, `steps`, `restarts` and `queries` are the defaults of an entry that names
    none (`restarts` is also the fewest accepted; `queries` > 0 means the kind has a query
    budget, which must then be >= 1); `step_size(eps, steps)` the default step size;
    `options` the optional keys beyond name, kind, eps and norm; `linf_only`: the kind is
    defined in Linf; `one_step`: exactly one step of size eps (FGSM).
    """

    norm: Norm
    options: frozenset[str]
    cost: Cost
    steps: int = 1
    restarts: int = 0
    queries: int = 0
    step_size: Callable[[float, int], float] = lambda eps, steps: 0.0
    linf_only: bool = False
    one_step: bool = False


# SPEC: FGSM and I-FGSM are Linf by definition, PGD and the stronger attacks use the L2
# training threat model; APGD and AutoAttack default to 100 iterations (Croce & Hein 2020).
KINDS: Mapping[str, Kind] = {
    "fgsm": Kind("linf", frozenset({"steps", "step_size"}), _gradient_cost, step_size=lambda eps, steps: eps,
                 linf_only=True, one_step=True),
    "ifgsm": Kind("linf", frozenset({"steps", "step_size"}), _gradient_cost, step_size=lambda eps, steps: eps / 4,
                  linf_only=True),
    "pgd": Kind("l2", frozenset({"steps", "step_size", "restarts", "seed"}), _gradient_cost,
                step_size=lambda eps, steps: 2.5 * eps / steps),
    "apgd": Kind("l2", frozenset({"steps", "loss", "restarts", "seed"}), _apgd_cost, steps=100, restarts=1),
    "square": Kind("l2", frozenset({"queries", "restarts", "seed"}), _square_cost, restarts=1,
                   queries=DEFAULT_QUERIES),
    "autoattack": Kind("l2", frozenset({"steps", "queries", "seed"}), _autoattack_cost, steps=100,
                       queries=DEFAULT_QUERIES),
}  # fmt: skip
OPTIONAL_KEYS = frozenset().union(*(kind.options for kind in KINDS.values()))


def kind_of(name: str) -> Kind:
    """The registry entry of kind `name`; an unknown kind is an error naming the known ones."""
    if name not in KINDS:
        raise ValueError(f"attack kind must be one of {sorted(KINDS)}, got {name!r}")
    return KINDS[name]


def forward_units(attack: Mapping[str, Any], n_classes: int) -> int:
    """Upper bound on the forward passes per image of one attack entry, an input-gradient step counting 2."""
    kind = kind_of(attack["kind"])
    steps = attack.get("steps") or kind.steps
    restarts = attack.get("restarts") or kind.restarts
    queries = attack.get("queries") or DEFAULT_QUERIES
    return kind.cost(steps, restarts, queries, n_classes)
