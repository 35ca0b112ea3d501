"""The baselines TRADES and MART: their losses against float64 formulas, TRADES' inner attack,
β = 0, that training lowers their loss, and resume after a kill."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dpaat.attacks import pgd
from dpaat.methods import MART, TRADES, mart_loss, trades_loss
from test_methods import build as build_method
from test_methods import training_mapping as methods_mapping
from test_training import (
    RANDOM_START,
    Kill,
    assert_same_state,
    kill_after,
    run,
    training_mapping as loop_mapping,
    without_seconds,
)

EPS = 0.5


def training_mapping(**overrides) -> dict:
    """The schema's training settings with a 4-step L2 adversary of eps 0.5."""
    return methods_mapping(**{"adversary": {"eps": EPS, "steps": 4, "step_size": 0.25}, **overrides})


class RecordingLinear(nn.Module):
    """A hand-built float64 linear classifier on the flattened image that records its train-mode inputs.

    No BatchNorm or dropout, so train and eval mode compute the same function, and the
    recorded inputs are exactly what the loss's own forward passes saw (x, then x_adv).
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, record: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(weight))
        self.bias = nn.Parameter(torch.from_numpy(bias))
        self.record = record
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.record:
            self.seen.append(x.detach().clone())
        return x.flatten(1) @ self.weight.T + self.bias


def hand_built() -> tuple[RecordingLinear, torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """The model (3 classes on 3x2x2 images), a batch of 5 and the numpy weights behind it."""
    rng = np.random.default_rng(0)
    weight, bias = 3 * rng.standard_normal((3, 12)), rng.standard_normal(3)
    x = torch.from_numpy(rng.uniform(0.2, 0.8, (5, 3, 2, 2)))
    y = torch.tensor([0, 1, 2, 0, 2])
    return RecordingLinear(weight, bias), x, y, weight, bias


# ---------------------------------------------------------------- the formulas in numpy, float64


def np_logits(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1) @ weight.T + bias


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-sample KL(p ‖ q)."""
    return (p * (np.log(p) - np.log(q))).sum(axis=1)


def np_trades(z_clean: np.ndarray, z_adv: np.ndarray, y: np.ndarray, beta: float) -> float:
    p, q = np_softmax(z_clean), np_softmax(z_adv)
    ce = -np.log(p[np.arange(len(y)), y])
    return float(ce.mean() + beta * np_kl(p, q).mean())


def np_mart(z_clean: np.ndarray, z_adv: np.ndarray, y: np.ndarray, lam: float) -> float:
    p, q = np_softmax(z_clean), np_softmax(z_adv)
    rows = np.arange(len(y))
    wrong = q.copy()
    wrong[rows, y] = -1.0
    runner_up = wrong.argmax(axis=1)
    bce = -np.log(q[rows, y]) - np.log(1.0 - q[rows, runner_up])
    return float((bce + lam * np_kl(p, q) * (1.0 - p[rows, y])).mean())


# ---------------------------------------------------------------- the losses


@pytest.mark.parametrize("name", ["trades", "mart"])
def test_method_loss_equals_the_float64_formula_on_its_own_adversarial_batch(name):
    model, x, y, weight, bias = hand_built()
    method = build_method(name, training_mapping(trades={"beta": 2.5}, mart={"lambda": 4.0}))
    torch.manual_seed(0)
    loss, stats = method.loss(model, x, y, torch.arange(5))
    assert stats == {} and loss.dtype == torch.float64
    clean, adv = model.seen  # the loss's two train-mode passes
    assert torch.equal(clean, x)
    norms = (adv - x).flatten(1).norm(dim=1)
    assert bool((norms > 0.9 * EPS).all() and (norms <= EPS + 1e-12).all()), norms  # a real attack, in the ball
    z_clean, z_adv = np_logits(clean.numpy(), weight, bias), np_logits(adv.numpy(), weight, bias)
    formula = np_trades(z_clean, z_adv, y.numpy(), 2.5) if name == "trades" else np_mart(z_clean, z_adv, y.numpy(), 4.0)
    assert loss.item() == pytest.approx(formula, rel=1e-12)


