"""Plan-time configuration checks: each mistake stops `snakemake -n` in a few lines that name the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpaat.config_checks import ConfigError, check_classes, check_config, check_local_dir, did_you_mean

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema" / "config.schema.yaml"


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_the_shipped_configs_pass():
    for name in ("config.yaml", "paper.yaml", "baselines.yaml"):
        check_config(default_config() | yaml.safe_load((REPO / "config" / name).read_text()), SCHEMA)


def test_did_you_mean_names_the_closest_choice_or_nothing():
    assert did_you_mean("trainng", ["training", "data"]) == " (did you mean 'training'?)"
    assert did_you_mean("zzz", ["training", "data"]) == ""


def test_a_nested_key_typo_names_its_path_and_the_nearest_key():
    config = default_config()
    config["training"]["lernrate"] = 0.1
    config["training"]["bach_size"] = config["training"].pop("batch_size", 32)
    with pytest.raises(ConfigError) as error:
        check_config(config, SCHEMA)
    message = str(error.value)
    assert "config training: unknown key 'bach_size' (did you mean 'batch_size'?)" in message
    assert "unknown key 'lernrate'" in message and "keys allowed there:" in message


def test_a_class_outside_ham10000_is_refused_for_every_ham10000_source_only():
    with pytest.raises(ConfigError, match=r"'mell' \(did you mean 'mel'\?\) is not a HAM10000 diagnosis code"):
        check_classes({"source": "ham10000", "classes": ["mell", "nv"]})
    check_classes({"source": "imagefolder", "classes": ["mell", "nv"]})  # any folder names


def test_local_dir_must_be_set_and_exist(tmp_path):
    with pytest.raises(ConfigError, match="data.source local reads its images from data.local_dir, which is not set"):
        check_local_dir({"source": "local", "local_dir": None})
    with pytest.raises(ConfigError, match="does not exist"):
        check_local_dir({"source": "imagefolder", "local_dir": str(tmp_path / "gone")})
    check_local_dir({"source": "local", "local_dir": str(tmp_path)})
    check_local_dir({"source": "medmnist", "local_dir": None})  # null: download


# (config file, what the message must say, the fix it must name): the five plan-time probes.
PROBES = {
    "key_typo": (
        "trainng:\n  epochs: 2\n",
        "config (top level): unknown key 'trainng' (did you mean 'training'?)",
        "Fix the setting in your config file",
    ),
    "unknown_class": (
        "data:\n  source: ham10000\n  classes: [mel, bkl, nevus]\n",
        "config data.classes: 'nevus' is not a HAM10000 diagnosis code",
        "Use codes from: akiec, bcc, bkl, df, mel, nv, vasc",
    ),
    "missing_local_dir": (
        "data:\n  source: local\n",
        "data.source local reads its images from data.local_dir, which is not set",
        "Set data.local_dir to the folder holding the data",
    ),
    "absent_local_dir": (
        "data:\n  source: local\n  local_dir: no/such/folder\n",
        "config data.local_dir: 'no/such/folder' does not exist",
        "Fix the path",
    ),
    "archs_typo": (
        "report:\n  ablation_archs: [mobilenetv2]\n",
        "config report.ablation_archs: 'mobilenetv2' (did you mean 'mobilenet_v2'?) is not a CNN",
        "Use names from models.archs' choices",
    ),
}


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_a_bad_config_stops_the_dry_run_in_a_few_lines_naming_the_fix(tmp_path, probe):
    text, problem, fix = PROBES[probe]
    (tmp_path / "bad.yaml").write_text(text)
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(tmp_path / "bad.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert problem in output and fix in output
    assert len(output.strip().splitlines()) <= 15, output
    assert "Building DAG" not in output and "Job stats" not in output  # stopped before planning
