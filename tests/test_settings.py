"""The typed settings: every `training` key is a result, execution or plan setting; each method's job
depends on exactly the settings it reads; the params round-trip."""

from __future__ import annotations

import pytest
import torch
import yaml

from dpaat.method_kinds import METHOD_KINDS
from dpaat.methods import METHODS, build_method
from dpaat.settings import (
    EXECUTION_KEYS,
    PLAN_KEYS,
    SCHEDULE_KEYS,
    SCHEMA,
    ExecutionSettings,
    TrainingSettings,
    schema_defaults,
)

TRAINING_KEYS = set(yaml.safe_load(SCHEMA.read_text())["properties"]["training"]["properties"])
# A value other than the default for every key a method may or may not read.
CHANGED = {
    "alpha": 0.2,
    "beta": 3.0,
    "synchronization": "printed",
    "amat": {"delta_eps_fraction": 0.3, "eps_max_factor": 3.0, "xi": 0.1},
    "dpaat": {"eps_max_factor": 3.0, "gamma_cap": None},
    "trades": {"beta": 1.0},
    "mart": {"lambda": 1.0},
}


def test_every_training_key_is_exactly_one_kind_of_setting():
    method_keys = {key for kind in METHOD_KINDS.values() for key in kind.reads}
    kinds = [set(SCHEDULE_KEYS), method_keys, set(EXECUTION_KEYS), set(PLAN_KEYS)]
    assert set().union(*kinds) == TRAINING_KEYS
    assert sum(len(kind) for kind in kinds) == len(TRAINING_KEYS)
    assert set(CHANGED) == method_keys


def test_every_method_has_its_settings_line_and_class():
    assert set(METHOD_KINDS) == set(METHODS)


def test_params_round_trip_and_hold_only_what_the_method_reads():
    for method in METHODS:
        settings = TrainingSettings.from_mapping(method, {"epochs": 3, **CHANGED})
        params = settings.params()
        assert set(params) == set(SCHEDULE_KEYS) | set(METHOD_KINDS[method].reads)
        assert TrainingSettings.from_mapping(method, params).params() == params
        yaml.safe_dump(params)  # plain data: Snakemake compares params as text


def test_the_schema_fills_every_default_and_rejects_unknown_keys():
    filled = schema_defaults("training", {"adversary": {"eps": 0.5}})
    assert filled["adversary"] == {**schema_defaults("training")["adversary"], "eps": 0.5}
    with pytest.raises(KeyError, match="bf61"):
        schema_defaults("training", {"bf61": True})


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 3))
    x = torch.rand(6, 3, 6, 6)
    return model, x, torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6)


def _loss(settings: TrainingSettings, batch) -> tuple[float, dict]:
    model, x, y, index = batch
    method = build_method(settings.with_amat_xi(0.5 if settings.amat.xi is None else None))
    method.prepare(len(x), "cpu")
    torch.manual_seed(1)
    loss, _ = method.loss(model, x, y, index)
    return float(loss.detach()), method.describe()


@pytest.mark.parametrize("method", sorted(METHOD_KINDS))
def test_a_method_computes_with_exactly_the_settings_it_reads(method, batch):
    """What a method does not read leaves its loss and details alone (so its job need not rerun);
    what it reads changes them (so its job must)."""
    base = TrainingSettings.from_mapping(method, {"adversary": {"steps": 2}})
    reference = _loss(base, batch)
    for key, value in CHANGED.items():
        changed = base.with_updates(**{key: value})
        if key in METHOD_KINDS[method].reads:
            assert changed.params() != base.params(), key
            assert _loss(changed, batch) != reference, key
        else:
            assert changed.params() == base.params(), key
            assert _loss(changed, batch) == reference, key


def test_execution_settings_come_from_the_config_and_the_scheduler():
    config = {"training": schema_defaults("training", {"device": "cpu", "deterministic": False}), "gpu": {}}
    execution = ExecutionSettings.from_config(config, threads=3)
    assert (execution.device, execution.threads, execution.deterministic) == ("cpu", 3, False)
    with pytest.raises(ValueError, match="device"):
        ExecutionSettings(device="tpu")
