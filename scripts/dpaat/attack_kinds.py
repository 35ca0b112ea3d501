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


# Expected forward-equivalent passes per test image of one entry, its final prediction included; an
# input-gradient step counts 2 (forward and input-only backward), as `dpaat.work_count` counts.
# Arguments: steps, restarts, queries, number of classes, and the fractions of images the model
# classifies correctly (`clean`) and the attack leaves correct (`robust`, its robust accuracy).
Cost = Callable[[int, int, int, int, float, float], float]

# The share of its query budget Square spends on an image it fools, on average. Measured by
# benchmarks/count_work.py on the default run's models (32 px, L2 eps 0.15): over the images
# Square fooled, 0.31 of a 100-query budget (25 images, 12 models) and 0.42 (9 images, three
# models), 0.44 of a 300-query budget (23 images): the images a larger budget fools take longer.
# The robust images' full budgets dominate Square's work either way.
SQUARE_FOOL_FRACTION = 0.4


def _square_units(queries: int, clean: float, robust: float) -> float:
    """torchattacks' Square on every image: a first prediction, then on the correctly classified
    ones a start, a query per iteration until fooled (all `queries` for the robust ones) and a check."""
    fooled = max(0.0, clean - robust)
    return 1 + clean * 2 + robust * queries + fooled * SQUARE_FOOL_FRACTION * queries


def _apgd_units(steps: int, restarts: int, clean: float, robust: float) -> float:
    """torchattacks' APGD: a first prediction, then 2 × (steps + 1) per image still robust for each restart
    (the first restart runs on the correctly classified images, later ones on those left)."""
    return 1 + 2 * (steps + 1) * (clean + (restarts - 1) * robust)


def _gradient_cost(steps: int, restarts: int, queries: int, n_classes: int, clean: float, robust: float) -> float:
    # FGSM and I-FGSM: their steps. PGD: a random start (restarts 1) adds one check of which images it
    # fooled; more starts: the first on every image, then each further one on the images the ones before left.
    if restarts <= 1:
        return 2 * steps + 1 + (1 if restarts == 1 else 0)
    return 2 * steps + 1 + (restarts - 1) * robust * (2 * steps + 1) + 1


def _apgd_cost(steps: int, restarts: int, queries: int, n_classes: int, clean: float, robust: float) -> float:
    return _apgd_units(steps, restarts, clean, robust) + 1


def _square_cost(steps: int, restarts: int, queries: int, n_classes: int, clean: float, robust: float) -> float:
    return _square_units(queries, clean, robust) + (restarts - 1) * robust * (queries + 2) + 1


def _autoattack_cost(steps: int, restarts: int, queries: int, n_classes: int, clean: float, robust: float) -> float:
    # The cascade (dpaat.attacks.cascade): the first attack sees every image, each later one the images
    # still correct, modelled as the final `robust` fraction: a lower bound where APGD-DLR and FAB still
    # break images APGD-CE left (7-14 % under on the tests' tiny models; tests/test_cost.py). After
    # each attack, a prediction of the images it was given.
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
    # Square (none with queries 0: the white-box attacks alone).
    square = robust * (_square_units(queries, 1.0, 1.0) + 1) if queries else 0.0
    # The class-count check (one image per batch) and the final prediction.
    return first + later + square + 1


@dataclass(frozen=True)
class Kind:
    """One attack kind's config vocabulary, defaults and cost.

    `norm`, `steps`, `restarts` and `queries` are the defaults of an entry that names
    none (`restarts` is also the fewest accepted; `queries` > 0 means the kind has a query
    budget, which must then be >= `min_queries`); `step_size(eps, steps)` the default step
    size; `options` the optional keys beyond name, kind, eps and norm; `linf_only`: the kind
    is defined in Linf; `one_step`: exactly one step of size eps (FGSM).
    """

    norm: Norm
    options: frozenset[str]
    cost: Cost
    steps: int = 1
    restarts: int = 0
    queries: int = 0
    step_size: Callable[[float, int], float] = lambda eps, steps: 0.0
    min_queries: int = 1
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
    # queries 0: AutoAttack without its Square stage, i.e. its white-box attacks alone.
    "autoattack": Kind("l2", frozenset({"steps", "queries", "seed"}), _autoattack_cost, steps=100,
                       queries=DEFAULT_QUERIES, min_queries=0),
}  # fmt: skip
OPTIONAL_KEYS = frozenset().union(*(kind.options for kind in KINDS.values()))


def kind_of(name: str) -> Kind:
    """The registry entry of kind `name`; an unknown kind is an error naming the known ones."""
    if name not in KINDS:
        raise ValueError(f"attack kind must be one of {sorted(KINDS)}, got {name!r}")
    return KINDS[name]


def check_entry(entry: Mapping[str, Any]) -> None:
    """Refuse what the schema cannot see in one attack entry: options of another kind, and a query
    budget below its kind's least (None values are absent, as the schema's defaults)."""
    kind = kind_of(entry["kind"])
    given = {key for key, value in entry.items() if value is not None}
    foreign = sorted((given & OPTIONAL_KEYS) - kind.options)
    if foreign:
        raise ValueError(f"attack kind {entry['kind']} takes no {foreign}; its options are {sorted(kind.options)}")
    queries = entry.get("queries")
    if kind.queries and queries is not None and int(queries) < kind.min_queries:
        raise ValueError(f"{entry['kind']} needs queries >= {kind.min_queries} (Square's query budget), got {queries}")


