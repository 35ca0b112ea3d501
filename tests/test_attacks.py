"""Attacks: torchattacks as the oracle for the fixed-eps attacks, closed forms for the rest."""

import copy
from pathlib import Path

import pytest
import torch
import torchattacks
import yaml
from scipy import stats
from torch import nn

from dpaat.attack_kinds import autoattack_version
from dpaat.attacks import AttackSpec, cascade, fgsm, ifgsm, pgd, run_attack

REPO = Path(__file__).resolve().parents[1]


def tiny_net() -> nn.Module:
    """A small float64 CNN with BatchNorm whose running statistics are not the defaults."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    ).double()
    with torch.no_grad():
        net.train()(torch.rand(16, 3, 8, 8, dtype=torch.float64))
    return net.eval()


@pytest.fixture
def net() -> nn.Module:
    return tiny_net()


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] with some pixels exactly on the box bounds, so the [0, 1] clamp matters."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 3, 8, 8, generator=g, dtype=torch.float64)
    x[:, :, :2] = 0.0
    x[:, :, -2:] = 1.0
    y = torch.randint(0, 3, (6,), generator=g)
    return x, y


def l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


ORACLE_CASES = {
    "pgd_l2": (
        lambda m, x, y: pgd(m, x, y, eps=1.0, steps=5, step_size=0.4, norm="l2"),
        lambda m: torchattacks.PGDL2(m, eps=1.0, alpha=0.4, steps=5, random_start=False),
    ),
    "pgd_linf": (
        lambda m, x, y: pgd(m, x, y, eps=0.05, steps=5, step_size=0.02, norm="linf"),
        lambda m: torchattacks.PGD(m, eps=0.05, alpha=0.02, steps=5, random_start=False),
    ),
    "ifgsm": (
        lambda m, x, y: ifgsm(m, x, y, eps=0.05, steps=5, step_size=0.02),
        lambda m: torchattacks.BIM(m, eps=0.05, alpha=0.02, steps=5),
    ),
    "fgsm": (
        lambda m, x, y: fgsm(m, x, y, eps=0.05),
        lambda m: torchattacks.FGSM(m, eps=0.05),
    ),
}


@pytest.mark.parametrize("case", sorted(ORACLE_CASES))
def test_matches_torchattacks(case, net, data):
    x, y = data
    ours_fn, theirs_fn = ORACLE_CASES[case]
    ours = ours_fn(net, x, y)
    theirs = theirs_fn(net)(x, y)
    assert (ours - x).abs().max() > 0.01  # the attack moved the images
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


def test_l2_projection_lands_on_the_sphere_like_torchattacks(net, data):
    """5 steps of 0.12 overshoot eps = 0.3 and are projected back onto the sphere.

    Pixels in [0.4, 0.6] cannot reach the [0, 1] bounds (no coordinate moves more than eps).
    """
    x, y = data
    x = 0.4 + 0.2 * x
    ours = pgd(net, x, y, eps=0.3, steps=5, step_size=0.12, norm="l2")
    torch.testing.assert_close(l2(ours - x), torch.full((len(x),), 0.3, dtype=x.dtype), rtol=0, atol=1e-12)
    theirs = torchattacks.PGDL2(net, eps=0.3, alpha=0.12, steps=5, random_start=False)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


def test_l2_step_has_its_full_length_even_for_a_tiny_gradient(net, data):
    """An untrained net's input gradient can be ~1e-10; the step must still be step_size long."""
    x, y = data
    x = 0.4 + 0.2 * x
    with torch.no_grad():
        net[-1].weight.mul_(1e-15)
    out = pgd(net, x, y, eps=1.0, steps=1, step_size=0.05, norm="l2")
    torch.testing.assert_close(l2(out - x), torch.full((len(x),), 0.05, dtype=x.dtype), rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_zero_gradient_leaves_x_unchanged(norm, net, data):
    x, y = data
    with torch.no_grad():
        net[-1].weight.zero_()
    out = pgd(net, x, y, eps=0.5, steps=2, step_size=0.1, norm=norm)
    assert torch.equal(out, x)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_per_sample_eps_equals_scalar_attack_sample_by_sample(norm, net, data):
    x, y = data
    eps = torch.tensor([0.0, 0.02, 0.05, 0.3, 1.0, 2.0], dtype=torch.float64)
    step = eps / 3
    batched = pgd(net, x, y, eps=eps, steps=4, step_size=step, norm=norm)
    for i in range(len(x)):
        single = pgd(net, x[i : i + 1], y[i : i + 1], eps=float(eps[i]), steps=4, step_size=float(step[i]), norm=norm)
        torch.testing.assert_close(batched[i : i + 1], single, rtol=0, atol=1e-12)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_results_stay_in_their_ball_and_the_box(norm, net, data):
    x, y = data
    eps = torch.tensor([0.0, 0.01, 0.1, 0.5, 1.0, 3.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x_adv = pgd(net, x, y, eps=eps, steps=6, step_size=eps / 2, norm=norm, random_start=True, generator=g)
    size = l2(x_adv - x) if norm == "l2" else (x_adv - x).flatten(1).abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-12)).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.isnan().any()


@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_eps_zero_returns_exactly_x(norm, random_start, net, data):
    x, y = data
    out = pgd(net, x, y, eps=0.0, steps=3, step_size=0.1, norm=norm, random_start=random_start)
    assert torch.equal(out, x)
    assert torch.equal(fgsm(net, x, y, eps=0.0), x)


def test_l2_random_start_is_uniform_in_the_ball(net):
    """For d = 3: P(r <= t*eps) = t^3 and each coordinate of the direction is U(-1, 1) (Archimedes)."""
    n = 4000
    g = torch.Generator().manual_seed(0)
    x = torch.full((n, 3, 1, 1), 0.5, dtype=torch.float64)
    eps = torch.rand(n, generator=g, dtype=torch.float64) * 0.4 + 0.05  # stays clear of the [0, 1] box
    y = torch.zeros(n, dtype=torch.long)
    delta = pgd(net, x, y, eps=eps, steps=0, step_size=0.0, norm="l2", random_start=True, generator=g) - x
    radius = l2(delta) / eps
    assert stats.kstest((radius**3).numpy(), "uniform").pvalue > 0.01
    coordinate = delta.flatten(1)[:, 0] / l2(delta)
    assert stats.kstest(coordinate.numpy(), "uniform", args=(-1, 2)).pvalue > 0.01


def test_random_start_is_reproducible_with_a_generator(net, data):
    x, y = data
    runs = [
        pgd(net, x, y, eps=0.5, steps=2, step_size=0.2, random_start=True, generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    assert torch.equal(*runs)


@pytest.mark.parametrize("start_mode", ["train", "eval"])
def test_attack_leaves_grads_bn_stats_and_mode_alone(start_mode, net, data):
    x, y = data
    net.train(start_mode == "train")
    marked = dict(net.named_parameters())
    for i, p in enumerate(marked.values()):
        p.grad = None if i % 2 else torch.full_like(p, 7.0)
    grads_before = {k: None if p.grad is None else p.grad.clone() for k, p in marked.items()}
    buffers_before = {k: b.clone() for k, b in net.named_buffers()}

    pgd(net, x, y, eps=0.5, steps=3, step_size=0.2, norm="l2")

    assert net.training == (start_mode == "train")
    for k, p in net.named_parameters():
        if grads_before[k] is None:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, grads_before[k])
    for k, b in net.named_buffers():
        assert torch.equal(b, buffers_before[k]), k


def test_attacks_are_deterministic_on_the_cpu(net, data):
    x, y = data
    assert torch.equal(
        pgd(net, x, y, eps=0.5, steps=3, step_size=0.2, norm="l2"),
        pgd(net, x, y, eps=0.5, steps=3, step_size=0.2, norm="l2"),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": lambda x: x * 2}, r"\[0, 1\]"),
        ({"x": lambda x: (x * 255).to(torch.uint8)}, "float"),
        ({"eps": -0.1}, "non-negative"),
        ({"eps": float("nan")}, "finite"),
        ({"eps": torch.ones(2)}, "shape"),
        ({"norm": "l1"}, "norm"),
    ],
)
def test_bad_inputs_give_clear_errors(kwargs, message, net, data):
    x, y = data
    x = kwargs.get("x", lambda v: v)(x)
    with pytest.raises((ValueError, TypeError), match=message):
        pgd(net, x, y, eps=kwargs.get("eps", 0.1), steps=1, step_size=0.1, norm=kwargs.get("norm", "l2"))


def test_spec_defaults_follow_the_spec():
    eps = 1 / 255
    assert AttackSpec.from_config({"kind": "fgsm", "eps": eps}) == AttackSpec("fgsm", eps, 1, eps, "linf")
    assert AttackSpec.from_config({"kind": "ifgsm", "eps": eps, "steps": 10}) == AttackSpec(
        "ifgsm", eps, 10, eps / 4, "linf"
    )
    # 2.5 * 0.3 / 20 = 0.0375
    pgd20 = AttackSpec.from_config({"kind": "pgd", "eps": 0.3, "steps": 20, "step_size": None})
    assert (pgd20.kind, pgd20.eps, pgd20.steps, pgd20.norm) == ("pgd", 0.3, 20, "l2")
    assert pgd20.step_size == pytest.approx(0.0375)
    assert (
        AttackSpec.from_config({"kind": "pgd", "eps": 0.1, "steps": 4, "norm": "linf", "step_size": 0.01}).norm
        == "linf"
    )


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"kind": "cw", "eps": 0.1}, "kind"),
        ({"kind": "pgd"}, "eps"),
        ({"kind": "pgd", "eps": 0.1, "stpes": 3}, "unknown"),
        ({"kind": "ifgsm", "eps": 0.1, "norm": "l2"}, "Linf"),
        ({"kind": "fgsm", "eps": 0.1, "steps": 3}, "one step"),
        ({"kind": "pgd", "eps": 0.1, "steps": 0}, "steps"),
        ({"kind": "pgd", "eps": -1.0}, "eps"),
    ],
)
def test_spec_rejects_bad_config(cfg, message):
    with pytest.raises(ValueError, match=message):
        AttackSpec.from_config(cfg)


