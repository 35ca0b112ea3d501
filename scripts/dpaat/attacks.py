"""Batched white-box attacks in pixel space with a per-sample perturbation budget.

One implementation serves every attack: `pgd` takes `eps` as a float or an (N,)
tensor, so the fixed-eps attacks of the paper and the per-sample eps of AMAT and
DPAAT share a code path. Inputs live in [0, 1]; models normalise internally.
`AttackSpec` names the test attacks as config values and `run_attack` applies one to a
whole dataset: the paper's FGSM, I-FGSM and PGD (ours), and the stronger, independent
attacks of the robustness literature from torchattacks: APGD (CE or DLR loss), the
black-box Square attack, and an AutoAttack ensemble valid for few classes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from dpaat.attack_kinds import (
    OPTIONAL_KEYS,
    AttackKind,
    Norm,
    Stage,
    autoattack_targets,
    autoattack_version,
    check_entry,
    kind_of,
)
from dpaat.predict import device_images

log = logging.getLogger(__name__)

ApgdLoss = Literal["ce", "dlr"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode (BatchNorm statistics frozen) and restore its mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _check_images(x: Tensor, y: Tensor) -> None:
    """Reject inputs the attacks would silently mangle (the [0, 1] clamp would move them)."""
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor in [0, 1], got {x.dtype}; convert uint8 images with x.float() / 255")
    if x.ndim < 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (N, ...) and y (N,), got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if x.numel():
        lo, hi = torch.stack(torch.aminmax(x)).tolist()
        if lo < 0 or hi > 1:
            raise ValueError(
                f"x must lie in [0, 1] (pixel space; models normalise internally), got [{lo:.4g}, {hi:.4g}]; "
                "pass un-normalised images"
            )


def _per_sample(eps: float | Tensor, x: Tensor, name: str = "eps") -> Tensor:
    """Return eps as an (N, 1, 1, 1) tensor on x's device, broadcastable against x."""
    # Detached: a per-sample eps computed from losses (DPAAT) must not pull the attack into the graph.
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).detach()
    if eps_t.ndim == 0:
        eps_t = eps_t.expand(x.shape[0])
    if eps_t.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a float or a tensor of shape ({x.shape[0]},), got {tuple(eps_t.shape)}")
    if not bool((torch.isfinite(eps_t) & (eps_t >= 0)).all()):
        raise ValueError(f"{name} must be finite and non-negative")
    return eps_t.view(-1, *([1] * (x.ndim - 1)))


def _flat_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm, shaped (N, 1, 1, 1)."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.ndim - 1)))


def _safe_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm with exact zeros replaced by 1, so t / norm is t's unit vector or 0.

    No additive epsilon: input gradients of an untrained net can be ~1e-10, where an
    epsilon such as torchattacks' 1e-10 would silently shorten the step.
    """
    norm = _flat_norm(t)
    return torch.where(norm > 0, norm, torch.ones_like(norm))


def project(delta: Tensor, eps: Tensor, norm: Norm) -> Tensor:
    """Project each sample's perturbation onto its own eps ball (`eps` broadcastable, e.g. (N,1,1,1))."""
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, eps), -eps)
    # min(1, eps/||delta||) is exactly 0 when eps = 0 and never NaN when delta = 0.
    factor = torch.clamp(eps / _safe_norm(delta), max=1.0)
    return delta * factor


