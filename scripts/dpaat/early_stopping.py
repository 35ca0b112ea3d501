"""Early stopping on the validation loss: the best full-phase epoch and the patience count.

Only the full phase counts: the best full-phase epoch by validation loss (adversarial CE
under the training adversary for AT methods, clean CE for STD) is kept, training stops
after `patience` epochs without a strict improvement, and the best weights are restored.
The record is plain data, so a checkpoint holds it as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn


def cpu_state(module: nn.Module) -> dict[str, Tensor]:
    """Detached CPU copy of a module's state dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@dataclass
class RunState:
    """The loop's bookkeeping: epochs done, history and early-stopping state."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, Tensor] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False

    def record(self, row: dict[str, Any], model: nn.Module, patience: int) -> None:
        """Append an epoch; in the full phase, track the best weights and the patience count."""
        self.epoch = row["epoch"]
        self.history.append(row)
        if row["phase"] != "full":
            return
        if row["val_loss"] < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.bad_epochs = row["val_loss"], row["epoch"], 0
            self.best_state = cpu_state(model)
        else:
            self.bad_epochs += 1
        self.stopped_early = self.bad_epochs >= patience

    def restore_best(self, model: nn.Module) -> None:
        """Load the best full-phase weights into `model` (nothing when no full epoch ran)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