@pytest.mark.parametrize("config", ["config.yaml", "paper.yaml"])
def test_config_attacks_resolve(config):
    """Every attack of the shipped configs resolves, with the SPEC's norm when it names none."""
    entries = yaml.safe_load((REPO / "config" / config).read_text())["attacks"]
    for entry in entries:
        spec = AttackSpec.from_config(entry)
        assert spec.norm == entry.get("norm", {"fgsm": "linf", "ifgsm": "linf"}.get(entry["kind"], "l2"))


@pytest.mark.parametrize("kind", ["fgsm", "ifgsm", "pgd"])
def test_run_attack_batches_like_one_big_batch(kind, net, data):
    x, y = data
    cfg = {"fgsm": {"eps": 0.03}, "ifgsm": {"eps": 0.03, "steps": 3}, "pgd": {"eps": 0.3, "steps": 3}}[kind]
    spec = AttackSpec.from_config({"kind": kind, **cfg})
    x8 = (x * 255).round().to(torch.uint8)
    out = run_attack(net.float(), x8, y, spec, batch_size=4, device="cpu")
    assert out.dtype == torch.float32 and out.shape == x.shape
    whole = spec.perturb(net, x8.float() / 255, y)
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)


def test_run_attack_refuses_a_model_on_another_device(net, data):
    x, y = data
    with pytest.raises(ValueError, match="model.to"):
        run_attack(net, x, y, AttackSpec.from_config({"kind": "fgsm", "eps": 0.1}), batch_size=2, device="cuda")


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_is_torchattacks_apgd(loss, net, data):
    x, y = data
    ours = AttackSpec.from_config({"kind": "apgd", "eps": 0.5, "steps": 10, "loss": loss, "seed": 3}).perturb(net, x, y)
    theirs = torchattacks.APGD(net, norm="L2", eps=0.5, steps=10, n_restarts=1, seed=3, loss=loss)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_square_is_torchattacks_square(net, data):
    x, y = data
    ours = AttackSpec.from_config({"kind": "square", "eps": 0.5, "queries": 50}).perturb(net, x, y)
    theirs = torchattacks.Square(net, norm="L2", eps=0.5, n_queries=50, n_restarts=1, seed=0, loss="margin")(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize(
    "entry",
    [
        {"kind": "apgd", "eps": 0.5, "steps": 5},
        {"kind": "apgd", "eps": 0.5, "steps": 5, "loss": "dlr"},
        {"kind": "square", "eps": 0.5, "queries": 20},
        {"kind": "autoattack", "eps": 0.5, "steps": 3, "queries": 10},
    ],
)
def test_torchattacks_kinds_take_the_gpus_channels_last_models_and_batches(entry, net, data):
    """torchattacks flattens images and input gradients with .view(batch, -1), which a channels_last tensor refuses
    (a GPU's evaluation under gpu.fast_paths): our boundary hands it NCHW, and the attack is the NCHW attack."""
    x, y = data[0].float(), data[1]  # float32, as models run on a GPU (torchattacks' FAB makes float32 tensors)
    net = net.float()
    last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    spec = AttackSpec.from_config(entry)
    x_adv = spec.perturb(last, x.contiguous(memory_format=torch.channels_last), y)
    torch.testing.assert_close(x_adv, spec.perturb(net, x, y))


def test_torchattacks_kinds_leave_the_global_rng_alone(net, data):
    x, y = data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    AttackSpec.from_config({"kind": "apgd", "eps": 0.5, "steps": 3, "seed": 9}).perturb(net, x, y)
    torch.testing.assert_close(torch.rand(3), expected)


def _stronger_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained on colour-coded 8x8 images, so that attacks have something to break."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 3
    x = 0.3 + 0.3 * torch.rand(96, 3, 8, 8, generator=g)
    x[torch.arange(96), y] += 0.1
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3)
    )
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x[:48], y[:48]


