"""Sanity checks against gradient masking: a gradient-masked model is flagged, ordinary STD and AT models are not."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml
from snakemake.utils import validate
from torch import nn

from dpaat.attacks import pgd
from dpaat.evaluation import attack_specs, evaluate_model
from dpaat.sanity import (
    CHECKS,
    SanityPlan,
    chance_level,
    restart_allowance,
    sanity_checks,
    sanity_markdown,
    sanity_table,
)

from test_attacks import REPO

TEST_ATTACKS = {
    "fgsm": {"kind": "fgsm", "eps": 8 / 255},
    "ifgsm10": {"kind": "ifgsm", "eps": 8 / 255, "steps": 10},
    "pgd20": {"kind": "pgd", "eps": 4.0, "steps": 20},
}
SANITY = {
    "enabled": True,
    "eps_multiples": [0.125, 0.25, 0.5, 1, 2],
    "linf_eps": [2 / 255, 8 / 255, 32 / 255, 64 / 255],
    "curve_steps": 5,
    "restarts": 3,
    "square_queries": 300,
    "tolerance": 0.05,
}


class Quantised(nn.Module):
    """A gradient-masked model: its forward pass rounds the input to 5 grey levels, so input gradients are 0."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


def _images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images whose class is the brighter colour channel."""
    y = torch.arange(n) % 3
    x = 0.3 + 0.3 * torch.rand(n, 3, 8, 8, generator=generator)
    x[torch.arange(n), y] += 0.12
    return x.clamp(0, 1), y


def _fit(x: torch.Tensor, y: torch.Tensor, adversarial_eps: float | None = None) -> nn.Module:
    """A small MLP trained by full-batch Adam, on clean images or (AT) on 5-step L2 PGD examples at `adversarial_eps`."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        batch = x
        if adversarial_eps is not None:
            batch = pgd(net, x, y, eps=adversarial_eps, steps=5, step_size=adversarial_eps / 2, norm="l2")
        opt.zero_grad()
        nn.functional.cross_entropy(net(batch), y).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (*_images(300, g), *_images(60, g))


@pytest.fixture(scope="module")
def trained(data) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    x, y, x_test, y_test = data
    return _fit(x, y), x_test, y_test


def _flags(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 4.0, sanity=SANITY, autoattack: bool = False
) -> dict[str, bool | None]:
    test_attacks = {**TEST_ATTACKS, "pgd20": {"kind": "pgd", "eps": eps, "steps": 20}}
    if autoattack:
        test_attacks["autoattack"] = {"kind": "autoattack", "eps": eps, "steps": 10, "queries": sanity["square_queries"]}
    plan = SanityPlan.from_config(sanity, {"norm": "l2", "eps": eps}, test_attacks)
    assert (plan.square_name is None) == autoattack and (plan.black_box is not None) == autoattack
    logits = evaluate_model(model, x, y, attack_specs({**test_attacks, **plan.attacks}), batch_size=64, device="cpu")
    accuracy = {name: float((out.argmax(1) == y).float().mean()) for name, out in logits.items()}
    assert accuracy["clean"] == 1.0
    rows = sanity_checks(accuracy, plan, test_attacks, chance=1 / 3, n_images=len(y))
    assert [r["check"] for r in rows] == list(CHECKS)
    return {r["check"]: r["passed"] for r in rows}


def test_an_ordinary_model_passes_every_check(trained):
    net, x, y = trained
    assert _flags(net, x, y) == dict.fromkeys(CHECKS, True)


def test_an_ordinary_adversarially_trained_model_passes_every_check(data):
    """AT (L2 eps 0.5) keeps PGD at its eps from breaking it: robust, but not masked, so no flag."""
    x, y, x_test, y_test = data
    net = _fit(x, y, adversarial_eps=0.5)
    flags = _flags(net, x_test, y_test, eps=0.5, sanity={**SANITY, "eps_multiples": [0.5, 1, 2, 4, 8]})
    assert flags == dict.fromkeys(CHECKS, True)


