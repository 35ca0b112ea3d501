"""Training methods (STD, AT, SAT, AMAT, DPAAT, ablations D-A, D-B, baselines TRADES, MART) as loss strategies.

Every method is a `TrainingMethod` whose `loss(model, x, y, index)` turns one
mini-batch into the loss to minimise; the shared loop in `dpaat.training` does the
rest. Attacks run in eval mode (`dpaat.attacks.pgd` sees to it); the forward passes
that feed the loss run in the model's own (train) mode. Clean and adversarial
batches go through the model separately, so BatchNorm normalises each with its own
statistics, as in the usual SAT/TRADES implementations. Definitions follow the
"Training methods" section of SPEC.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dpaat.attacks import Objective, eval_mode, pgd, summed_cross_entropy
from dpaat.method_kinds import METHOD_KINDS
from dpaat.settings import AdversarySettings, TrainingSettings

Norm = Literal["l2", "linf"]

# Floor of |ΔL_avg| in DPAAT's γ (SPEC: the mean loss change can be ~0).
_DELTA_LOSS_FLOOR = 1e-8
# TRADES' and MART's inner attacks start at x + 0.001·N(0, I), as both reference implementations do.
REFERENCE_START_STD = 0.001


@dataclass(frozen=True)
class Adversary:
    """The training threat model: K-step PGD with a fixed (or per-sample) eps."""

    norm: Norm
    eps: float
    steps: int
    step_size: float
    random_start: bool = False
    # Per-sample eps: scale each sample's step by eps_i/eps (else every sample steps step_size).
    scale_step: bool = True

    def __post_init__(self) -> None:
        if self.norm not in ("l2", "linf"):
            raise ValueError(f"adversary.norm must be 'l2' or 'linf', got {self.norm!r}")
        if self.eps < 0 or self.steps < 1 or self.step_size <= 0:
            raise ValueError(
                f"adversary needs eps >= 0, steps >= 1 and step_size > 0, got eps={self.eps}, "
                f"steps={self.steps}, step_size={self.step_size}"
            )

    @classmethod
    def from_settings(cls, settings: AdversarySettings) -> Adversary:
        """The adversary `training.adversary` describes."""
        return cls(**asdict(settings))

    def attack(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        eps: Tensor | None = None,
        generator: torch.Generator | None = None,
        objective: Objective = summed_cross_entropy,
        start_std: float = 0.0,
    ) -> Tensor:
        """PGD inside the fixed eps ball, or inside per-sample balls `eps` (an (N,) tensor).

        `objective` replaces the cross-entropy PGD ascends (TRADES: a KL divergence);
        `start_std` > 0 starts at x + start_std·N(0, I) instead of x (or the random start).

        With per-sample eps and `scale_step` the step is scaled by eps_i/eps, so the same
        number of steps covers each sample's ball as it covers the fixed one (a 2·eps ball
        is reached, a tiny ball is not overshot and oscillated in).
        """
        random_start = self.random_start and not start_std
        options = {"generator": generator, "objective": objective, "start_std": start_std}
        if eps is None:
            return pgd(
                model,
                x,
                y,
                eps=self.eps,
                steps=self.steps,
                step_size=self.step_size,
                norm=self.norm,
                random_start=random_start,
                **options,
            )
        if self.scale_step and self.eps > 0:
            step = self.step_size * eps / self.eps
        else:
            step = torch.full_like(eps, self.step_size)
        return pgd(
            model, x, y, eps=eps, steps=self.steps, step_size=step, norm=self.norm, random_start=random_start, **options
        )

    def perturbation_norms(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-sample ‖x_adv − x‖ in the adversary's norm, shape (N,)."""
        delta = (x_adv - x).flatten(1)
        return delta.abs().amax(dim=1) if self.norm == "linf" else delta.norm(p=2, dim=1)


def synchronization_loss(logits_clean: Tensor, logits_adv: Tensor) -> Tensor:
    """L_syn = Jensen–Shannon divergence (nats) of the two softmaxes, mean over the batch.

    The intent of the paper's Eq. 11 (0 when the predictions agree, at most ln 2);
    the printed formula is ln 2 − JS, see SPEC.md. Gradients flow through both inputs.
    """
    # At least float32 (bf16 logits under autocast), float64 kept.
    dtype = torch.promote_types(logits_clean.dtype, torch.float32)
    log_p = F.log_softmax(logits_clean.to(dtype), dim=1)
    log_q = F.log_softmax(logits_adv.to(dtype), dim=1)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    # kl_div(input=log m, target=log p, log_target) = p·(log p − log m), 0 where p = 0.
    kl_pm = F.kl_div(log_m, log_p, reduction="none", log_target=True).sum(dim=1)
    kl_qm = F.kl_div(log_m, log_q, reduction="none", log_target=True).sum(dim=1)
    return (0.5 * (kl_pm + kl_qm)).mean()


