"""The training methods: L_syn, DPAAT's and AMAT's eps rules, and each method's loss."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from scipy.spatial.distance import jensenshannon
from torch import nn

from dpaat.attacks import pgd
from dpaat.methods import (
    METHODS,
    Adversary,
    TrainingMethod,
    amat_update,
    build_method,
    dpaat_epsilons,
    printed_synchronization_loss,
    synchronization_loss,
)
from dpaat.settings import TrainingSettings, deep_merge

SCHEMA = Path(__file__).resolve().parents[1] / "config" / "schema" / "config.schema.yaml"
EPS = 0.3


def training_mapping(**overrides) -> dict:
    """The schema's training settings with a 3-step adversary and `overrides` (partial sections merge)."""
    return deep_merge({"adversary": {"steps": 3}}, overrides)


def build(name: str, mapping: dict, num_samples: int | None = None, xi: float | None = None) -> TrainingMethod:
    """Method `name` with `mapping`'s settings (ξ fixed to `xi`), prepared for `num_samples` images when given."""
    method = build_method(TrainingSettings.from_mapping(name, mapping).with_amat_xi(xi))
    if num_samples is not None:
        method.prepare(num_samples, "cpu")
    return method


class TinyNet(nn.Module):
    """Normalises inside, no BatchNorm or dropout: train and eval mode compute the same function."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 6 * 6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv((x - self.mean) / self.std)).flatten(1))


@pytest.fixture
def batch() -> tuple[TinyNet, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyNet()
    x = torch.rand(6, 3, 6, 6)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return model, x, y, torch.arange(6)


# ---------------------------------------------------------------- synchronization loss


def test_synchronization_loss_matches_scipy_jensen_shannon():
    torch.manual_seed(1)
    a, b = torch.randn(5, 4, dtype=torch.float64), 3 * torch.randn(5, 4, dtype=torch.float64)
    p, q = F.softmax(a, 1).numpy(), F.softmax(b, 1).numpy()
    # scipy returns the JS *distance* sqrt(JS); with base e its square is JS in nats.
    expected = np.mean([jensenshannon(p[i], q[i], base=math.e) ** 2 for i in range(5)])
    assert synchronization_loss(a, b).item() == pytest.approx(expected, rel=1e-6)


def test_synchronization_loss_hand_worked_two_class_cases():
    half = torch.tensor([[0.0, 0.0]])
    certain_first = torch.tensor([[0.0, -200.0]])
    certain_second = torch.tensor([[-200.0, 0.0]])
    # p = (1/2, 1/2), q = (1, 0): m = (3/4, 1/4), JS = ½·½ln(4/3) + ½·ln(4/3) = ¾ ln(4/3).
    assert synchronization_loss(half, certain_first).item() == pytest.approx(0.75 * math.log(4 / 3), rel=1e-6)
    # Disjoint supports reach the bound ln 2; equal predictions give 0.
    assert synchronization_loss(certain_first, certain_second).item() == pytest.approx(math.log(2), rel=1e-6)
    assert synchronization_loss(half, half).item() == 0.0


def test_synchronization_loss_is_zero_for_equal_and_bounded_by_ln2():
    torch.manual_seed(2)
    a = 10 * torch.randn(64, 5)
    assert synchronization_loss(a, a.clone()).item() == pytest.approx(0.0, abs=1e-7)
    per_sample = torch.stack([synchronization_loss(a[i : i + 1], -a[i : i + 1]) for i in range(64)])
    assert bool((per_sample <= math.log(2) + 1e-6).all()) and bool((per_sample > 0).all())


def test_synchronization_loss_grows_as_distributions_part():
    values = [
        synchronization_loss(torch.tensor([[0.0, t]]), torch.tensor([[0.0, -t]])).item() for t in (0, 0.5, 1, 2, 4, 8)
    ]
    assert values[0] == 0.0
    assert all(later > earlier for earlier, later in zip(values, values[1:]))
    assert values[-1] < math.log(2)


def test_synchronization_loss_gradients_flow_through_both_branches():
    torch.manual_seed(3)
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(synchronization_loss, (a, b))
    synchronization_loss(a, b).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


# ---------------------------------------------------------------- DPAAT's eps rule (Eq. 15)


def test_dpaat_epsilons_hand_worked_batch():
    # ΔL = [1, 3, 2]: avg 2; |ΔL−avg|/avg = [0.5, 0.5, 0] → γ = [0.15, 0.15, 0].
    # Sample 0 is stable (grow), 1 fragile (shrink), 2 at the mean (stable, γ = 0).
    eps_i = dpaat_epsilons(torch.tensor([1.0, 3.0, 2.0]), torch.tensor([0.3, 0.3, 0.25]), eps=0.3, eps_max=0.6)
    assert torch.allclose(eps_i, torch.tensor([0.45, 0.15, 0.25]))


def test_dpaat_epsilons_mean_change_near_zero_caps_gamma_at_eps():
    # ΔL_avg = 0: the paper divides by 0; the cap makes γ = eps exactly.
    eps_i = dpaat_epsilons(torch.tensor([-1.0, 1.0]), torch.tensor([0.3, 0.3]), eps=0.3, eps_max=0.6)
    assert torch.allclose(eps_i, torch.tensor([0.6, 0.0]))
    assert torch.isfinite(eps_i).all()


def test_dpaat_epsilons_negative_mean_change_uses_its_magnitude():
    # ΔL = [-3, -1]: avg -2, |avg| = 2 → γ = 0.3·0.5 = 0.15; -1 > -2 is the fragile one.
    eps_i = dpaat_epsilons(torch.tensor([-3.0, -1.0]), torch.tensor([0.2, 0.2]), eps=0.3, eps_max=0.6)
    assert torch.allclose(eps_i, torch.tensor([0.35, 0.05]))


def test_dpaat_epsilons_clamps_to_zero_and_eps_max():
    # ΔL = [0, 0, 3]: avg 1; γ = 0.3·min(1, [1, 1, 2]) = 0.3 for all.
    eps_i = dpaat_epsilons(torch.tensor([0.0, 0.0, 3.0]), torch.tensor([0.5, 0.1, 0.1]), eps=0.3, eps_max=0.6)
    assert torch.allclose(eps_i, torch.tensor([0.6, 0.4, 0.0]))  # 0.8 → 0.6, 0.4, -0.2 → 0


def test_dpaat_epsilons_equal_changes_keep_the_perturbation_norms():
    norms = torch.tensor([0.3, 0.2, 0.1])
    assert torch.equal(dpaat_epsilons(torch.full((3,), 0.7), norms, eps=0.3, eps_max=0.6), norms)


def test_without_the_cap_gamma_follows_eq_15_as_printed():
    # ΔL = [-1, 1, 3]: avg 1, |ΔL−avg|/avg = [2, 0, 2]. Capped γ = 0.3·[1, 0, 1]; as printed 0.3·[2, 0, 2].
    # eps_max 1.2 so the clamp does not hide the difference: stable 0.3+0.3 vs 0.3+0.6.
    args = (torch.tensor([-1.0, 1.0, 3.0]), torch.full((3,), 0.3))
    assert torch.allclose(dpaat_epsilons(*args, eps=0.3, eps_max=1.2), torch.tensor([0.6, 0.3, 0.0]))
    assert torch.allclose(dpaat_epsilons(*args, eps=0.3, eps_max=1.2, gamma_cap=None), torch.tensor([0.9, 0.3, 0.0]))


def test_the_cap_changes_nothing_for_samples_between_zero_and_the_mean_change():
    # docs/differences.md: for 0 <= ΔL_i <= ΔL_avg the ratio is in [0, 1], so Eq. 15 as printed gives the same eps.
    g = torch.Generator().manual_seed(0)
    delta_loss = torch.rand(200, generator=g) ** 3 * 4  # skewed, all >= 0
    norms = 0.3 * (1 - 0.01 * torch.rand(200, generator=g))
    capped = dpaat_epsilons(delta_loss, norms, eps=0.3, eps_max=10.0)
    printed = dpaat_epsilons(delta_loss, norms, eps=0.3, eps_max=10.0, gamma_cap=None)
    stable = delta_loss <= delta_loss.mean()
    assert stable.sum() > 100 and torch.equal(capped[stable], printed[stable])
    # Skewed changes put most stable samples near 2·eps by the formula itself.
    assert float((capped[stable] > 1.5 * 0.3).float().mean()) > 0.5


def test_printed_synchronization_loss_is_eq_11_literally():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    p, q = a.softmax(1), b.softmax(1)
    eq11 = (-0.5 * (p * torch.log(p / (p + q)) + q * torch.log(q / (p + q))).sum(1)).mean()
    assert printed_synchronization_loss(a, b).item() == pytest.approx(eq11.item(), rel=1e-12)
    assert printed_synchronization_loss(a, a).item() == pytest.approx(math.log(2), rel=1e-12)


def test_synchronization_printed_is_used_by_dpaat_and_d_b(batch):
    model, x, y, index = batch
    for name in ("dpaat", "d_b"):
        js, _ = build(name, training_mapping(beta=2.0)).loss(model, x, y, index)
        printed, _ = build(name, training_mapping(beta=2.0, synchronization="printed")).loss(model, x, y, index)
        x_adv = fixed_pgd(model, x, y) if name == "d_b" else None
        if x_adv is not None:  # D-B's fixed-eps attack: the two losses differ by β·(ln 2 − 2·JS)
            sync = synchronization_loss(model(x), model(x_adv))
            assert (printed - js).item() == pytest.approx((2.0 * (math.log(2) - 2 * sync)).item(), rel=1e-5)
        assert printed.item() != pytest.approx(js.item())


# ---------------------------------------------------------------- AMAT's eps rule (Eq. 5)


def test_amat_update_hand_worked_samples():
    eps = torch.tensor([0.30, 0.30, 0.58, 0.10, 0.40])
    adv_loss = torch.tensor([0.1, 0.9, 0.1, 0.9, 0.5])  # ξ = 0.5: the last is not below it
    norms = torch.tensor([0.30, 0.20, 0.58, 0.00, 0.30])
    new = amat_update(eps, adv_loss, norms, xi=0.5, delta_eps=0.03, eps_max=0.6)
    # grow 0.30+0.03; average (0.30+0.20)/2; grow 0.61 → clamp 0.6; average 0.05; average 0.35.
    assert torch.allclose(new, torch.tensor([0.33, 0.25, 0.60, 0.05, 0.35]))


def test_amat_step_updates_only_the_attacked_samples(batch):
    model, x, y, _ = batch
    method = build("amat", training_mapping(), num_samples=10, xi=0.8)
    index = torch.tensor([7, 2, 9, 0, 4, 5])
    method.eps_store[index] = torch.tensor([0.3, 0.1, 0.5, 0.6, 0.0, 0.2])
    before = method.eps_store.clone()
    _, stats = method.loss(model, x, y, index)
    assert torch.equal(stats["eps"], before[index])
    # Reference: the same attack and CE, then Eq. 5 by hand.
    steps = 0.15 * before[index] / EPS
    x_adv = pgd(model, x, y, eps=before[index], steps=3, step_size=steps)
    ce_adv = F.cross_entropy(model(x_adv), y, reduction="none")
    norms = (x_adv - x).flatten(1).norm(dim=1)
    expected = torch.where(ce_adv < 0.8, before[index] + 0.03, (before[index] + norms) / 2).clamp(0, 0.6)
    assert torch.allclose(method.eps_store[index], expected, atol=1e-6)
    untouched = torch.tensor([1, 3, 6, 8])
    assert torch.equal(method.eps_store[untouched], before[untouched])


def test_amat_store_starts_at_eps_and_round_trips(batch):
    method = build("amat", training_mapping(), num_samples=10, xi=0.8)
    assert torch.equal(method.eps_store, torch.full((10,), EPS))
    method.eps_store[3] = 0.55
    other = build("amat", training_mapping(), num_samples=10, xi=0.8)
    other.load_state_dict(method.state_dict())
    assert torch.equal(other.eps_store, method.eps_store)
    with pytest.raises(ValueError, match="shape"):
        build("amat", training_mapping(), num_samples=4, xi=0.8).load_state_dict(method.state_dict())
    method.prepare(11, "cpu")  # a new training set starts afresh
    assert torch.equal(method.eps_store, torch.full((11,), EPS))


def test_amat_xi_comes_from_the_std_model_else_the_config_else_errors():
    with pytest.raises(ValueError, match="ξ"):
        build("amat", training_mapping())
    fixed = training_mapping(amat={"xi": 0.25})
    assert build("amat", fixed).xi == 0.25
    assert build("amat", fixed, xi=0.7).xi == 0.7
    with pytest.raises(ValueError, match="num_samples >= 1"):
        build("amat", fixed, num_samples=0)


# ---------------------------------------------------------------- each method's loss


def ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def fixed_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return pgd(model, x, y, eps=EPS, steps=3, step_size=0.15)


def test_std_at_sat_and_d_b_losses_follow_their_definitions(batch):
    model, x, y, index = batch
    cfg = training_mapping(alpha=0.3, beta=2.0)
    x_adv = fixed_pgd(model, x, y)
    expected = {
        "std": ce(model, x, y),
        "at": ce(model, x_adv, y),
        "sat": 0.3 * ce(model, x_adv, y) + 0.7 * ce(model, x, y),
        "d_b": 0.3 * ce(model, x_adv, y) + 0.7 * ce(model, x, y) + 2.0 * synchronization_loss(model(x), model(x_adv)),
    }
    for name, reference in expected.items():
        loss, stats = build(name, cfg).loss(model, x, y, index)
        assert loss.item() == pytest.approx(reference.item(), rel=1e-5), name
        assert stats == {}


def test_dpaat_loss_follows_algorithm_1(batch):
    model, x, y, index = batch
    cfg = training_mapping(alpha=0.6, beta=1.5)
    x_adv0 = fixed_pgd(model, x, y)
    delta_loss = F.cross_entropy(model(x_adv0), y, reduction="none") - F.cross_entropy(model(x), y, reduction="none")
    eps_i = dpaat_epsilons(delta_loss, (x_adv0 - x).flatten(1).norm(dim=1), eps=EPS, eps_max=2 * EPS)
    x_adv = pgd(model, x, y, eps=eps_i, steps=3, step_size=0.15 * eps_i / EPS)
    adapted = 0.6 * ce(model, x_adv, y) + 0.4 * ce(model, x, y)
    sync = synchronization_loss(model(x), model(x_adv))

    loss, stats = build("dpaat", cfg).loss(model, x, y, index)
    assert torch.allclose(stats["eps"], eps_i, atol=1e-6)
    assert loss.item() == pytest.approx((adapted + 1.5 * sync).item(), rel=1e-5)
    # D-A is DPAAT without L_syn whatever β says.
    loss_a, stats_a = build("d_a", cfg).loss(model, x, y, index)
    assert torch.allclose(stats_a["eps"], eps_i, atol=1e-6)
    assert loss_a.item() == pytest.approx(adapted.item(), rel=1e-5)


def test_dpaat_adapts_eps_per_sample_not_uniformly(batch):
    model, x, y, index = batch
    _, stats = build("dpaat", training_mapping()).loss(model, x, y, index)
    assert stats["eps"].shape == (6,)
    assert float(stats["eps"].std()) > 0
    assert bool(((stats["eps"] >= 0) & (stats["eps"] <= 2 * EPS)).all())


def test_methods_leave_parameter_gradients_to_the_caller(batch):
    model, x, y, index = batch
    for name in METHODS:
        method = build(name, training_mapping(), num_samples=6, xi=0.5)
        loss, _ = method.loss(model, x, y, index)
        assert all(p.grad is None for p in model.parameters()), name
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()), name
        model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------- adversary with per-sample eps


def test_per_sample_attack_scales_the_step_with_eps(batch):
    model, x, y, _ = batch
    adversary = Adversary(norm="l2", eps=EPS, steps=3, step_size=0.15)
    assert torch.equal(adversary.attack(model, x, y, eps=torch.full((6,), EPS)), adversary.attack(model, x, y))
    eps_i = torch.tensor([0.0, 0.1, 0.3, 0.45, 0.6, 0.2])
    x_adv = adversary.attack(model, x, y, eps=eps_i)
    assert torch.equal(x_adv[0], x[0])
    assert bool((adversary.perturbation_norms(x_adv, x) <= eps_i + 1e-5).all())


def test_scale_step_off_gives_every_sample_the_configured_step(batch):
    model, x, y, _ = batch
    eps_i = torch.tensor([0.05, 0.1, 0.3, 0.45, 0.6, 0.2])
    scaled = Adversary(norm="l2", eps=EPS, steps=3, step_size=0.15).attack(model, x, y, eps=eps_i)
    fixed = Adversary(norm="l2", eps=EPS, steps=3, step_size=0.15, scale_step=False).attack(model, x, y, eps=eps_i)
    assert torch.equal(scaled, pgd(model, x, y, eps=eps_i, steps=3, step_size=0.15 * eps_i / EPS))
    assert torch.equal(fixed, pgd(model, x, y, eps=eps_i, steps=3, step_size=torch.full((6,), 0.15)))
    assert not torch.equal(scaled, fixed)


def test_perturbation_norms_in_each_threat_model():
    x = torch.zeros(2, 3, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0], x_adv[0, 1, 1, 1] = 0.3, -0.4  # L2 0.5, Linf 0.4
    x_adv[1, 2, 0, 1] = 0.1
    assert torch.allclose(Adversary("l2", 0.3, 1, 0.1).perturbation_norms(x_adv, x), torch.tensor([0.5, 0.1]))
    assert torch.allclose(Adversary("linf", 0.3, 1, 0.1).perturbation_norms(x_adv, x), torch.tensor([0.4, 0.1]))


# ---------------------------------------------------------------- registry and config


def test_registry_covers_exactly_the_configurable_methods():
    schema = yaml.safe_load(SCHEMA.read_text())
    names = schema["properties"]["training"]["properties"]["methods"]["items"]["enum"]
    assert set(METHODS) == set(names)
    assert all(issubclass(cls, TrainingMethod) and cls.name == key for key, cls in METHODS.items())
    assert [name for name, cls in METHODS.items() if not cls.adversarial] == ["std"]


def test_settings_reject_unknown_methods_keys_and_norms():
    with pytest.raises(ValueError, match="unknown method 'pgd'"):
        build("pgd", training_mapping())
    with pytest.raises(KeyError, match="advesary"):
        build("at", training_mapping(advesary={"eps": 0.3}))
    with pytest.raises(ValueError, match="norm"):
        build("at", training_mapping(adversary={"norm": "l1"}))


def test_describe_records_the_settings_used():
    described = build("amat", training_mapping(), num_samples=3, xi=0.42).describe()
    assert described["method"] == "amat" and described["xi"] == 0.42
    assert described["delta_eps"] == pytest.approx(0.1 * EPS) and described["eps_max"] == pytest.approx(2 * EPS)
    assert build("d_a", training_mapping(beta=1.0)).describe()["beta"] == 0.0
