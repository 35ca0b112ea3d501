"""The training methods, one registry entry each, without torch (the plan and the resource model read them).

`METHOD_KINDS` says which `training` settings each method reads beyond the schedule every
method shares (so a change reruns exactly its jobs, `dpaat.settings`) and what an epoch
costs in forward passes; `dpaat.methods` holds the losses, each class registering itself
by its `name`. Adding a method: its entry here, its class there, its name and settings in
the schema (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodKind:
    """`reads`: the `training` keys the method's result depends on beyond the schedule;
    `train_units(K)`: forward passes per training image and epoch with a K-step adversary
    (an input-gradient step counting 2)."""

    reads: tuple[str, ...]
    train_units: Callable[[int], int]


METHOD_KINDS: Mapping[str, MethodKind] = {
    "std": MethodKind((), lambda k: 3),
    "at": MethodKind((), lambda k: 2 * k + 3),
    "sat": MethodKind(("alpha",), lambda k: 2 * k + 6),
    "amat": MethodKind(("amat",), lambda k: 2 * k + 6),
    "dpaat": MethodKind(("alpha", "beta", "synchronization", "dpaat"), lambda k: 4 * k + 8),
    # DPAAT with β = 0: no L_syn, so neither β nor its form matters.
    "d_a": MethodKind(("alpha", "dpaat"), lambda k: 4 * k + 8),
    "d_b": MethodKind(("alpha", "beta", "synchronization"), lambda k: 2 * k + 6),
    # TRADES: a no-grad clean pass for the KL target, then as SAT; MART: as SAT.
    "trades": MethodKind(("trades",), lambda k: 2 * k + 7),
    "mart": MethodKind(("mart",), lambda k: 2 * k + 6),
}