def sample_in_ball(x: Tensor, eps: Tensor, norm: Norm, generator: torch.Generator | None = None) -> Tensor:
    """Draw a perturbation uniformly in each sample's eps ball (`eps` shaped (N,1,...,1))."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * eps
    # Uniform in the L2 ball: a uniform direction times radius eps * U^(1/d).
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = direction / _safe_norm(direction)
    d = x[0].numel()
    u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
    radius = eps * u.pow(1.0 / d).view_as(eps)
    return direction * radius


# An attack objective: (logits, labels) -> the batch's summed loss to ascend.
Objective = Callable[[Tensor, Tensor], Tensor]


def summed_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """The default attack objective: the cross-entropy summed over the batch."""
    return F.cross_entropy(logits, y, reduction="sum")


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, objective: Objective = summed_cross_entropy) -> Tensor:
    """Gradient of the summed `objective` (cross-entropy by default) with respect to the input only."""
    x = x.detach().requires_grad_(True)
    loss = objective(model(x), y)
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
    objective: Objective = summed_cross_entropy,
    start_std: float = 0.0,
) -> Tensor:
    """Projected gradient ascent on the cross-entropy (or `objective`) inside per-sample eps balls.

    L2: `delta += step * g/||g||`, then `delta *= min(1, eps/||delta||)`.
    Linf: `delta += step * sign(g)`, then clamp to [-eps, eps]. Always x+delta in [0, 1].
    `step_size` may be a tensor like `eps` (e.g. a fraction of each sample's eps).
    The start is x, a uniform draw in the ball (`random_start`), or x + start_std·N(0, I)
    projected into the ball (TRADES' and MART's reference start, `start_std` 0.001).
    The model runs in eval mode (mode restored after); parameters' .grad is untouched.
    """
    if norm not in get_args(Norm):
        raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if start_std < 0 or (start_std > 0 and random_start):
        raise ValueError(f"start_std must be >= 0 and excludes random_start, got {start_std} with {random_start}")
    _check_images(x, y)
    x = x.detach()
    eps_t = _per_sample(eps, x)
    step_t = _per_sample(step_size, x, "step_size")
    if random_start:
        x_adv = (x + sample_in_ball(x, eps_t, norm, generator)).clamp_(0, 1)
    elif start_std > 0:
        noise = start_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = (x + project(noise, eps_t, norm)).clamp_(0, 1)
    else:
        x_adv = x.clone()
    with eval_mode(model):
        for _ in range(steps):
            grad = input_gradient(model, x_adv, y, objective)
            if norm == "linf":
                delta = torch.addcmul(x_adv - x, grad.sign(), step_t)
            else:
                # The per-sample scale step/||g|| is an (N,1,1,1) tensor: one fused pass over the images.
                delta = torch.addcmul(x_adv - x, grad, step_t / _safe_norm(grad))
            x_adv = (x + project(delta, eps_t, norm)).clamp_(0, 1)
    return x_adv


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor) -> Tensor:
    """Fast gradient sign method: one Linf sign step of size eps."""
    return pgd(model, x, y, eps=eps, steps=1, step_size=eps, norm="linf")


def ifgsm(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor, steps: int, step_size: float | Tensor
) -> Tensor:
    """Iterative FGSM (BIM): `steps` Linf sign steps from x, projected to the eps box."""
    return pgd(model, x, y, eps=eps, steps=steps, step_size=step_size, norm="linf")


def pgd_restarts(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    norm: Norm,
    restarts: int,
    seed: int = 0,
    keep_first: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """PGD from `restarts` random starts in the eps ball: per image, the first run that fools the model.

    Images no run fools keep the first run's result; each later run attacks only the images
    the runs before it left unfooled. Seeded by `seed` (a generator of its own), so the first
    run is the same for any number of restarts: with `keep_first`, returns (the first run's
    images, the best of all runs), what `restarts: 1` and this call would give separately.
    """
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    generator = torch.Generator(device=x.device).manual_seed(seed)
    attack = dict(eps=eps, steps=steps, step_size=step_size, norm=norm, random_start=True, generator=generator)
    best = pgd(model, x, y, **attack)
    first = best.clone() if keep_first else None
    with eval_mode(model), torch.no_grad():
        fooled = model(best).argmax(dim=1) != y
    for _ in range(restarts - 1):
        left = (~fooled).nonzero().flatten()
        if len(left) == 0:
            break
        x_adv = pgd(model, x[left], y[left], **attack)
        with eval_mode(model), torch.no_grad():
            wrong = model(x_adv).argmax(dim=1) != y[left]
        best[left[wrong]] = x_adv[wrong]
        fooled[left[wrong]] = True
    return (first, best) if keep_first else best


_TA_NORM = {"l2": "L2", "linf": "Linf"}


class _ContiguousGradient(torch.autograd.Function):
    """The identity, whose backward hands on the gradient as a contiguous (NCHW) tensor."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # noqa: ANN401 - torch's protocol
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # noqa: ANN401 - torch's protocol
        return grad.contiguous()


class _NCHWModel(nn.Module):
    """`model` as torchattacks assumes it: its input gradients come back contiguous (NCHW).

    torchattacks (Square, APGD, FAB, PGDL2, ...) flattens images and input gradients with
    `.view(batch, -1)`, which only a contiguous tensor allows; the input gradient of a
    channels_last model is channels_last even for an NCHW input (the convolutions'
    backward follows the weights' layout).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(_ContiguousGradient.apply(x))


@contextmanager
def _torchattacks_call(model: nn.Module, x: Tensor) -> Iterator[tuple[Any, nn.Module, Tensor]]:
    """torchattacks, `model` and `x` as torchattacks needs them, with the global RNG state kept.

    Yields (torchattacks, the model in eval mode handing back NCHW input gradients, x as a
    contiguous NCHW tensor): the boundary where the GPU's channels_last batches and models
    meet torchattacks' `.view` calls. torchattacks reseeds torch's global generator, hence
    the forked RNG. Imported here, not at the top: the training path never needs it.
    """
    import torchattacks

    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    # eval(): torchattacks restores the mode it found, and a wrapper is built in train mode.
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        yield torchattacks, _NCHWModel(model).eval(), x.contiguous()


def _n_classes(model: nn.Module, x: Tensor, need: int, what: str) -> int:
    """The model's number of outputs, checked against what an attack's loss needs."""
    with eval_mode(model), torch.no_grad():
        n = int(model(x[:1]).shape[1])
    if n < need:
        raise ValueError(f"{what} needs at least {need} classes (its DLR loss uses the third-largest logit), got {n}")
    return n


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int,
    norm: Norm = "l2",
    loss: ApgdLoss = "ce",
    restarts: int = 1,
    seed: int = 0,
) -> Tensor:
    """Auto-PGD (Croce & Hein 2020) with the cross-entropy or the DLR loss: torchattacks.APGD."""
    _check_images(x, y)
    if loss == "dlr":
        _n_classes(model, x, 3, "APGD-DLR")
    with _torchattacks_call(model, x) as (torchattacks, model, x):
        attack = torchattacks.APGD(
            model, norm=_TA_NORM[norm], eps=eps, steps=steps, n_restarts=restarts, seed=seed, loss=loss
        )
        return attack(x, y).detach()


def square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    queries: int,
    norm: Norm = "l2",
    restarts: int = 1,
    seed: int = 0,
) -> Tensor:
    """The black-box Square attack (Andriushchenko et al. 2020; margin loss, no gradients): torchattacks.Square."""
    _check_images(x, y)
    with _torchattacks_call(model, x) as (torchattacks, model, x):
        attack = torchattacks.Square(
            model, norm=_TA_NORM[norm], eps=eps, n_queries=queries, n_restarts=restarts, seed=seed, loss="margin"
        )
        return attack(x, y).detach()


class CascadeRun(NamedTuple):
    """What one cascade run gives: the final images, the images after the first `keep_after` attacks
    (None when not asked for), and the first attack's own output (it attacks every image, as alone)."""

    final: Tensor
    kept: Tensor | None
    first_output: Tensor


def cascade(model: nn.Module, attacks: list[Any], x: Tensor, y: Tensor, *, keep_after: int | None = None) -> CascadeRun:
    """torchattacks.MultiAttack's cascade: each attack on the images the earlier ones left correct.

    `final` is what MultiAttack returns (an image no attack fooled keeps its input), and `kept`
    what MultiAttack of the first `keep_after` attacks would have returned. `model` is the
    attacks' own model (it predicts each attack's images, as MultiAttack does).
    """
    final = x.clone()
    left = torch.arange(len(x), device=x.device)
    kept = None
    first_output = x
    for done, attack in enumerate(attacks, start=1):
        if len(left):
            adversarial = attack(x[left], y[left])
            if done == 1:
                first_output = adversarial
            with torch.no_grad():
                # torch.max, as MultiAttack: ties go where its argmax sends them.
                wrong = torch.max(model(adversarial), 1)[1] != y[left]
            final[left[wrong]] = adversarial[wrong]
            left = left[~wrong]
        if done == keep_after:
            kept = final.clone()
    return CascadeRun(final, kept, first_output)


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int,
    queries: int,
    norm: Norm = "l2",
    seed: int = 0,
    stages: Sequence[Stage] = (),
) -> Tensor | tuple[dict[Stage, Tensor], Tensor]:
    """AutoAttack: its standard version with at least four classes, else our untargeted ensemble.

    Standard (Croce and Hein): APGD-CE, then APGD-T and FAB-T targeting the nine most likely
    other classes (all others when fewer), then Square, each on the images the earlier ones
    missed. APGD-T's targeted DLR loss needs a fourth-largest logit, so with two or three
    classes the ensemble is APGD-CE, APGD-DLR (three classes and up), FAB and Square: with
    so few classes the untargeted attacks already aim at every other class. `queries` 0
    leaves Square out (the white-box attacks alone). With `stages`, returns ({stage: images},
    final images) from one run: "first_attack" is APGD-CE's output (what `apgd` with loss ce
    and one restart gives), "white_box" the images after the white-box attacks.
    """
    _check_images(x, y)
    if "white_box" in stages and not queries:
        raise ValueError("AutoAttack without Square (queries 0) has no stage before Square")
    n_classes = _n_classes(model, x, 2, "AutoAttack")
    norm_name = _TA_NORM[norm]
    log.info("AutoAttack, %s version (%d classes)", autoattack_version(n_classes), n_classes)
    with _torchattacks_call(model, x) as (torchattacks, model, x):
        common = {"norm": norm_name, "eps": eps, "seed": seed}
        if autoattack_version(n_classes) == "standard":
            # torchattacks targets n_classes - 1 classes: pass one more than the standard version's targets.
            targets = autoattack_targets(n_classes) + 1
            attacks = [
                torchattacks.APGD(model, steps=steps, n_restarts=1, loss="ce", **common),
                torchattacks.APGDT(model, steps=steps, n_restarts=1, n_classes=targets, **common),
                torchattacks.FAB(model, steps=steps, n_restarts=1, multi_targeted=True, n_classes=targets, **common),
            ]
        else:
            attacks = [torchattacks.APGD(model, steps=steps, n_restarts=1, loss="ce", **common)]
            if n_classes >= 3:
                attacks.append(torchattacks.APGD(model, steps=steps, n_restarts=1, loss="dlr", **common))
            attacks.append(torchattacks.FAB(model, steps=steps, n_restarts=1, n_classes=n_classes, **common))
        white_box = len(attacks)
        if queries:
            attacks.append(torchattacks.Square(model, n_queries=queries, n_restarts=1, **common))
        run = cascade(model, attacks, x, y, keep_after=white_box if "white_box" in stages else None)
        if not stages:
            return run.final.detach()
        given = {"first_attack": run.first_output, "white_box": run.kept}
        return {stage: given[stage].detach() for stage in stages}, run.final.detach()