def test_loss_functions_equal_the_formulas_on_random_logits():
    rng = np.random.default_rng(1)
    z_clean, z_adv = 4 * rng.standard_normal((7, 4)), 4 * rng.standard_normal((7, 4))
    y = rng.integers(0, 4, 7)
    a, b, labels = torch.from_numpy(z_clean), torch.from_numpy(z_adv), torch.from_numpy(y)
    assert trades_loss(a, b, labels, 6.0).item() == pytest.approx(np_trades(z_clean, z_adv, y, 6.0), rel=1e-12)
    assert mart_loss(a, b, labels, 6.0).item() == pytest.approx(np_mart(z_clean, z_adv, y, 6.0), rel=1e-12)


def test_mart_loss_is_the_reference_code_up_to_its_offsets():
    # mart.py's expression (argsort for the runner-up, 1.0001 and 1e-12 offsets, 1.0000001 weight) in float64.
    g = torch.Generator().manual_seed(2)
    logits, logits_adv = torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randn(
        8, 3, generator=g, dtype=torch.float64
    )
    y = torch.randint(0, 3, (8,), generator=g)
    adv_probs = F.softmax(logits_adv, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
    kl = (nat_probs * (torch.log(nat_probs + 1e-12) - torch.log(adv_probs + 1e-12))).sum(1)
    reference = loss_adv + 6.0 * (kl * (1.0000001 - true_probs)).mean()
    ours = mart_loss(logits, logits_adv, y, 6.0)
    # The offsets move the value by about 1e-4 / (1 − p) per sample.
    assert ours.item() == pytest.approx(reference.item(), abs=2e-3)
    assert ours.item() != reference.item()


def test_losses_have_gradients_through_both_passes():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1])
    for fn in (trades_loss, mart_loss):
        assert torch.autograd.gradcheck(lambda p, q: fn(p, q, y, 6.0), (a, b))
        a.grad = b.grad = None
        fn(a, b, y, 6.0).backward()
        assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_trades_with_beta_zero_is_the_clean_cross_entropy():
    model, x, y, weight, bias = hand_built()
    loss, _ = build_method("trades", training_mapping(trades={"beta": 0.0})).loss(model, x, y, torch.arange(5))
    p = np_softmax(np_logits(x.numpy(), weight, bias))
    assert loss.item() == pytest.approx(float(-np.log(p[np.arange(5), y.numpy()]).mean()), rel=1e-12)


# ---------------------------------------------------------------- the inner attacks


def test_trades_attack_increases_the_kl_term_and_stays_in_the_ball():
    model, x, y, weight, bias = hand_built()
    method = build_method("trades", training_mapping())
    torch.manual_seed(0)
    x_adv = method.adversarial_examples(model, x, y)
    p = np_softmax(np_logits(x.numpy(), weight, bias))
    delta = (x_adv - x).flatten(1)
    assert bool((delta.norm(dim=1) <= EPS + 1e-12).all()) and bool(((x_adv >= 0) & (x_adv <= 1)).all())
    kl_attack = np_kl(p, np_softmax(np_logits(x_adv.numpy(), weight, bias)))
    # Against the reference start (x + 0.001·N) and against random directions of the same length.
    start = x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    kl_start = np_kl(p, np_softmax(np_logits(start.numpy(), weight, bias)))
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        direction = torch.randn(delta.shape, generator=g, dtype=x.dtype)
        random = x.flatten(1) + direction / direction.norm(dim=1, keepdim=True) * delta.norm(dim=1, keepdim=True)
        kl_random = np_kl(p, np_softmax(np_logits(random.numpy(), weight, bias)))
        assert kl_attack.mean() > 2 * kl_random.mean()
    assert bool((kl_attack > 100 * kl_start).all())


