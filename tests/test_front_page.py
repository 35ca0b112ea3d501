"""The HTML report's front page says the run in words: paper names, CNNs, seeds, data with its split, attacks."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from docutils.core import publish_parts
from jinja2 import Environment
from snakemake.utils import validate

from dpaat.front_page import attack_label, eps_label, front_page, readable_param, shown
from dpaat.io import write_parquet

REPO = Path(__file__).resolve().parents[1]
COUNTS = [
    {"split": split, "dx": dx, "requested": n, "achieved": n - (dx == "nv" and split == "val")}
    for split, n in (("train", 136), ("val", 24), ("test", 20))
    for dx in ("mel", "bkl", "nv")
]


def config(name: str) -> dict:
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    validate(cfg, str(REPO / "config" / "schema" / "config.schema.yaml"))  # fills the schema's defaults
    return cfg


def render(cfg: dict) -> str:
    """report/workflow.rst rendered as `snakemake --report` does it (jinja2, then docutils to HTML)."""

    class Snakemake:
        config = cfg

    text = Environment(trim_blocks=True, lstrip_blocks=True).from_string((REPO / "report/workflow.rst").read_text())
    return publish_parts(text.render(snakemake=Snakemake, categories={}, files={}), writer="html")["html_body"]


@pytest.mark.parametrize(
    ("attack", "label"),
    [
        ({"kind": "fgsm", "eps": 1 / 255}, "FGSM, L∞ ε = 1/255"),
        ({"kind": "ifgsm", "eps": 0.00392156862745098, "steps": 10}, "10-step I-FGSM, L∞ ε = 1/255"),
        ({"kind": "pgd", "eps": 0.15, "steps": 20}, "20-step PGD, L2 ε = 0.15"),
        ({"kind": "pgd", "eps": 8 / 255, "steps": 50, "norm": "linf"}, "50-step PGD, L∞ ε = 8/255"),
        ({"kind": "pgd", "eps": 0.3, "steps": 5, "restarts": 3}, "5-step PGD, 3 restarts, L2 ε = 0.3"),
        ({"kind": "apgd", "eps": 0.3, "steps": 20, "loss": None}, "20-step APGD-CE, L2 ε = 0.3"),
        ({"kind": "apgd", "eps": 0.3, "loss": "dlr"}, "100-step APGD-DLR, L2 ε = 0.3"),
        ({"kind": "square", "eps": 0.3, "queries": 100}, "Square (100 queries), L2 ε = 0.3"),
        ({"kind": "autoattack", "eps": 0.3}, "AutoAttack (100-step APGD, 5000-query Square), L2 ε = 0.3"),
        ({"kind": "autoattack", "eps": 0.3, "queries": 0}, "AutoAttack's white-box attacks (100-step APGD, FAB), L2 ε = 0.3"),
    ],
)
def test_attacks_in_words(attack, label):
    assert attack_label(attack) == label


def test_eps_off_the_8_bit_grid_stays_a_decimal():
    assert eps_label(0.001, "linf") == "0.001" and eps_label(2 / 255, "l2") == "0.007843"


def test_front_page_of_the_default_run_after_its_split(tmp_path):
    splits = tmp_path / "splits.parquet"
    write_parquet(pd.DataFrame({"image_id": ["a"]}), splits, metadata={"dpaat": {"counts": COUNTS}})
    page = front_page(config("config.yaml"), splits)
    assert page["methods"] == "STD, AT, SAT, AMAT, DPAAT, D-A and D-B"
    assert page["cnns"] == "MobileNetV2 and ShuffleNetV2" and page["seeds"] == "seed 0"
    assert page["data"] == (
        "synthetic HAM10000-format images (dpaat.data.synthetic), classes mel, bkl and nv; achieved split: "
        "train 136 mel, 136 bkl, 136 nv (408 images); val 24 mel, 24 bkl, 23 nv (71 images); "
        "test 20 mel, 20 bkl, 20 nv (60 images)"
    )
    assert page["attacks"].split("; ")[0] == "FGSM, L∞ ε = 1/255"
    assert page["attacks"].split("; ")[3] == "20-step PGD, L2 ε = 0.15"


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_rendered_front_page_has_no_python_repr(name, tmp_path):
    cfg = config(name)
    cfg["report_front_page"] = front_page(cfg, tmp_path / "no-split-yet.parquet")
    html = render(cfg)
    assert "{'" not in html and "None" not in html and not re.search(r"\[\s*'", html), html
    for attack in cfg["attacks"]:
        assert attack_label(attack) in html
    assert "DPAAT" in html and "split counts appear once the split job has run" in html


def test_front_page_names_the_other_datasets_in_words(tmp_path):
    paper = config("paper.yaml")
    medmnist = {**paper, "data": {**paper["data"], "source": "medmnist", "classes": ["adipose", "background"],
                                  "medmnist": {"flag": "pathmnist", "size": 224, "official_split": True}}}  # fmt: skip
    folder = {**paper, "data": {**paper["data"], "source": "imagefolder", "classes": ["normal", "pneumonia"]}}
    assert front_page(medmnist, tmp_path / "none.parquet")["data"].startswith("MedMNIST's pathmnist at 224 px, ")
    assert front_page(folder, tmp_path / "none.parquet")["data"].startswith("an ImageFolder tree, one folder per class")


def test_front_page_summarises_verdicts_sanity_and_the_runs_size(tmp_path):
    splits = tmp_path / "splits.parquet"
    write_parquet(pd.DataFrame({"image_id": ["a"]}), splits, metadata={"dpaat": {"counts": COUNTS}})
    tables = tmp_path / "tables"
    tables.mkdir()
    verdicts = ["supported", "inconclusive", "inconclusive", "not tested", "contradicted"]
    pd.DataFrame({"id": list("abcde"), "verdict": verdicts}).to_csv(tables / "claims.csv", index=False)
    sanity = pd.DataFrame(
        {"seed": 0, "method": ["at", "at", "std", "std"], "arch": "mobilenet_v2",
         "check": ["l2_reaches_chance", "ifgsm_not_weaker"] * 2, "passed": [True, False, True, True]}
    )  # fmt: skip
    sanity.to_csv(tables / "sanity.csv", index=False)
    page = front_page(config("config.yaml"), splits, tables)
    assert page["verdicts"] == "1 supported, 1 contradicted, 2 inconclusive and 1 not tested, of 5 claims"
    assert page["sanity"] == "1 flag in 4 checks of 2 models (ifgsm_not_weaker 1×)"
    # The default's size, from its config and achieved split.
    assert page["caveats"] == (
        "synthetic images, not patients' lesions; 32 px images; at most 6 epochs (early stopping may end sooner); "
        "2 CNNs; 1 seed; 60 test images"
    )
    assert "blank" in page["paper_columns"] and "MobileNetV2 and ShuffleNetV2" in page["paper_columns"]
    html = render({**config("config.yaml"), "report_front_page": page})
    assert "1 supported, 1 contradicted" in html and "60 test images" in html


def test_the_paper_config_shows_the_paper_columns_of_its_complete_groups(tmp_path):
    page = front_page(config("paper.yaml"), tmp_path / "none.parquet", tmp_path)
    assert page["paper_columns"].startswith("The paper's values appear beside ours for the complete groups")
    assert "synthetic" not in page["caveats"] and "3 seeds" in page["caveats"]
    assert page["verdicts"].startswith("the claims' verdicts appear once")


def test_shown_params_read_as_words_and_keep_their_repr():
    value = {"eps_multiples": [0.5, 1], "adversary": {"norm": "l2", "eps": 0.15}, "name": "pgd"}
    readable = shown(value)
    assert readable == value and repr(readable) == repr(value)  # Snakemake's params check reruns nothing
    assert str(readable) == "eps_multiples: 0.5, 1; adversary: (norm: l2; eps: 0.15); name: pgd"
    assert str(shown(["mobilenet_v2", "resnet34"])) == "mobilenet_v2, resnet34"
    assert pickle.loads(pickle.dumps(readable)) == value  # a stage script unpickles its params


def test_a_readable_list_param_is_a_function_so_snakemake_keeps_its_type():
    param = readable_param(["fgsm", "pgd20"])
    assert callable(param) and str(param(None)) == "fgsm, pgd20" and param(None) == ["fgsm", "pgd20"]