def test_autoattack_is_at_least_as_strong_as_pgd_and_stays_in_the_ball():
    model, x, y = _stronger_net()
    eps = 0.6

    def accuracy(cfg: dict) -> float:
        x_adv = AttackSpec.from_config(cfg).perturb(model, x, y)
        assert bool((l2(x_adv - x) <= eps + 1e-4).all()) and x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == y).float().mean())

    clean = float((model(x).argmax(1) == y).float().mean())
    pgd20 = accuracy({"kind": "pgd", "eps": eps, "steps": 20})
    auto = accuracy({"kind": "autoattack", "eps": eps, "steps": 20, "queries": 100})
    assert clean > 0.8 and pgd20 < clean  # the attack has something to find
    assert auto <= pgd20


def _untargeted_autoattack(model: nn.Module, eps: float, steps: int, queries: int) -> list:
    """Our AutoAttack's untargeted ensemble for three classes, as torchattacks objects."""
    common = {"norm": "L2", "eps": eps, "seed": 0}
    return [
        torchattacks.APGD(model, steps=steps, n_restarts=1, loss="ce", **common),
        torchattacks.APGD(model, steps=steps, n_restarts=1, loss="dlr", **common),
        torchattacks.FAB(model, steps=steps, n_restarts=1, n_classes=3, **common),
        torchattacks.Square(model, n_queries=queries, n_restarts=1, **common),
    ]


