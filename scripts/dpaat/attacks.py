"""Batched white-box attacks in pixel space with a per-sample perturbation budget.

One implementation serves every attack: `pgd` takes `eps` as a float or an (N,)
tensor, so the fixed-eps attacks of the paper and the per-sample eps of AMAT and
DPAAT share a code path. Inputs live in [0, 1]; models normalise internally.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Norm = Literal["l2", "linf"]

# Guards a division by a gradient or perturbation norm that can be exactly zero.
_TINY = 1e-12


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode (BatchNorm statistics frozen) and restore its mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _per_sample(eps: float | Tensor, x: Tensor) -> Tensor:
    """Return eps as an (N, 1, 1, 1) tensor on x's device, broadcastable against x."""
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if eps_t.ndim == 0:
        eps_t = eps_t.expand(x.shape[0])
    if eps_t.shape != (x.shape[0],):
        raise ValueError(f"eps must be a float or a tensor of shape ({x.shape[0]},), got {tuple(eps_t.shape)}")
    if bool((eps_t < 0).any()):
        raise ValueError("eps must be non-negative")
    return eps_t.view(-1, *([1] * (x.ndim - 1)))


def _flat_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm, shaped (N, 1, 1, 1)."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.ndim - 1)))


def project(delta: Tensor, eps: Tensor, norm: Norm) -> Tensor:
    """Project each sample's perturbation onto its own eps ball."""
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, eps), -eps)
    # min(1, eps/||delta||) is exactly 0 when eps = 0 and never NaN when delta = 0.
    factor = torch.clamp(eps / _flat_norm(delta).clamp_min(_TINY), max=1.0)
    return delta * factor


def sample_in_ball(x: Tensor, eps: Tensor, norm: Norm, generator: torch.Generator | None = None) -> Tensor:
    """Draw a perturbation uniformly in each sample's eps ball."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps
    # Uniform in the L2 ball: a uniform direction times radius eps * U^(1/d).
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = direction / _flat_norm(direction).clamp_min(_TINY)
    d = x[0].numel()
    u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
    radius = eps * u.pow(1.0 / d).view_as(eps)
    return direction * radius


def input_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Gradient of the summed cross-entropy with respect to the input only."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    steps: int,
    step_size: float | Tensor,
    norm: Norm = "l2",
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient ascent on the cross-entropy inside per-sample eps balls.

    L2: `delta += step * g/||g||`, then `delta *= min(1, eps/||delta||)`.
    Linf: `delta += step * sign(g)`, then clamp to [-eps, eps]. Always x+delta in [0, 1].
    `step_size` may be a tensor like `eps` (e.g. a fraction of each sample's eps).
    """
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    x = x.detach()
    eps_t = _per_sample(eps, x)
    step_t = _per_sample(step_size, x)
    with eval_mode(model):
        delta = sample_in_ball(x, eps_t, norm, generator) if random_start else torch.zeros_like(x)
        delta = (x + delta).clamp(0, 1) - x
        for _ in range(steps):
            grad = input_gradient(model, x + delta, y)
            if norm == "linf":
                delta = delta + step_t * grad.sign()
            else:
                delta = delta + step_t * grad / _flat_norm(grad).clamp_min(_TINY)
            delta = project(delta, eps_t, norm)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor) -> Tensor:
    """Fast gradient sign method: one Linf sign step of size eps."""
    return pgd(model, x, y, eps=eps, steps=1, step_size=eps, norm="linf")


def ifgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor, steps: int, step_size: float | Tensor) -> Tensor:
    """Iterative FGSM (BIM): `steps` Linf sign steps from x, projected to the eps box."""
    return pgd(model, x, y, eps=eps, steps=steps, step_size=step_size, norm="linf")