def queries_of(entry: Mapping[str, Any]) -> int:
    """An entry's Square query budget: its own, or its kind's default (0 for kinds without one)."""
    queries = entry.get("queries")
    return kind_of(entry["kind"]).queries if queries is None else int(queries)


def forward_units(attack: Mapping[str, Any], n_classes: int, clean: float = 1.0, robust: float = 1.0) -> float:
    """Expected forward-equivalent passes per test image of one attack entry, its final prediction included.

    `clean` is the fraction of images classified correctly, `robust` the fraction the attack leaves
    correct: Square and the restarts only work on the images still correct, Square stops on an image
    once fooled, and AutoAttack runs each attack only on the images the earlier ones left. With the
    defaults (every image correct and robust) it is the most the attack can cost.
    """
    kind = kind_of(attack["kind"])
    steps = attack.get("steps") or kind.steps
    restarts = attack.get("restarts") or kind.restarts
    return kind.cost(steps, restarts, queries_of(attack), n_classes, clean, robust)


def _pgd_settings(entry: Mapping[str, Any]) -> tuple[float, int, float, str, int]:
    """A PGD entry's (eps, steps, step_size, norm, seed) with the defaults `dpaat.attacks.AttackSpec` fills in."""
    pgd = KINDS["pgd"]
    eps = float(entry["eps"])
    steps = int(entry.get("steps") or pgd.steps)
    step_size = entry.get("step_size")
    step_size = pgd.step_size(eps, steps) if step_size is None else float(step_size)
    return eps, steps, step_size, entry.get("norm") or pgd.norm, int(entry.get("seed") or 0)


# The earlier stages of one attack's run that a config entry can be: a best-of-k PGD's first
# random start; AutoAttack's first attack (APGD-CE on every image) and its white-box attacks.
Stage = Literal["first_start", "first_attack", "white_box"]


def _option(entry: Mapping[str, Any], key: str, default: Any) -> Any:  # noqa: ANN401 - a config value
    """An entry's option, its default when absent or None (config entries and `AttackSpec` fields alike)."""
    value = entry.get(key)
    return default if value is None else value


def _autoattack_settings(entry: Mapping[str, Any]) -> tuple[float, int, str, int]:
    """(eps, steps, norm, seed) of an AutoAttack entry, or of an APGD entry as AutoAttack's first attack."""
    kind = KINDS["autoattack"]
    return float(entry["eps"]), int(_option(entry, "steps", kind.steps)), _option(entry, "norm", kind.norm), int(
        _option(entry, "seed", 0)
    )


def _is_autoattack(entry: Mapping[str, Any], *, with_square: bool | None = None) -> bool:
    return entry.get("kind") == "autoattack" and (with_square is None or (queries_of(entry) > 0) == with_square)


def _is_apgd_ce(entry: Mapping[str, Any]) -> bool:
    """APGD-CE with one restart: what AutoAttack runs first, on every image."""
    return entry.get("kind") == "apgd" and _option(entry, "loss", "ce") == "ce" and int(_option(entry, "restarts", 1)) == 1


def _is_pgd(entry: Mapping[str, Any], restarts: Callable[[int], bool]) -> bool:
    return entry.get("kind") == "pgd" and restarts(int(_option(entry, "restarts", 0)))


# Per stage: (what the entry read off is, what the attack whose run gives it is, the settings both share).
_STAGES: tuple[tuple[Stage, Callable[[Mapping[str, Any]], bool], Callable[[Mapping[str, Any]], bool], Callable], ...] = (
    ("white_box", lambda e: _is_autoattack(e, with_square=False), lambda e: _is_autoattack(e, with_square=True),
     _autoattack_settings),
    ("first_start", lambda e: _is_pgd(e, lambda k: k == 1), lambda e: _is_pgd(e, lambda k: k > 1), _pgd_settings),
    ("first_attack", _is_apgd_ce, _is_autoattack, _autoattack_settings),
)  # fmt: skip


def read_off(attacks: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, Stage]]:
    """{entry's name: (the attack whose run gives it, which stage)}: entries the evaluation reads off
    another attack's run instead of attacking the images again (`dpaat.evaluation`).

    - a PGD with `restarts: 1` is the first start of a PGD with more restarts and otherwise the
      same settings (the same seed draws the same first start);
    - an AutoAttack with `queries: 0` (its white-box attacks alone) is the white-box part of an
      AutoAttack with a Square budget and otherwise the same settings;
    - an APGD-CE with one restart at an AutoAttack's eps, norm, steps and seed is that
      AutoAttack's first attack, which runs on every image as it would alone.

    An entry read off a run gives no run of its own, and each run gives each stage once.
    """
    found: dict[str, tuple[str, Stage]] = {}
    for stage, is_part, is_whole, settings in _STAGES:
        for part, entry in attacks.items():
            if part in found or not is_part(entry):
                continue
            for whole, other in attacks.items():
                if (
                    whole != part
                    and whole not in found
                    and (whole, stage) not in found.values()
                    and is_whole(other)
                    and settings(other) == settings(entry)
                ):
                    found[part] = (whole, stage)
                    break
    return found


def stages_of(attacks: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[Stage, str]]:
    """{attack's name: {stage: the entry read off it}} for every attack whose run gives other entries."""
    runs: dict[str, dict[Stage, str]] = {}
    for name, (whole, stage) in read_off(attacks).items():
        runs.setdefault(whole, {})[stage] = name
    return runs
