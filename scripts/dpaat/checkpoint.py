"""Training checkpoints: a run's fingerprint, and the atomic save and trusted restore of its state.

A checkpoint holds everything the next epoch depends on (weights, optimiser, method
state, RNG states, the early-stopping record; the best weights only when they differ
from the model's), so a run killed at any point and resumed ends with exactly the
weights of an uninterrupted run on the CPU. Its fingerprint is the run's identity: the
train job's params (`TrainingSettings.params()`, exactly what the rules pass, so
execution settings never enter it), the method's resolved details (AMAT's ξ), the
seed, the data and the initial weights. A checkpoint that cannot be read, or whose
fingerprint differs, is stale: it is ignored with a warning and training starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from dpaat.early_stopping import RunState, cpu_state
from dpaat.io import save_torch
from dpaat.methods import TrainingMethod

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2


def _tensor_digest(hasher: Any, tensor: Tensor) -> None:
    """Feed a tensor's raw bytes to a hash (reinterpreted as bytes: no dtype conversion)."""
    hasher.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def fingerprint(method: TrainingMethod, seed: int, model: nn.Module, splits: Iterable[Tensor]) -> str:
    """Identity of a run: a checkpoint from any other run must not be resumed."""
    identity = {
        "format": CHECKPOINT_FORMAT,
        "seed": seed,
        "method": method.settings.method,
        "params": method.settings.params(),
        "details": method.describe(),
    }
    hasher = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        hasher.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        _tensor_digest(hasher, tensor)
    for tensor in splits:
        hasher.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        _tensor_digest(hasher, tensor)
    return hasher.hexdigest()


def rng_state(shuffle: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """Every RNG the next epoch draws from (shuffling, dropout, random starts)."""
    state = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Tensor], shuffle: torch.Generator, device: torch.device) -> None:
    """Restore `rng_state` output."""
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class Checkpoint:
    """Where a run's checkpoint lives and the fingerprint that makes it this run's."""

    path: Path
    fingerprint: str

    def load(self) -> dict[str, Any] | None:
        """The checkpoint if it belongs to this run, else None (with a warning why)."""
        if not self.path.exists():
            return None
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # any unreadable file is untrusted, whatever the reason
            logger.warning(
                "ignoring unreadable checkpoint %s (%s: %s); training from scratch",
                *(self.path, type(err).__name__, err),
            )
            return None
        if not isinstance(blob, dict) or blob.get("fingerprint") != self.fingerprint:
            logger.warning(
                "ignoring checkpoint %s: it belongs to another run (settings, seed, data or initial weights "
                "differ); training from scratch",
                self.path,
            )
            return None
        return blob

    def save(
        self,
        *,
        model: nn.Module,
        run_state: RunState,
        finished: bool,
        optimizer: torch.optim.Optimizer,
        phase: str,
        method: TrainingMethod,
        rng: dict[str, Tensor],
    ) -> None:
        """Write the state after an epoch atomically (the best weights once, when they are the model's)."""
        best_is_model = run_state.best_state is not None and (finished or run_state.best_epoch == run_state.epoch)
        record = {**vars(run_state), "best_state": None if best_is_model else run_state.best_state}
        save_torch(
            {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint,
                "run_state": record,
                "best_is_model": best_is_model,
                "model": cpu_state(model),
                "optimizer": optimizer.state_dict(),
                "optimizer_phase": phase,
                "method": method.state_dict(),
                "rng": rng,
            },
            self.path,
        )


def restore(blob: Mapping[str, Any], model: nn.Module, method: TrainingMethod) -> RunState:
    """Load a trusted checkpoint's weights and method state; its early-stopping record."""
    model.load_state_dict(blob["model"])
    method.load_state_dict(blob["method"])
    run_state = RunState(**blob["run_state"])
    if blob.get("best_is_model"):  # saved once, as the model's weights
        run_state.best_state = blob["model"]
    return run_state
