"""Counted work: the forward-equivalent passes a model actually makes, per phase of a job.

The unit is one image through the network once (a "forward-equivalent", as in
`dpaat.job_resources`). A forward pass of a batch of n images counts n. A backward pass
through it counts n more when the forward ran in eval mode (an attack's input gradient:
autograd skips the weights' gradients) and 2n when it ran in train mode (a training step
also computes every weight's gradient). So an attack step counts 2 per image and a
training step 3, the multiples the cost model uses. Backward passes are seen through a
gradient hook on the model's output, so one forward read by several backward passes
(FAB's per-class gradients) counts each of them.

The hooks only read shapes and return nothing: counting changes no result (tests check
it bit for bit). No torch import: hooks are registered on the module the caller passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

# The phase forward passes outside any `WorkCounter.phase` block are counted in.
OTHER = "other"


def _first_tensor(output: Any) -> Any:
    """The logits tensor of a model's output (InceptionV3 in train mode returns a tuple)."""
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


class WorkCounter:
    """Counts forward-equivalent passes of `model` per named phase (see the module's docstring)."""

    def __init__(self, model: Any) -> None:
        self.units: dict[str, int] = {}
        self._phase = OTHER
        self._handle = model.register_forward_hook(self._forward)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the passes made inside the block under `name` (added to what it already holds)."""
        outer, self._phase = self._phase, name
        try:
            yield
        finally:
            self._phase = outer

    def _add(self, phase: str, units: int) -> None:
        self.units[phase] = self.units.get(phase, 0) + units

    def _forward(self, module: Any, inputs: Any, output: Any) -> None:
        logits = _first_tensor(output)
        n = int(logits.shape[0])
        phase = self._phase
        self._add(phase, n)
        if logits.requires_grad:
            backward = 2 * n if module.training else n
            logits.register_hook(lambda grad: self._add(phase, backward))

    def close(self) -> None:
        """Remove the hook: the model runs as if never counted."""
        self._handle.remove()

    def record(self) -> dict[str, Any]:
        """The counts for a run record: forward-equivalents per phase, their total, and the unit's definition."""
        return {
            "unit": "forward-equivalent image passes (forward 1; backward 1 in eval mode, 2 in train mode)",
            "phases": dict(self.units),
            "total": sum(self.units.values()),
        }


def counted(work: WorkCounter | None, name: str) -> AbstractContextManager[None]:
    """`work.phase(name)`, or nothing when no counter is given."""
    return work.phase(name) if work is not None else nullcontext()