@pytest.mark.parametrize("autoattack", [False, True], ids=["own_square", "autoattacks_square"])
def test_a_gradient_masked_model_is_flagged(trained, autoattack):
    net, x, y = trained
    flags = _flags(Quantised(net), x, y, autoattack=autoattack)
    # No gradient: PGD never moves the image, so accuracy stays at 100 % at any eps, and
    # Square (no gradients needed) breaks what PGD cannot, alone or after AutoAttack's APGD and FAB.
    failed = {check for check, passed in flags.items() if passed is False}
    assert failed == {"l2_reaches_chance", "linf_reaches_chance", "square_not_stronger"}


def test_an_ordinary_model_passes_the_black_box_check_read_off_autoattack(trained):
    net, x, y = trained
    assert _flags(net, x, y, autoattack=True) == dict.fromkeys(CHECKS, True)


def test_the_black_box_check_reads_a_test_autoattack_at_the_training_eps_with_enough_queries():
    """AutoAttack's Square stands in for the check's own only at the training eps and norm with at least its budget."""
    auto = {"kind": "autoattack", "eps": 4.0, "steps": 10, "queries": 300, "seed": 2}
    plan = SanityPlan.from_config(SANITY, {"norm": "l2", "eps": 4.0}, {**TEST_ATTACKS, "aa": auto})
    assert "square" not in plan.attacks and plan.black_box == ("aawhitebox", "aa")
    assert plan.attacks["aawhitebox"] == {**auto, "norm": "l2", "queries": 0}
    for other in ({**auto, "eps": 2.0}, {**auto, "queries": 299}, {**auto, "norm": "linf"}):
        plan = SanityPlan.from_config(SANITY, {"norm": "l2", "eps": 4.0}, {**TEST_ATTACKS, "aa": other})
        assert plan.black_box is None and plan.attacks["square"]["queries"] == 300, other
    # The gap is what Square broke after APGD and FAB failed: 0.40 -> 0.30 is 0.10, over the tolerance.
    plan = SanityPlan.from_config(SANITY, {"norm": "l2", "eps": 4.0}, {**TEST_ATTACKS, "aa": auto})
    accuracy = {"clean": 0.9, "pgd20": 0.4, "aawhitebox": 0.4, "aa": 0.3}
    row = {r["check"]: r for r in sanity_checks(accuracy, plan, TEST_ATTACKS, 1 / 3)}["square_not_stronger"]
    assert row["passed"] is False and row["value"] == pytest.approx(0.1)
    assert "Square broke 0.100 of the test images AutoAttack's white-box attacks left" in row["detail"]


def test_each_check_flags_its_own_symptom():
    plan = SanityPlan.from_config(SANITY, {"norm": "l2", "eps": 4.0})
    good = {"clean": 0.9, "fgsm": 0.6, "ifgsm10": 0.4, "pgd20": 0.3, "restart1": 0.34, "restarts": 0.3, "square": 0.5}
    good.update(zip([p.name for p in plan.curve if p.norm == "l2"], [0.8, 0.6, 0.45, 0.32, 0.0]))
    good.update(zip([p.name for p in plan.curve if p.norm == "linf"], [0.8, 0.5, 0.2, 0.0]))
    assert all(r["passed"] for r in sanity_checks(good, plan, TEST_ATTACKS, 1 / 3))
    symptoms = {
        "l2_falls_with_eps": {"curvel2x0p5": 0.1},
        "l2_reaches_chance": {"curvel2x2": 0.5, "curvel2x1": 0.5, "curvel2x0p5": 0.6},
        "more_steps_not_weaker": {"pgd20": 0.45},
        "restarts_not_weaker": {"restarts": 0.2},
        "square_not_stronger": {"square": 0.2},
        "ifgsm_not_weaker": {"ifgsm10": 0.7},
    }
    for check, change in symptoms.items():
        rows = sanity_checks({**good, **change}, plan, TEST_ATTACKS, 1 / 3)
        failed = [r["check"] for r in rows if r["passed"] is False]
        assert check in failed, (check, rows)