@dataclass(frozen=True)
class AttackSpec:
    """One test attack, fully resolved: kind, budget, steps, step size, norm and the kind's own options.

    `restarts`: random-start runs for pgd (0 = one run from x), APGD/Square restarts;
    `loss`: APGD's ce or dlr; `queries`: Square's query budget; `seed`: stochastic attacks' seed.
    """

    kind: AttackKind
    eps: float
    steps: int
    step_size: float
    norm: Norm
    restarts: int = 0
    loss: ApgdLoss = "ce"
    queries: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        kind = kind_of(self.kind)
        if self.norm not in get_args(Norm):
            raise ValueError(f"attack norm must be 'l2' or 'linf', got {self.norm!r}")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"attack eps must be finite and >= 0, got {self.eps}")
        if not (math.isfinite(self.step_size) and self.step_size >= 0):
            raise ValueError(f"attack step_size must be finite and >= 0, got {self.step_size}")
        if self.steps < 1:
            raise ValueError(f"attack steps must be >= 1, got {self.steps}")
        if kind.linf_only and self.norm != "linf":
            raise ValueError(f"{self.kind} is a Linf attack; for an L2 attack use kind: pgd with norm: l2")
        if kind.one_step and (self.steps != 1 or self.step_size != self.eps):
            raise ValueError(f"{self.kind} is one step of size eps; drop steps/step_size or use kind: ifgsm")
        if self.loss not in get_args(ApgdLoss):
            raise ValueError(f"attack loss must be 'ce' or 'dlr', got {self.loss!r}")
        if self.restarts < kind.restarts:  # the default is also the least a kind accepts
            raise ValueError(f"{self.kind} restarts must be >= {kind.restarts}, got {self.restarts}")
        if kind.queries and self.queries < kind.min_queries:
            raise ValueError(
                f"{self.kind} needs queries >= {kind.min_queries} (Square's query budget), got {self.queries}"
            )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> AttackSpec:
        """Build from a config entry {kind, eps, steps?, step_size?, norm?, restarts?, loss?, queries?, seed?, name?}.

        Defaults (SPEC): steps 1 (APGD/AutoAttack 100); step_size eps for fgsm, eps/4 for ifgsm,
        2.5*eps/steps for pgd; norm linf for fgsm/ifgsm, l2 otherwise; restarts 0 for pgd, 1 for
        apgd/square; loss ce; queries 5000. Keys another kind's options (e.g. loss for pgd) are errors;
        None values (the schema's defaults) count as absent.
        """
        allowed = {"name", "kind", "eps", "norm"} | OPTIONAL_KEYS  # name is the caller's label
        unknown = set(cfg) - allowed
        if unknown:
            raise ValueError(f"unknown attack config keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        missing = {"kind", "eps"} - set(cfg)
        if missing:
            raise ValueError(f"attack config needs {sorted(missing)}, got {dict(cfg)}")
        kind = kind_of(cfg["kind"])
        check_entry(cfg)
        given = {key: value for key, value in cfg.items() if value is not None}
        eps = float(cfg["eps"])
        steps = int(given.get("steps", kind.steps))
        if steps < 1:
            raise ValueError(f"attack steps must be >= 1, got {steps}")
        step_size = given.get("step_size")
        return cls(
            kind=cfg["kind"],
            eps=eps,
            steps=steps,
            step_size=float(kind.step_size(eps, steps) if step_size is None else step_size),
            norm=given.get("norm") or kind.norm,
            restarts=int(given.get("restarts", kind.restarts)),
            loss=given.get("loss", "ce"),
            queries=int(given.get("queries", kind.queries)),
            seed=int(given.get("seed", 0)),
        )

    def perturb_with_stages(
        self, model: nn.Module, x: Tensor, y: Tensor, stages: Sequence[Stage]
    ) -> tuple[dict[Stage, Tensor], Tensor]:
        """({stage: its images}, the final images) from one run (`dpaat.attack_kinds.read_off`): a PGD
        with restarts gives its first random start, AutoAttack its APGD-CE and its white-box attacks."""
        if self.kind == "pgd" and self.restarts >= 1 and tuple(stages) == ("first_start",):
            first, best = pgd_restarts(
                model, x, y, eps=self.eps, steps=self.steps, step_size=self.step_size, norm=self.norm,
                restarts=self.restarts, seed=self.seed, keep_first=True,
            )  # fmt: skip
            return {"first_start": first}, best
        if self.kind == "autoattack" and set(stages) <= {"first_attack", "white_box"}:
            return autoattack(model, x, y, eps=self.eps, steps=self.steps, queries=self.queries, norm=self.norm,
                              seed=self.seed, stages=stages)  # fmt: skip
        raise ValueError(f"{self} has no stages {list(stages)} (PGD with restarts: first_start; AutoAttack: first_attack, "
                         "white_box)")  # fmt: skip

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for one batch (deterministic: zero start or seeded random starts)."""
        return PERTURB[self.kind](self, model, x, y)


# How each attack kind perturbs a batch, by kind name (dpaat.attack_kinds.KINDS holds the rest of a kind).
Perturbation = Callable[[AttackSpec, nn.Module, Tensor, Tensor], Tensor]
PERTURB: dict[str, Perturbation] = {}


def perturbs(kind: str) -> Callable[[Perturbation], Perturbation]:
    """Register the decorated function as kind `kind`'s perturbation."""

    def register(function: Perturbation) -> Perturbation:
        kind_of(kind)
        PERTURB[kind] = function
        return function

    return register


@perturbs("fgsm")
def _fgsm(attack: AttackSpec, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return fgsm(model, x, y, eps=attack.eps)


@perturbs("ifgsm")
def _ifgsm(attack: AttackSpec, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return ifgsm(model, x, y, eps=attack.eps, steps=attack.steps, step_size=attack.step_size)


@perturbs("pgd")
def _pgd(attack: AttackSpec, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    budget = {"eps": attack.eps, "steps": attack.steps, "step_size": attack.step_size, "norm": attack.norm}
    if attack.restarts:
        return pgd_restarts(model, x, y, **budget, restarts=attack.restarts, seed=attack.seed)
    return pgd(model, x, y, **budget)


@perturbs("apgd")
def _apgd(attack: AttackSpec, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return apgd(model, x, y, eps=attack.eps, steps=attack.steps, norm=attack.norm, loss=attack.loss, restarts=attack.restarts,
                seed=attack.seed)  # fmt: skip


@perturbs("square")
def _square(attack: AttackSpec, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return square(model, x, y, eps=attack.eps, queries=attack.queries, norm=attack.norm, restarts=attack.restarts,
                  seed=attack.seed)  # fmt: skip


@perturbs("autoattack")
def _autoattack(attack: AttackSpec, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return autoattack(model, x, y, eps=attack.eps, steps=attack.steps, queries=attack.queries, norm=attack.norm,
                      seed=attack.seed)  # fmt: skip


def run_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    batch_size: int,
    device: torch.device | str,
    *,
    progress: bool = False,
    stages: Sequence[Stage] = (),
) -> Tensor | tuple[dict[Stage, Tensor], Tensor]:
    """Attack a dataset batch by batch on `device` (where `model` must already be).

    `x` is uint8 or float in [0, 1], `y` the labels; returns float32 adversarial images
    (same shape as x) on the CPU; with `stages`, ({stage: its images}, the final images) of
    `AttackSpec.perturb_with_stages`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} images but y has {len(y)} labels")
    device = torch.device(device)
    param = next(model.parameters(), None)
    if param is not None and (param.device.type != device.type or device.index not in (None, param.device.index)):
        raise ValueError(
            f"model is on {param.device} but the attack runs on {device}; call model.to({str(device)!r}) first"
        )
    batches = zip(x.split(batch_size), y.split(batch_size))
    kept: dict[Stage, list[Tensor]] = {stage: [] for stage in stages}
    out = []
    for xb, yb in tqdm(batches, total=math.ceil(len(x) / batch_size), disable=not progress, desc=spec.kind):
        xb, yb = device_images(xb, device), yb.to(device)
        if stages:
            staged, final = spec.perturb_with_stages(model, xb, yb, stages)
            for stage, images in staged.items():
                kept[stage].append(images.float().cpu())
        else:
            final = spec.perturb(model, xb, yb)
        out.append(final.float().cpu())
    if stages:
        return {stage: _cat(parts, x.shape) for stage, parts in kept.items()}, _cat(out, x.shape)
    return _cat(out, x.shape)


def _cat(batches: list[Tensor], shape: torch.Size) -> Tensor:
    """The adversarial batches (float32, on the CPU) as one tensor."""
    return torch.cat(batches) if batches else torch.empty(shape, dtype=torch.float32)
