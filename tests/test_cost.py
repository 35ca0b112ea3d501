"""Counted work and the cost model: the counter changes nothing, counts what the formulas say,
the model matches the counts of real small runs, and the plan lists the dry run's jobs."""

from __future__ import annotations

import pytest
import torch
from test_training import TRAIN, VAL, make_model, run, tiny_data, training_mapping

from dpaat.attack_kinds import forward_units, read_off
from dpaat.cost import Job, parse_dry_run, plan
from dpaat.evaluation import attack_specs, evaluate_model
from dpaat.job_resources import load_config, work_gflop
from dpaat.method_kinds import METHOD_KINDS
from dpaat.work_count import WorkCounter

TEST = tiny_data(60, seed=3)


def adaptive(eps: float) -> dict[str, dict]:
    """The attacks whose work depends on which images stay robust, at small budgets."""
    return {
        "restart1": {"kind": "pgd", "eps": eps, "steps": 3, "restarts": 1, "seed": 2},
        "restarts": {"kind": "pgd", "eps": eps, "steps": 3, "restarts": 4, "seed": 2},
        "apgd": {"kind": "apgd", "eps": eps, "steps": 10},
        "apgd3": {"kind": "apgd", "eps": eps, "steps": 10, "restarts": 3},
        "square": {"kind": "square", "eps": eps, "queries": 200},
        "autoattack": {"kind": "autoattack", "eps": eps, "steps": 10, "queries": 200},
        "autoattackwhitebox": {"kind": "autoattack", "eps": eps, "steps": 10, "queries": 0},
    }


# The tiny models keep every image at eps 0.5 (no early stop: the worst case), about half at
# eps 2 (many stay robust) and none at 3 (most fall quickly).
ADAPTIVE = adaptive(2.0)
EPS = 0.5
FIXED = {
    "fgsm": {"kind": "fgsm", "eps": 4 / 255},
    "ifgsm5": {"kind": "ifgsm", "eps": 4 / 255, "steps": 5},
    "pgd7": {"kind": "pgd", "eps": EPS, "steps": 7},
}


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[torch.nn.Module, dict[str, int]]]:
    """An STD and an AT tiny model (4 epochs), each with its training job's counted work."""
    models = {}
    for method in ("std", "at"):
        model = make_model()
        work = WorkCounter(model)
        mapping = training_mapping(warmup_epochs=1, epochs=3)
        run(method, mapping, model=model, work=work)
        work.close()
        models[method] = (model.eval(), work.units)
    return models


def test_training_counts_are_the_cost_models_units(trained):
    """Per epoch n_train x U(method) and n_val x (2K + 2), U and K as dpaat.job_resources has them."""
    k = training_mapping()["adversary"]["steps"]
    for method, (_, units) in trained.items():
        assert units["train_warmup"] == 1 * len(TRAIN[0]) * METHOD_KINDS[method].train_units(k)
        assert units["train_full"] == 3 * len(TRAIN[0]) * METHOD_KINDS[method].train_units(k)
        assert units["validation"] == 4 * len(VAL[0]) * (2 * k + 2)


def test_counting_changes_no_result(trained):
    model, _ = trained["at"]
    specs = attack_specs({**FIXED, **ADAPTIVE})
    plain = evaluate_model(model, *TEST, specs, batch_size=16, device="cpu")
    counter = WorkCounter(model)
    counted = evaluate_model(model, *TEST, specs, batch_size=16, device="cpu", work=counter)
    counter.close()
    assert plain.keys() == counted.keys()
    for name in plain:
        assert torch.equal(plain[name], counted[name]), name


@pytest.mark.parametrize(("method", "eps"), [("std", 2.0), ("at", 2.0)])
def test_earlier_stages_are_read_off_their_attacks_run(trained, method, eps):
    """restart1 off the best of k, AutoAttack's APGD-CE and white-box stages off the whole AutoAttack: from
    one run each, equal to the runs made separately, bit for bit; an entry read off costs only its prediction."""
    model, _ = trained[method]
    attacks = {**adaptive(eps), "apgdce": {"kind": "apgd", "eps": eps, "steps": 10, "loss": "ce", "restarts": 1}}
    assert read_off(attacks) == {
        "restart1": ("restarts", "first_start"),
        "autoattackwhitebox": ("autoattack", "white_box"),
        "apgd": ("autoattack", "first_attack"),
    }
    work = WorkCounter(model)
    together = evaluate_model(model, *TEST, attack_specs(attacks), batch_size=16, device="cpu", work=work)
    work.close()
    for name in ("restart1", "restarts", "autoattackwhitebox", "autoattack", "apgd", "apgdce"):
        alone = evaluate_model(model, *TEST, attack_specs({name: attacks[name]}), batch_size=16, device="cpu")
        assert torch.equal(alone[name], together[name]), name
    n = len(TEST[1])
    assert work.units["restart1"] == work.units["autoattackwhitebox"] == work.units["apgd"] == n
    # Each AutoAttack gives its APGD-CE once: the second, identical APGD-CE runs on its own.
    assert work.units["apgdce"] > n
    # The tiny models at eps 2: AutoAttack's white-box attacks break images, so the pair is no trivial case.
    accuracy = {name: float((together[name].argmax(1) == TEST[1]).float().mean()) for name in together}
    assert accuracy["autoattackwhitebox"] < accuracy["clean"]