def test_cascade_is_torchattacks_multiattack_and_keeps_the_white_box_stage():
    """Our cascade equals MultiAttack of all four attacks, and its kept stage MultiAttack of the first three."""
    model, x, y = _stronger_net()
    ensemble = _untargeted_autoattack(model, 0.6, 10, 100)
    run = cascade(model, ensemble, x, y, keep_after=3)
    final, white_box = run.final, run.kept
    torch.testing.assert_close(final, torchattacks.MultiAttack(ensemble)(x, y), rtol=0, atol=0)
    torch.testing.assert_close(white_box, torchattacks.MultiAttack(ensemble[:3])(x, y), rtol=0, atol=0)
    torch.testing.assert_close(run.first_output, ensemble[0](x, y), rtol=0, atol=0)
    torch.testing.assert_close(cascade(model, ensemble, x, y).final, final, rtol=0, atol=0)
    with torch.no_grad():
        correct = [int((model(images).argmax(1) == y).sum()) for images in (x, white_box, final)]
    assert correct[0] > correct[1] >= correct[2], correct  # the white-box attacks break images: no trivial case


def test_autoattack_stages_are_apgd_ce_and_autoattack_without_square():
    """One AutoAttack run gives three rows: its APGD-CE (= apgd with loss ce alone), its white-box attacks
    (= AutoAttack with queries 0) and the whole ensemble."""
    model, x, y = _stronger_net()
    whole = AttackSpec.from_config({"kind": "autoattack", "eps": 0.6, "steps": 10, "queries": 100})
    staged, final = whole.perturb_with_stages(model, x, y, ("first_attack", "white_box"))
    torch.testing.assert_close(final, whole.perturb(model, x, y), rtol=0, atol=0)
    alone = AttackSpec.from_config({"kind": "autoattack", "eps": 0.6, "steps": 10, "queries": 0})
    torch.testing.assert_close(staged["white_box"], alone.perturb(model, x, y), rtol=0, atol=0)
    apgd = AttackSpec.from_config({"kind": "apgd", "eps": 0.6, "steps": 10})
    torch.testing.assert_close(staged["first_attack"], apgd.perturb(model, x, y), rtol=0, atol=0)
    with pytest.raises(ValueError, match="no stage before Square"):
        alone.perturb_with_stages(model, x, y, ("white_box",))
    with pytest.raises(ValueError, match="has no stages"):
        apgd.perturb_with_stages(model, x, y, ("first_start",))
    # The GPU's layout (gpu.fast_paths): a channels_last model and batch give the same images.
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    staged_last, final_last = whole.perturb_with_stages(
        last, x.contiguous(memory_format=torch.channels_last), y, ("first_attack", "white_box")
    )
    torch.testing.assert_close((staged_last, final_last), (staged, final))
    with pytest.raises(ValueError, match="queries >= 1"):
        AttackSpec.from_config({"kind": "square", "eps": 0.6, "queries": 0})