def kl_divergence(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Per-sample KL(p ‖ q) in nats of the two softmaxes, shape (N,); gradients flow through both."""
    dtype = torch.promote_types(logits_p.dtype, torch.float32)
    log_p = F.log_softmax(logits_p.to(dtype), dim=1)
    log_q = F.log_softmax(logits_q.to(dtype), dim=1)
    # kl_div(input=log q, target=log p, log_target) = p·(log p − log q), 0 where p = 0.
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)


def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """TRADES' outer loss: CE(f(x), y) + β·KL(f(x) ‖ f(x_adv)), both averaged over the batch (batchmean)."""
    dtype = torch.promote_types(logits_clean.dtype, torch.float32)
    return F.cross_entropy(logits_clean.to(dtype), y) + beta * kl_divergence(logits_clean, logits_adv).mean()


def mart_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, lam: float) -> Tensor:
    """MART's loss, averaged over the batch: BCE(p(x_adv), y) + λ·KL(p(x) ‖ p(x_adv))·(1 − p_y(x)).

    BCE = CE(p(x_adv), y) − log(1 − max_{k≠y} p_k(x_adv)), the second term computed in log
    space as log Σ_{j≠k} p_j, so it needs no 1e-4 offset. Gradients flow through every
    term, the weight 1 − p_y(x) included, as in the reference code.
    """
    dtype = torch.promote_types(logits_clean.dtype, torch.float32)
    log_q = F.log_softmax(logits_adv.to(dtype), dim=1)
    true_class = F.one_hot(y, log_q.shape[1]).bool()
    # The most likely wrong class of the adversarial prediction, and log(1 − its probability).
    runner_up = log_q.masked_fill(true_class, -math.inf).argmax(dim=1)
    log_rest = log_q.masked_fill(F.one_hot(runner_up, log_q.shape[1]).bool(), -math.inf).logsumexp(dim=1)
    boosted_ce = F.nll_loss(log_q, y, reduction="none") - log_rest
    p_true = F.softmax(logits_clean.to(dtype), dim=1).gather(1, y[:, None]).squeeze(1)
    return (boosted_ce + lam * kl_divergence(logits_clean, logits_adv) * (1 - p_true)).mean()


def dpaat_epsilons(
    delta_loss: Tensor, perturbation_norms: Tensor, eps: float, eps_max: float, gamma_cap: float | None = 1.0
) -> Tensor:
    """Per-sample eps of DPAAT (Eq. 15 with SPEC's guards): shrink fragile samples, grow stable ones.

    γ_i = eps·min(gamma_cap, |ΔL_i − ΔL_avg| / max(|ΔL_avg|, 1e-8)) (no min when gamma_cap
    is None); eps_i = ‖δ_i‖ − γ_i when ΔL_i > ΔL_avg, else ‖δ_i‖ + γ_i; clamped to [0, eps_max].
    """
    avg = delta_loss.mean()
    ratio = (delta_loss - avg).abs() / avg.abs().clamp_min(_DELTA_LOSS_FLOOR)
    gamma = eps * (ratio if gamma_cap is None else ratio.clamp(max=gamma_cap))
    eps_i = torch.where(delta_loss > avg, perturbation_norms - gamma, perturbation_norms + gamma)
    return eps_i.clamp(0.0, eps_max)


def printed_synchronization_loss(logits_clean: Tensor, logits_adv: Tensor) -> Tensor:
    """Eq. 11 as printed, −½ Σ_c [p log(p/(p+q)) + q log(q/(p+q))] = ln 2 − JS(p‖q), mean over the batch.

    Largest (ln 2) when the predictions agree: kept only to train with the paper's formula
    as printed (training.synchronization: printed), see SPEC.md.
    """
    return math.log(2.0) - synchronization_loss(logits_clean, logits_adv)


def amat_update(
    eps_values: Tensor, adv_loss: Tensor, perturbation_norms: Tensor, xi: float, delta_eps: float, eps_max: float
) -> Tensor:
    """AMAT's eps update (Eq. 5): grow by Δε below the loss threshold ξ, else average with ‖δ‖; clamp."""
    grown = eps_values + delta_eps
    averaged = 0.5 * (eps_values + perturbation_norms)
    return torch.where(adv_loss < xi, grown, averaged).clamp(0.0, eps_max)