def test_trades_attack_ascends_kl_not_cross_entropy():
    model, x, y, _, _ = hand_built()
    torch.manual_seed(0)
    kl_adv = build_method("trades", training_mapping()).adversarial_examples(model, x, y)
    torch.manual_seed(0)
    ce_adv = pgd(model, x, y, eps=EPS, steps=4, step_size=0.25, start_std=0.001)
    assert not torch.allclose(kl_adv, ce_adv)
    # The labels play no part in TRADES' attack.
    torch.manual_seed(0)
    assert torch.equal(build_method("trades", training_mapping()).adversarial_examples(model, x, (y + 1) % 3), kl_adv)


def test_mart_attacks_the_cross_entropy_from_the_reference_start():
    model, x, y, _, _ = hand_built()
    torch.manual_seed(0)
    build_method("mart", training_mapping()).loss(model, x, y, torch.arange(5))
    torch.manual_seed(0)
    expected = pgd(model, x, y, eps=EPS, steps=4, step_size=0.25, start_std=0.001)
    assert torch.equal(model.seen[1], expected)
    with torch.no_grad():
        assert F.cross_entropy(model(expected), y) > F.cross_entropy(model(x), y) + 1.0


def test_reference_start_is_projected_into_the_ball_and_excludes_random_start():
    x = torch.full((3, 3, 16, 16), 0.5, dtype=torch.float64)
    y = torch.zeros(3, dtype=torch.long)
    model = nn.Sequential(nn.Flatten(), nn.Linear(768, 2)).double()
    # 0.001·N(0, I) in 768 dimensions has norm ≈ 0.028: a 0.01 ball cuts it back to its surface.
    start = pgd(model, x, y, eps=0.01, steps=0, step_size=0.1, start_std=0.001)
    assert torch.allclose((start - x).flatten(1).norm(dim=1), torch.full((3,), 0.01, dtype=torch.float64))
    with pytest.raises(ValueError, match="start_std"):
        pgd(model, x, y, eps=0.01, steps=1, step_size=0.1, start_std=0.001, random_start=True)


def test_schema_keys_reach_the_methods_and_their_run_record():
    trades = build_method("trades", training_mapping(trades={"beta": 1.5}))
    mart = build_method("mart", training_mapping(mart={"lambda": 2.0}))
    assert isinstance(trades, TRADES) and isinstance(mart, MART)
    assert trades.describe()["beta"] == 1.5 and mart.describe()["lambda"] == 2.0
    assert trades.describe()["start_std"] == mart.describe()["start_std"] == 0.001
    # The schema's defaults: the authors' β (CIFAR-10 setting) and λ.
    assert build_method("trades", training_mapping()).settings.trades.weight == 6.0
    assert build_method("mart", training_mapping()).settings.mart.weight == 6.0
    with pytest.raises(ValueError, match="trades.beta"):
        build_method("trades", training_mapping(trades={"beta": -1.0}))


# ---------------------------------------------------------------- training