def test_new_kinds_resolve_with_their_defaults_and_refuse_foreign_options():
    assert AttackSpec.from_config({"kind": "apgd", "eps": 0.3}) == AttackSpec("apgd", 0.3, 100, 0.0, "l2", restarts=1)
    auto = AttackSpec.from_config({"kind": "autoattack", "eps": 0.3, "steps": None, "queries": None})
    assert (auto.steps, auto.queries, auto.norm) == (100, 5000, "l2")
    assert AttackSpec.from_config({"kind": "pgd", "eps": 0.3, "steps": 5, "restarts": 2}).restarts == 2
    with pytest.raises(ValueError, match="takes no"):
        AttackSpec.from_config({"kind": "pgd", "eps": 0.3, "loss": "dlr"})
    with pytest.raises(ValueError, match="loss"):
        AttackSpec.from_config({"kind": "apgd", "eps": 0.3, "loss": "cw"})


def test_pgd_restarts_keep_the_first_fooling_run(net, data):
    x, y = data
    one = AttackSpec.from_config({"kind": "pgd", "eps": 1.0, "steps": 3, "restarts": 1, "seed": 5}).perturb(net, x, y)
    three = AttackSpec.from_config({"kind": "pgd", "eps": 1.0, "steps": 3, "restarts": 3, "seed": 5}).perturb(net, x, y)
    with torch.no_grad():
        fooled_one = net(one).argmax(1) != y
        fooled_three = net(three).argmax(1) != y
    assert bool((fooled_three >= fooled_one).all())  # more restarts never lose a fooled image
    torch.testing.assert_close(three[fooled_one], one[fooled_one])
    assert bool((l2(three - x) <= 1.0 + 1e-9).all())


def test_standard_autoattack_cannot_run_on_three_classes_and_ours_can():
    """Why our autoattack kind drops APGD-T/FAB-T: torchattacks' standard version needs a fourth logit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 3)).eval()
    with torch.no_grad():
        model[1].weight.mul_(1e-3)
        model[1].bias.copy_(torch.tensor([5.0, 0.0, -1.0]))  # no image can be moved off class 0
    x, y = torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(IndexError):
        torchattacks.AutoAttack(model, norm="L2", eps=0.5, version="standard", n_classes=3, seed=0)(x, y)
    x_adv = AttackSpec.from_config({"kind": "autoattack", "eps": 0.5, "steps": 5, "queries": 20}).perturb(model, x, y)
    assert bool((l2(x_adv - x) <= 0.5 + 1e-5).all())


def test_autoattack_is_the_standard_version_from_four_classes():
    """Five classes: our autoattack kind equals torchattacks' standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 5)).eval()
    x, y = torch.rand(6, 3, 8, 8), torch.arange(6) % 5
    # torchattacks' standard version: APGD, APGD-T and FAB at their default 10 steps, Square at 5000 queries.
    reference = torchattacks.AutoAttack(model, norm="L2", eps=0.5, version="standard", n_classes=5, seed=0)(x, y)
    ours = AttackSpec.from_config({"kind": "autoattack", "eps": 0.5, "steps": 10, "queries": 5000}).perturb(model, x, y)
    torch.testing.assert_close(ours, reference)
    assert autoattack_version(5) == "standard" and autoattack_version(3) == autoattack_version(2) == "untargeted"


def test_autoattack_runs_on_two_classes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 2)).eval()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    x_adv = AttackSpec.from_config({"kind": "autoattack", "eps": 0.5, "steps": 5, "queries": 20}).perturb(model, x, y)
    assert bool((l2(x_adv - x) <= 0.5 + 1e-5).all()) and x_adv.shape == x.shape


def test_every_schema_kind_has_its_registry_entry_and_its_perturbation():
    from dpaat.attack_kinds import KINDS
    from dpaat.attacks import PERTURB

    schema = yaml.safe_load((REPO / "config/schema/config.schema.yaml").read_text())
    kinds = schema["properties"]["attacks"]["items"]["properties"]["kind"]["enum"]
    assert set(kinds) == set(KINDS) == set(PERTURB)