def test_restart_check_compares_k_starts_with_their_own_first_and_allows_test_set_noise():
    plan = SanityPlan.from_config(SANITY, {"norm": "l2", "eps": 4.0})
    first, best = plan.attacks["restart1"], plan.attacks["restarts"]
    assert first == {**best, "restarts": 1} and best["restarts"] == 3  # the same PGD but for the later starts
    # Two standard errors of an accuracy on n images: 2 * sqrt(0.5 * 0.5 / 60) = 0.129 on top of the tolerance.
    assert restart_allowance(0.05, 0.5, 60) == pytest.approx(0.05 + 2 * (0.25 / 60) ** 0.5)
    assert restart_allowance(0.05, 0.5, 6000) == pytest.approx(0.05 + 2 * (0.25 / 6000) ** 0.5)
    accuracy = {"restart1": 0.5, "restarts": 0.5 - 0.15}
    small, large = (
        {r["check"]: r for r in sanity_checks(accuracy, plan, {}, 1 / 3, n)}["restarts_not_weaker"] for n in (60, 6000)
    )
    assert small["passed"] and not large["passed"]  # 9 of 60 images may be chance; 900 of 6000 are not
    assert "gain +0.150, allowed 0.179 on 60 images" in small["detail"]
    with pytest.raises(ValueError, match="2 or more, or to 0"):
        SanityPlan.from_config({**SANITY, "restarts": 1}, {"norm": "l2", "eps": 4.0})
    assert SanityPlan.from_config({**SANITY, "restarts": 0}, {"norm": "l2", "eps": 4.0}).restart_name is None


def test_checks_without_their_attacks_are_not_run():
    plan = SanityPlan.from_config({**SANITY, "enabled": False}, {"norm": "l2", "eps": 4.0})
    assert plan.attacks == {}
    rows = sanity_checks({"clean": 0.9, "pgd20": 0.3}, plan, {"pgd20": TEST_ATTACKS["pgd20"]}, 1 / 3)
    assert all(r["passed"] is None for r in rows)


def test_plan_names_and_collisions():
    plan = SanityPlan.from_config(SANITY, {"norm": "l2", "eps": 0.15})
    assert list(plan.attacks)[:3] == ["curvel2x0p125", "curvel2x0p25", "curvel2x0p5"]
    assert plan.attacks["curvel2x2"] == {"kind": "pgd", "eps": 0.3, "steps": 5, "norm": "l2"}
    assert plan.attacks["curvelinf8"]["kind"] == "ifgsm"
    with pytest.raises(ValueError, match="share names"):
        plan.check_names({"square": {"kind": "pgd", "eps": 0.1}})


def test_default_config_plan_resolves():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(cfg, str(REPO / "config" / "schema" / "config.schema.yaml"))  # fills the schema's defaults
    plan = SanityPlan.from_config(cfg["sanity"], cfg["training"]["adversary"])
    assert plan.attacks and all(name.isalnum() and name.islower() for name in plan.attacks)


def test_table_and_markdown_name_every_flag():
    plan = SanityPlan.from_config(SANITY, {"norm": "l2", "eps": 4.0})
    confusion = [[20, 0, 0], [0, 20, 0], [0, 0, 20]]
    rows = []
    for method, square in (("at", 0.5), ("dpaat", 0.0)):
        accs = {"clean": 0.9, "pgd20": 0.3, "square": square, "curvel2x1": 0.35}
        rows += [
            {"seed": 0, "method": method, "arch": "mobilenet_v2", "attack": a, "accuracy": v, "confusion": confusion}
            for a, v in accs.items()
        ]
    table = sanity_table(pd.DataFrame(rows), plan, {"pgd20": TEST_ATTACKS["pgd20"]})
    flagged = table[table["passed"] == False]  # noqa: E712 (nullable boolean)
    assert flagged[["method", "check"]].values.tolist() == [["dpaat", "square_not_stronger"]]
    md = sanity_markdown(table)
    assert "**Flags (1).**" in md and "`square_not_stronger`: Square 0.000" in md
    assert chance_level(confusion) == pytest.approx(1 / 3)
