"""The workflow's plan, built from configs without Snakemake: the grids, the params, every plan-time error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from dpaat.plan import ABLATION_METHODS, Plan, model_files
from dpaat.method_kinds import METHOD_KINDS
from dpaat.settings import SCHEDULE_KEYS

REPO = Path(__file__).resolve().parents[1]


def config(*overlays: str, **changes) -> dict:
    """config/config.yaml with `overlays` (config files) and `changes` (sections merged one level deep), validated."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for overlay in overlays:
        for key, value in yaml.safe_load((REPO / overlay).read_text()).items():
            cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    for key, value in changes.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    validate(cfg, str(REPO / "config" / "schema" / "config.schema.yaml"), set_default=True)
    return cfg


@pytest.fixture(scope="module")
def default() -> Plan:
    return Plan(config())


def test_the_default_grid_trains_ablation_methods_only_on_the_ablation_archs(default):
    cfg = config()
    for seed, method, arch in default.models:
        assert method in cfg["training"]["methods"] and arch in cfg["models"]["archs"]
        assert method not in ABLATION_METHODS or arch in default.ablation_archs
    assert len(set(default.models)) == len(default.models)
    assert not default.ablation.own and default.ablation_metrics == "results/metrics/metrics.parquet"


def test_the_paper_config_plans_the_ablation_on_its_own_schedule():
    plan = Plan(config("config/paper.yaml"))
    assert plan.ablation.own and plan.ablation.tag == "ablation/batch64_epochs100"
    assert len(plan.ablation.models) == 3 * 4 * 2
    assert plan.ablation_metrics == "results/ablation/batch64_epochs100/metrics.parquet"
    params = plan.training_params("dpaat", ablation=True)
    assert (params["batch_size"], params["epochs"]) == (64, 100)
    assert plan.training_params("dpaat")["epochs"] == config("config/paper.yaml")["training"]["epochs"]
    assert model_files("{seed}-{method}-{arch}", plan.ablation.models[:1]) == ["0-at-resnet34"]


def test_sanity_attacks_follow_the_test_attacks(default):
    assert list(default.eval_attacks)[: len(default.attacks)] == list(default.attacks)
    assert set(default.sanity.attacks) <= set(default.eval_attacks)
    assert "results/figures/robustness_curves.png" in default.final_outputs()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attacks": [{"name": "a", "kind": "fgsm", "eps": 0.1}] * 2}, "share a name"),
        ({"attacks": [{"name": "clean", "kind": "fgsm", "eps": 0.1}]}, "'clean' names the unattacked"),
        ({"evaluation": {"confusion_attack": "nope"}}, "confusion_attack 'nope' is not among"),
        ({"attacks": [{"name": "pgd20", "kind": "pgd", "eps": 0.1}, {"name": "sq", "kind": "square", "eps": 0.1,
                                                                      "queries": 0}]},
         r"config attacks: sq: square needs queries >= 1"),
        ({"attacks": [{"name": "pgd20", "kind": "pgd", "eps": 0.1, "loss": "dlr"}]},
         r"config attacks: pgd20: attack kind pgd takes no \['loss'\]"),
        ({"attacks": [{"name": "square", "kind": "fgsm", "eps": 0.1}], "evaluation": {"confusion_attack": "square"}},
         "share names with the sanity attacks"),
    ],
)  # fmt: skip
def test_every_plan_time_error_names_the_problem(change, message):
    cfg = config()
    for key, value in change.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ValueError, match=message):
        Plan(cfg)


def _params(cfg: dict) -> dict[str, dict]:
    plan = Plan(cfg)
    return {method: plan.training_params(method) for method in METHOD_KINDS}


@pytest.mark.parametrize(
    "training",
    [{"device": "cpu"}, {"threads": 7}, {"deterministic": False}, {"methods": ["std", "at", "trades"]}],
)
def test_execution_and_plan_settings_change_no_train_params(training):
    assert _params(config(training=training)) == _params(config())


@pytest.mark.parametrize(
    ("training", "affected"),
    [
        ({"bf16": True}, set(METHOD_KINDS)),  # a result setting: another precision is another model
        ({"lr": 0.001}, set(METHOD_KINDS)),
        ({"alpha": 0.3}, {"sat", "dpaat", "d_a", "d_b"}),
        ({"beta": 2.0}, {"dpaat", "d_b"}),
        ({"amat": {"delta_eps_fraction": 0.2, "eps_max_factor": 2.0, "xi": None}}, {"amat"}),
        ({"dpaat": {"eps_max_factor": 3.0, "gamma_cap": 1.0}}, {"dpaat", "d_a"}),
        ({"trades": {"beta": 1.0}}, {"trades"}),
        ({"mart": {"lambda": 1.0}}, {"mart"}),
    ],
)
def test_a_result_setting_changes_the_params_of_exactly_the_methods_that_read_it(training, affected):
    before, after = _params(config()), _params(config(training=training))
    assert {method for method in METHOD_KINDS if before[method] != after[method]} == affected


def test_train_params_are_the_schedule_and_the_methods_own_keys(default):
    for method, kind in METHOD_KINDS.items():
        assert set(default.training_params(method)) == set(SCHEDULE_KEYS) | set(kind.reads)


def test_amat_waits_for_the_std_model_only_when_xi_is_not_fixed(default):
    assert default.reference_weights("0", "amat", "resnet34") == ["results/models/0/std/resnet34/weights.pt"]
    assert default.reference_weights("0", "dpaat", "resnet34") == []
    fixed = Plan(config(training={"amat": {"delta_eps_fraction": 0.1, "eps_max_factor": 2.0, "xi": 0.5}}))
    assert fixed.reference_weights("0", "amat", "resnet34") == []


def test_acquire_settings_hold_what_defines_the_raw_files_of_each_source():
    synthetic = Plan(config()).acquire_settings()
    assert synthetic["source"] == "synthetic" and "synthetic" in synthetic
    medmnist = Plan(config("config/medmnist.yaml"))
    assert set(medmnist.acquire_settings()["medmnist"]) == {"flag", "size"}
    assert medmnist.acquire_downloads() == (not medmnist.config["data"].get("local_dir"))


def test_the_plan_leaves_the_config_it_was_given_alone():
    cfg = config()
    before = copy.deepcopy(cfg)
    Plan(cfg)
    assert cfg == before


def test_final_outputs_follow_the_config(default):
    baselines = Plan(config("config/baselines.yaml"))
    assert "results/tables/baselines.csv" in baselines.final_outputs()
    assert "results/tables/baselines.csv" not in default.final_outputs()
    no_sanity = Plan(config(sanity={"enabled": False}))
    assert "results/metrics/sanity.parquet" not in no_sanity.final_outputs()
