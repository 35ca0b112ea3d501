"""The paper's claims as data: `claims.yaml` beside this module, parsed and checked into `Claim`s.

Each claim expands into paired comparisons of two *arms* (a method under an attack) on the
same test images, archs and seeds; `dpaat.verdicts` tests them and gives each its verdict.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from dpaat.paper_results import ALL_GROUP, ARCH_GROUPS, TABLE1, TABLE2

CLAIMS_FILE = Path(__file__).with_name("claims.yaml")
# not_below: each of `methods` is at least `baseline` (with no margin, decided like greater:
# supported only when each is significantly above, contradicted when one is significantly below).
RELATIONS = ("greater", "equal", "not_below")
# Whose claim it is: the paper's, or ours (the baselines TRADES and MART, which the paper never ran).
ORIGINS = ("paper", "ours")
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


def group_archs(group: str, available: Iterable[str]) -> list[str]:
    """The archs of a paper group (all = every arch) among `available`, in the paper's order."""
    available = list(available)
    if group == ALL_GROUP[0]:
        order = [a for _, _, _, members in ARCH_GROUPS for a in members]
        return [a for a in order if a in available] + sorted(set(available) - set(order))
    (members,) = [m for gid, _, _, m in ARCH_GROUPS if gid == group]
    return [a for a in members if a in available]