def counted_and_modelled(model, attacks):
    """Per attack: (counted units per image, the model's units per image at the measured accuracies)."""
    images, labels = TEST
    work = WorkCounter(model)
    logits = evaluate_model(model, images, labels, attack_specs(attacks), batch_size=16, device="cpu", work=work)
    work.close()
    clean = float((logits["clean"].argmax(1) == labels).float().mean())
    read = read_off(attacks)
    rows = {}
    for name, entry in attacks.items():
        robust = float((logits[name].argmax(1) == labels).float().mean())
        modelled = 1 if name in read else forward_units(entry, 3, clean, robust)
        rows[name] = (work.units[name] / len(labels), modelled, robust)
    assert work.units["clean"] == len(labels)
    return rows


def test_fixed_attacks_count_their_closed_form(trained):
    model, _ = trained["std"]
    for name, (counted, modelled, _) in counted_and_modelled(model, FIXED).items():
        assert counted == modelled, name
    assert counted_and_modelled(model, {"pgd7": FIXED["pgd7"]})["pgd7"][0] == 2 * 7 + 1


@pytest.mark.parametrize(("method", "eps"), [("std", 0.5), ("std", 3.0), ("at", 2.0)])
def test_the_model_matches_the_counts_within_ten_percent(trained, method, eps):
    """Cascades and early stops at the measured clean and robust accuracies: every image robust,
    most falling quickly, about half staying robust."""
    model, _ = trained[method]
    rows = counted_and_modelled(model, adaptive(eps))
    for name, (counted, modelled, robust) in rows.items():
        assert modelled == pytest.approx(counted, rel=0.10), f"{method} eps {eps} {name}: robust {robust:.2f}"


@pytest.mark.parametrize(("method", "eps"), [("std", 0.5), ("std", 2.0), ("at", 2.0)])
def test_autoattack_without_square_alone_is_modelled_from_below(trained, method, eps):
    """AutoAttack's white-box attacks run alone (not read off a whole AutoAttack): the model sends its later
    attacks the finally robust images, fewer than APGD-CE left when APGD-DLR and FAB still break some
    (the tiny models: 14 % under at eps 2); with no image breaking, it is exact."""
    model, _ = trained[method]
    (counted, modelled, robust), = counted_and_modelled(model, {"alone": adaptive(eps)["autoattackwhitebox"]}).values()
    assert 0.8 * counted <= modelled <= counted, f"{method} eps {eps}: robust {robust:.2f}"
    if robust == 1.0:
        assert modelled == pytest.approx(counted, rel=0.01)


def test_the_model_is_the_most_an_attack_costs_when_every_image_is_robust():
    """With clean = robust = 1 no image stops early: the worst case of each kind."""
    assert forward_units({"kind": "square", "eps": 0.3, "queries": 100}, 3) == 1 + 2 + 100 + 1
    assert forward_units({"kind": "apgd", "eps": 0.3, "steps": 10}, 3) == 1 + 22 + 1
    assert forward_units({"kind": "pgd", "eps": 0.3, "steps": 4, "restarts": 3}, 3) == 9 + 2 * 9 + 1
    bound = forward_units({"kind": "autoattack", "eps": 0.3, "steps": 10, "queries": 100}, 3)
    assert forward_units({"kind": "autoattack", "eps": 0.3, "steps": 10, "queries": 100}, 3, 0.8, 0.1) < bound


DRY_RUN = """\
[Mon Dec  7 14:12:14 2026]
rule train:
    input: a
    output: results/models/0/std/mobilenet_v2/weights.pt
    wildcards: seed=0, method=std, arch=mobilenet_v2
    resources: tmpdir=/tmp, gpu=0, runtime=6
[Mon Dec  7 14:12:14 2026]
localrule all:
    input: b
    jobid: 0
Job stats:
"""


def test_parse_dry_run_reads_rules_and_wildcards():
    assert parse_dry_run(DRY_RUN) == [
        Job("train", (("seed", "0"), ("method", "std"), ("arch", "mobilenet_v2"))),
        Job("all", ()),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("configfiles", [[], ["config/paper.yaml"]])
def test_the_plan_lists_the_jobs_of_snakemakes_dry_run(configfiles):
    """Per rule, as many jobs as the dry run's own job stats; the model rules' work as job_resources has it."""
    import re
    import subprocess
    import sys

    from dpaat.cost import ablation_config
    from dpaat.job_resources import REPO

    command = [sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "1"]
    done = subprocess.run(command + (["--configfile", *configfiles] if configfiles else []), cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    stats = done.stdout[done.stdout.index("Job stats:") :]
    expected = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.MULTILINE)}
    expected.pop("total")
    config = load_config(configfiles)
    jobs = parse_dry_run(done.stdout)
    rows = plan(config, jobs)
    assert {row.rule: row.jobs for row in rows} == expected
    by_rule = {row.rule: row.pflop for row in rows}
    train = sum(
        work_gflop(config, "train", dict(j.wildcards)["arch"], dict(j.wildcards)["method"])
        for j in jobs
        if j.rule == "train"
    )
    assert by_rule["train"] == pytest.approx(train / 1e6)
    if "train_ablation" in by_rule:
        ablation = ablation_config(config)
        assert by_rule["train_ablation"] == pytest.approx(
            sum(work_gflop(ablation, "train", dict(j.wildcards)["arch"], dict(j.wildcards)["method"])
                for j in jobs if j.rule == "train_ablation") / 1e6
        )  # fmt: skip