def separable(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes, each brightening its own channel by 0.6: far apart for an L2 eps of 0.5 on 3x2x2."""
    g = torch.Generator().manual_seed(4)
    y = torch.arange(n) % 3
    x = 0.2 * torch.rand(n, 3, 2, 2, generator=g, dtype=torch.float64)
    x[torch.arange(n), y] += 0.6
    return x, y


@pytest.mark.parametrize("name", ["trades", "mart"])
def test_a_few_training_steps_lower_the_loss_on_a_separable_set(name):
    x, y = separable()
    rng = np.random.default_rng(5)
    model = RecordingLinear(0.01 * rng.standard_normal((3, 12)), np.zeros(3), record=False)
    method = build_method(name, training_mapping())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    torch.manual_seed(0)
    losses = []
    for _ in range(25):
        loss, _ = method.loss(model, x, y, torch.arange(len(y)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()


@pytest.mark.parametrize("name", ["trades", "mart"])
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, name):
    # The reference start draws from the global RNG, which the checkpoint carries; dropout and a warm-up too.
    mapping = loop_mapping(adversary=RANDOM_START)
    whole_model, whole = run(name, mapping)
    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(Kill):
        run(name, mapping, checkpoint_path=checkpoint, callback=kill_after(2))
    resumed_model, resumed = run(name, mapping, checkpoint_path=checkpoint)
    assert resumed.resumed_from_epoch == 2
    assert_same_state(resumed_model.state_dict(), whole_model.state_dict())
    assert without_seconds(resumed.history).equals(without_seconds(whole.history))


# ---------------------------------------------------------------- the claims of ours


def test_the_baseline_claims_are_marked_ours_and_tested_like_the_papers():
    from test_claims import N, _correct, _predictions

    from dpaat.claims import load_claims
    from dpaat.prediction_store import Predictions
    from dpaat.verdicts import evaluate_claims

    # The claims of ours on the baselines (the other two of ours are on corruptions, tests/test_claims.py).
    ours = [c for c in load_claims() if c.origin == "ours" and {"trades", "mart"} & set(c.methods)]
    assert len(ours) == 2
    rng = np.random.default_rng(0)
    weak = _correct(0.3, rng)
    strong = weak | _correct(0.6, rng)
    arms = {("dpaat", "mobilenet_v2", atk): strong for atk in ("clean", "pgd20")}
    arms |= {(m, "mobilenet_v2", atk): weak for m in ("trades", "mart") for atk in ("clean", "pgd20")}
    table, decisions = evaluate_claims(Predictions(_predictions(arms)), ours, n_resamples=200, seed=0)
    assert list(table["origin"]) == ["ours", "ours"]
    assert set(table["paper"]) == {"ours, not the paper's"}
    assert set(table["verdict"]) == {"supported"}
    comparisons = [c for d in decisions for c in d.comparisons]
    assert {(c.a[0], c.b[0]) for c in comparisons} == {("dpaat", "trades"), ("dpaat", "mart")}
    assert all(c.n_images == N for c in comparisons)
    # A run without the baselines (the default) lists them as not tested.
    without = {k: v for k, v in arms.items() if k[0] == "dpaat"} | {("at", "mobilenet_v2", "clean"): weak}
    table, _ = evaluate_claims(Predictions(_predictions(without)), ours, n_resamples=200, seed=0)
    assert set(table["verdict"]) == {"not tested"} and all("trades" in r for r in table["reason"])


# ---------------------------------------------------------------- the tables


def test_tables_one_and_two_keep_the_papers_methods_and_the_baselines_table_has_all_seven():
    from test_report import _six_arch_frame

    from dpaat.report import baselines_table, table1, table2, to_csv, to_markdown

    methods = ("std", "at", "sat", "amat", "dpaat", "d_a", "trades", "mart")
    frame = _six_arch_frame(methods)
    # TRADES beats every other AT method under 20-PGD on every arch: bold in its column.
    frame.loc[(frame["method"] == "trades") & (frame["attack"] == "pgd20"), "accuracy"] = 0.8
    assert set(table1(frame).cells["method"]) == {"std", "at", "sat", "amat", "dpaat", "d_a"}
    assert set(table2(frame, "pgd20").cells["method"]) == {"at", "sat", "amat", "dpaat", "d_a"}
    table = baselines_table(frame)
    assert table.cells["method"].unique().tolist() == ["std", "at", "sat", "amat", "dpaat", "trades", "mart"]
    assert table.cells["paper"].isna().all()
    bold = table.cells[table.cells["bold"]]
    assert set(bold.loc[bold["column"] == "racc_pgd20", "method"]) == {"trades"}
    cell = table.cells[(table.cells["method"] == "trades") & (table.cells["column"] == "racc_pgd20")]
    assert cell["mean"].tolist() == pytest.approx([80.0, 80.0, 80.0])  # widely, lightweight, all
    assert "| TRADES |" in to_markdown(table, paper_numbers=False)
    assert "racc_pgd20" in to_csv(table, paper_numbers=False).splitlines()[0]
    with pytest.raises(ValueError, match="baselines"):
        baselines_table(_six_arch_frame())
