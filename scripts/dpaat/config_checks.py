"""Plan-time checks of a configuration: each mistake a user makes stops `snakemake -n` with a short message and the fix.

The workflow calls these before it plans any job (so before a download or a training run).
No torch, no pandas and no Snakemake here: the workflow imports this module, pytest tests it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# HAM10000's diagnosis codes (its metadata's `dx` column): the classes of every HAM10000 source.
HAM10000_DX = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM10000_SOURCES = ("synthetic", "ham10000", "isic2018", "local")
# Report settings that name CNNs: a name that is not a trained CNN would silently drop (or widen) a figure.
REPORT_ARCH_KEYS = ("confusion_archs", "ablation_archs", "gradcam_archs")


class ConfigError(Exception):
    """A configuration mistake found at plan time; the message names the setting and the fix."""


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """' (did you mean x?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def _schema_message(error: jsonschema.ValidationError) -> str:
    """One schema violation in a line or three: where, what was expected, and the nearest valid name."""
    where = _path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        lines = [
            f"config {where}: unknown key {key!r}{did_you_mean(key, allowed)}" for key in unknown
        ]
        lines.append(f"  keys allowed there: {', '.join(allowed)}")
        return "\n".join(lines)
    if error.validator == "enum":
        choices = [str(choice) for choice in error.validator_value]
        return (
            f"config {where}: {error.instance!r} is not allowed{did_you_mean(str(error.instance), choices)}\n"
            f"  expected one of: {', '.join(choices)}"
        )
    expected = {"type": "type", "minimum": "minimum", "maximum": "maximum", "minItems": "at least items"}
    detail = f" (schema {expected.get(error.validator, error.validator)}: {error.validator_value!r})"
    description = error.schema.get("description", "")
    hint = f"\n  {description.split('.')[0].strip()}." if description else ""
    return f"config {where}: {error.message}{detail if len(detail) < 120 else ''}{hint}"


def check_schema(config: Mapping[str, Any], schema: Mapping[str, Any], schema_name: str = "the schema") -> None:
    """Raise ConfigError naming the first schema violation (path, expectation, suggestion) instead of the schema dump."""
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(dict(config)))
    if error is not None:
        raise ConfigError(
            _schema_message(error) + f"\n  Fix the setting in your config file (every key is described in {schema_name})."
        )


def check_classes(data: Mapping[str, Any]) -> None:
    """A HAM10000 source's classes must be its dx codes: caught before the 2.8 GB download."""
    if data.get("source") not in HAM10000_SOURCES or data.get("classes") is None:
        return
    unknown = [str(name) for name in data["classes"] if str(name) not in HAM10000_DX]
    if unknown:
        hints = "; ".join(f"{name!r}{did_you_mean(name, HAM10000_DX)}" for name in unknown)
        raise ConfigError(
            f"config data.classes: {hints} is not a HAM10000 diagnosis code (data.source {data['source']}).\n"
            f"  Use codes from: {', '.join(HAM10000_DX)} (the paper: [mel, bkl, nv]); other datasets: "
            "data.source imagefolder or medmnist."
        )


def check_local_dir(data: Mapping[str, Any]) -> None:
    """`data.local_dir` must be set for the sources that read it, and exist wherever it is set."""
    source, local_dir = data.get("source"), data.get("local_dir")
    if source in ("local", "imagefolder") and not local_dir:
        raise ConfigError(
            f"config data.local_dir: data.source {source} reads its images from data.local_dir, which is not set.\n"
            "  Set data.local_dir to the folder holding the data (docs/data.md), or use another data.source."
        )
    if source in ("local", "imagefolder", "medmnist") and local_dir and not Path(local_dir).exists():
        where = Path(local_dir).resolve()
        raise ConfigError(
            f"config data.local_dir: {local_dir!r} does not exist (looked for {where}).\n"
            "  Fix the path (relative paths start at the directory snakemake runs in), "
            + ("or set it to null to download." if source == "medmnist" else "or copy the data there first.")
        )


def check_report_archs(config: Mapping[str, Any], known_archs: Sequence[str]) -> None:
    """Every CNN the report settings name must be a CNN the pipeline knows (a typo would silently drop a figure).

    A known CNN that is not in models.archs is left out of the figure on purpose (a smaller run).
    """
    report = config.get("report", {})
    for key in REPORT_ARCH_KEYS:
        unknown = [str(name) for name in report.get(key) or [] if str(name) not in known_archs]
        if unknown:
            hints = "; ".join(f"{name!r}{did_you_mean(name, known_archs)}" for name in unknown)
            raise ConfigError(
                f"config report.{key}: {hints} is not a CNN the pipeline knows.\n"
                f"  Use names from models.archs' choices: {', '.join(known_archs)}."
            )


def check_config(config: Mapping[str, Any], schema_path: str | os.PathLike) -> None:
    """Every plan-time check, schema first (the others rely on its types)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    check_schema(config, schema, f"config/schema/{Path(schema_path).name}")
    data = config.get("data", {})
    check_classes(data)
    check_local_dir(data)
    check_report_archs(config, schema["properties"]["models"]["properties"]["archs"]["items"]["enum"])