Stats = dict[str, Tensor]
# Every method by its config name, filled as the classes below are defined.
METHODS: dict[str, type[TrainingMethod]] = {}


class TrainingMethod:
    """A training objective over one mini-batch; stateful methods also keep state across epochs.

    A subclass with a `name` registers itself in `METHODS`; its `dpaat.method_kinds` entry
    says which settings it reads and what an epoch costs.
    """

    name: ClassVar[str]
    # Whether the method trains against an adversary (its validation loss is then adversarial).
    adversarial: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name not in METHOD_KINDS:
                raise TypeError(f"method {cls.name!r} needs its entry in dpaat.method_kinds.METHOD_KINDS")
            METHODS[cls.name] = cls

    def __init__(self, settings: TrainingSettings) -> None:
        self.settings = settings
        self.adversary = Adversary.from_settings(settings.adversary)

    def synchronization(self, logits_clean: Tensor, logits_adv: Tensor) -> Tensor:
        """L_syn in the configured form: JS divergence (SPEC), or Eq. 11 as printed."""
        if self.settings.synchronization == "printed":
            return printed_synchronization_loss(logits_clean, logits_adv)
        return synchronization_loss(logits_clean, logits_adv)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Stats]:
        """Loss of the batch (x in [0,1], labels y, dataset positions index) and detached stats.

        stats may hold "eps": the (N,) per-sample eps the batch was attacked with.
        """
        raise NotImplementedError

    def prepare(self, num_samples: int, device: torch.device | str) -> None:
        """Called by the loop before training on `num_samples` images: check and move any state."""

    def state_dict(self) -> dict[str, Tensor]:
        """State to checkpoint (tensors only, so weights-only loading works)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore `state_dict()` output."""
        if state:
            raise ValueError(f"method {self.name} keeps no state but the checkpoint holds {sorted(state)}")

    def describe(self) -> dict[str, Any]:
        """The settings this method actually trains with, for the run record."""
        adv = self.adversary
        return {
            "method": self.name,
            "adversarial": self.adversarial,
            "norm": adv.norm,
            "eps": adv.eps,
            "steps": adv.steps,
            "step_size": adv.step_size,
            "random_start": adv.random_start,
            "scale_step": adv.scale_step,
        }

    @staticmethod
    def _clean_and_adv_ce(
        model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-sample CE on clean and adversarial inputs (train-mode passes) with their logits."""
        logits_clean = model(x)
        logits_adv = model(x_adv)
        ce_clean = F.cross_entropy(logits_clean, y, reduction="none")
        ce_adv = F.cross_entropy(logits_adv, y, reduction="none")
        return ce_clean, ce_adv, logits_clean, logits_adv


class Standard(TrainingMethod):
    """STD: CE(f(x), y)."""

    name = "std"
    adversarial = False

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Stats]:
        """Clean cross-entropy."""
        return F.cross_entropy(model(x), y), {}


class MadryAT(TrainingMethod):
    """AT (Madry): CE(f(x_adv), y)."""

    name = "at"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Stats]:
        """Adversarial cross-entropy at the fixed eps."""
        x_adv = self.adversary.attack(model, x, y)
        return F.cross_entropy(model(x_adv), y), {}


class SAT(TrainingMethod):
    """SAT (Goodfellow): α·CE(f(x_adv), y) + (1−α)·CE(f(x), y)."""

    name = "sat"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Stats]:
        """Mix of adversarial and clean CE at the fixed eps."""
        x_adv = self.adversary.attack(model, x, y)
        ce_clean, ce_adv, _, _ = self._clean_and_adv_ce(model, x, x_adv, y)
        alpha = self.settings.alpha
        return alpha * ce_adv.mean() + (1 - alpha) * ce_clean.mean(), {}

    def describe(self) -> dict[str, Any]:
        """Adds α."""
        return {**super().describe(), "alpha": self.settings.alpha}


class SynchronizedSAT(SAT):
    """D-B (ablation): SAT + β·L_syn at the fixed eps (synchronisation without adaptation)."""

    name = "d_b"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Stats]:
        """SAT's loss plus β times the JS divergence of clean and adversarial predictions."""
        x_adv = self.adversary.attack(model, x, y)
        ce_clean, ce_adv, logits_clean, logits_adv = self._clean_and_adv_ce(model, x, x_adv, y)
        alpha, beta = self.settings.alpha, self.settings.beta
        loss = alpha * ce_adv.mean() + (1 - alpha) * ce_clean.mean()
        return loss + beta * self.synchronization(logits_clean, logits_adv), {}

    def describe(self) -> dict[str, Any]:
        """Adds β and the L_syn form."""
        return {**super().describe(), "beta": self.settings.beta, "synchronization": self.settings.synchronization}


class AMAT(TrainingMethod):
    """AMAT: a per-sample eps per training image, updated after each attack on it.

    Loss ½(CE(f(x_adv), y) + CE(f(x), y)). The "adversarial loss" the update compares
    with ξ is the per-sample CE of the loss's own forward pass on x_adv (no extra pass).
    """

    name = "amat"

    def __init__(self, settings: TrainingSettings) -> None:
        super().__init__(settings)
        xi = settings.amat.xi
        if xi is None:
            raise ValueError(
                "AMAT needs its loss threshold ξ: set training.amat.xi, or fix it with "
                "settings.with_amat_xi(mean_clean_loss(...)) of the STD model of the same architecture"
            )
        if not math.isfinite(xi):
            raise ValueError(f"AMAT's ξ must be a finite number, got {xi}")
        self.xi = float(xi)
        self.delta_eps = settings.amat.delta_eps_fraction * self.adversary.eps
        self.eps_max = settings.amat.eps_max_factor * self.adversary.eps
        # One eps per training image, indexed by dataset position: sized by prepare().
        self.eps_store = torch.empty(0)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Stats]:
        """Attack each sample in its own ball, update the store, return ½(CE_adv + CE_clean)."""
        eps_i = self.eps_store[index]
        x_adv = self.adversary.attack(model, x, y, eps=eps_i)
        ce_clean, ce_adv, _, _ = self._clean_and_adv_ce(model, x, x_adv, y)
        norms = self.adversary.perturbation_norms(x_adv, x)
        adv_loss = ce_adv.detach().float()
        self.eps_store[index] = amat_update(eps_i, adv_loss, norms, self.xi, self.delta_eps, self.eps_max)
        return 0.5 * (ce_adv.mean() + ce_clean.mean()), {"eps": eps_i}

    def prepare(self, num_samples: int, device: torch.device | str) -> None:
        """One eps per training image, starting at the fixed eps, beside the data so indexing needs no transfer."""
        if num_samples < 1:
            raise ValueError(f"AMAT needs a training set (num_samples >= 1), got {num_samples}")
        self.eps_store = torch.full((num_samples,), self.adversary.eps, dtype=torch.float32).to(device)

    def state_dict(self) -> dict[str, Tensor]:
        """The eps store (on the CPU)."""
        return {"eps_store": self.eps_store.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore the eps store; its size must match the training set."""
        store = state["eps_store"]
        if store.shape != self.eps_store.shape:
            raise ValueError(f"AMAT eps store has shape {tuple(store.shape)}, expected {tuple(self.eps_store.shape)}")
        self.eps_store = store.to(self.eps_store.device, self.eps_store.dtype).clone()

    def describe(self) -> dict[str, Any]:
        """Adds ξ, Δε and eps_max."""
        return {**super().describe(), "xi": self.xi, "delta_eps": self.delta_eps, "eps_max": self.eps_max}


class DPAAT(TrainingMethod):
    """DPAAT (Algorithm 1): fixed-eps probe attack, per-sample eps from ΔL, second attack, SAT + β·L_syn.

    ΔL_i is measured in eval mode (as the attack measures loss) on the probe x_adv0, so
    the probe moves no BatchNorm statistics. The second attack starts cold from x with
    the same K steps, each scaled by eps_i/eps, so it can reach every new ball's surface.
    """

    name = "dpaat"

    def __init__(self, settings: TrainingSettings) -> None:
        super().__init__(settings)
        self.eps_max = settings.dpaat.eps_max_factor * self.adversary.eps

    @property
    def beta(self) -> float:
        """Weight of L_syn."""
        return self.settings.beta

    def epsilons(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Steps 1-4 of Algorithm 1: the per-sample eps of the batch."""
        x_adv0 = self.adversary.attack(model, x, y)
        with torch.no_grad(), eval_mode(model):
            ce = F.cross_entropy(model(torch.cat([x, x_adv0])), torch.cat([y, y]), reduction="none").float()
        ce_clean, ce_adv0 = ce.chunk(2)
        norms = self.adversary.perturbation_norms(x_adv0, x)
        return dpaat_epsilons(ce_adv0 - ce_clean, norms, self.adversary.eps, self.eps_max, self.settings.dpaat.gamma_cap)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Stats]:
        """α·CE_adv + (1−α)·CE_clean + β·L_syn on the per-sample-eps attack."""
        eps_i = self.epsilons(model, x, y)
        x_adv = self.adversary.attack(model, x, y, eps=eps_i)
        ce_clean, ce_adv, logits_clean, logits_adv = self._clean_and_adv_ce(model, x, x_adv, y)
        alpha = self.settings.alpha
        loss = alpha * ce_adv.mean() + (1 - alpha) * ce_clean.mean()
        if self.beta:
            loss = loss + self.beta * self.synchronization(logits_clean, logits_adv)
        return loss, {"eps": eps_i}

    def describe(self) -> dict[str, Any]:
        """Adds α, β, eps_max, the γ cap and the L_syn form."""
        return {
            **super().describe(),
            "alpha": self.settings.alpha,
            "beta": self.beta,
            "eps_max": self.eps_max,
            "gamma_cap": self.settings.dpaat.gamma_cap,
            "synchronization": self.settings.synchronization,
        }


class DPAATAdaptationOnly(DPAAT):
    """D-A (ablation): DPAAT with β = 0 (perturbation adaptation without synchronisation)."""

    name = "d_a"

    @property
    def beta(self) -> float:
        """Always 0."""
        return 0.0

    def describe(self) -> dict[str, Any]:
        """DPAAT's, without the L_syn form (β = 0: there is no L_syn)."""
        details = super().describe()
        del details["synchronization"]
        return details


class TRADES(TrainingMethod):
    """TRADES (Zhang et al. 2019): CE(f(x), y) + β·KL(f(x) ‖ f(x_adv)), x_adv maximising the KL.

    The inner PGD ascends Σ_i KL(p(x_i) ‖ p(x'_i)) against the clean prediction of an
    eval-mode pass, from x + 0.001·N(0, I), with the training adversary's norm, eps,
    steps and step size. β is training.trades.beta.
    """

    name = "trades"

    def adversarial_examples(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The inner maximisation: PGD on Σ_i KL(p(x_i) ‖ p(x'_i)) in the adversary's ball around x."""
        with torch.no_grad(), eval_mode(model):
            logits_clean = model(x)
        log_p_clean = F.log_softmax(logits_clean.to(torch.promote_types(logits_clean.dtype, torch.float32)), dim=1)

        def kl_to_clean(logits: Tensor, _: Tensor) -> Tensor:
            log_q = F.log_softmax(logits.to(log_p_clean.dtype), dim=1)
            return F.kl_div(log_q, log_p_clean, reduction="sum", log_target=True)

        return self.adversary.attack(model, x, y, objective=kl_to_clean, start_std=REFERENCE_START_STD)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Stats]:
        """Attack the KL term, then CE on x plus β times the batch-mean KL on the attack."""
        x_adv = self.adversarial_examples(model, x, y)
        return trades_loss(model(x), model(x_adv), y, self.settings.trades.weight), {}

    def describe(self) -> dict[str, Any]:
        """Adds β and the start."""
        # The reference start replaces the adversary's random start.
        return {
            **super().describe(),
            "random_start": False,
            "start_std": REFERENCE_START_STD,
            "beta": self.settings.trades.weight,
        }


class MART(TrainingMethod):
    """MART (Wang et al. 2020): BCE on x_adv + λ·KL(p(x) ‖ p(x_adv))·(1 − p_y(x)), x_adv by PGD on CE.

    The attack is the training adversary from x + 0.001·N(0, I) (the reference start);
    λ is training.mart.lambda.
    """

    name = "mart"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Stats]:
        """Attack the CE, then MART's misclassification-aware loss."""
        x_adv = self.adversary.attack(model, x, y, start_std=REFERENCE_START_STD)
        return mart_loss(model(x), model(x_adv), y, self.settings.mart.weight), {}

    def describe(self) -> dict[str, Any]:
        """Adds λ and the start."""
        return {
            **super().describe(),
            "random_start": False,
            "start_std": REFERENCE_START_STD,
            "lambda": self.settings.mart.weight,
        }


def build_method(settings: TrainingSettings) -> TrainingMethod:
    """The training method `settings.method` (std, at, sat, amat, dpaat, d_a, d_b, trades or mart).

    AMAT also needs ξ: training.amat.xi, or `settings.with_amat_xi(...)` from the STD model.
    """
    return METHODS[settings.method](settings)
