"""The run's settings, typed and parsed once where the config enters (no torch: the Snakefile reads them).

Two kinds, kept apart by construction:

- **Result settings** (`TrainingSettings`): everything that changes what a training job
  computes. A train job's params are exactly `TrainingSettings.params()` of its method,
  and the checkpoint fingerprint hashes exactly that mapping, so changing one reruns the
  jobs it affects and a rerun never resumes a checkpoint trained under other settings.
  Each method reads the shared schedule (epochs, batch, lr, patience, adversary,
  augmentation, bf16) and only its own keys: changing AMAT's Δε reruns
  AMAT alone (`dpaat.method_kinds`). `bf16` belongs here: bf16 autocast changes the numbers a job computes
  (on CUDA, and wherever autocast runs), so a job trained in one precision must never
  resume a checkpoint from the other.
- **Execution settings** (`ExecutionSettings`): where and how fast a job runs (device,
  threads, deterministic kernels, the GPU fast paths, the evaluation batch on a GPU).
  They reach the job through the config and the scheduler, never params: changing one
  reruns nothing and does not invalidate a checkpoint. `deterministic` belongs here:
  it picks among kernels computing the same function (on the CPU it changes nothing;
  on a GPU it trades run-to-run reproducibility for speed, as the device itself does).

Defaults come from the schema (config/schema/config.schema.yaml), the one place that
states them: `TrainingSettings.from_mapping` fills what a partial mapping leaves out,
so tests, benchmarks and `kernel_reference` state only what they change.
"""

from __future__ import annotations

import copy
import math
import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

import yaml

from dpaat.method_kinds import METHOD_KINDS

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema" / "config.schema.yaml"

# What every training job reads.
SCHEDULE_KEYS = ("warmup_epochs", "epochs", "batch_size", "lr", "patience", "adversary", "augmentation", "bf16")
# Keys of `training` that are not result settings: the plan's list of methods, and execution settings.
PLAN_KEYS = frozenset({"methods"})
EXECUTION_KEYS = frozenset({"device", "threads", "deterministic"})


@functools.cache
def _schema() -> dict[str, Any]:
    with SCHEMA.open() as f:
        return yaml.safe_load(f)


def fill_defaults(node: Mapping[str, Any], value: Any) -> Any:
    """`value` with the schema `node`'s defaults filled in where absent (recursively, as Snakemake's validate does)."""
    if node.get("type") != "object" or not isinstance(value, Mapping):
        return value
    filled = dict(value)
    for key, child in node.get("properties", {}).items():
        if key not in filled and "default" in child:
            filled[key] = copy.deepcopy(child["default"])
        if key in filled:
            filled[key] = fill_defaults(child, filled[key])
    return filled


def with_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """A whole config with the schema's defaults filled (what Snakemake's validation gives the rules)."""
    return fill_defaults(_schema(), copy.deepcopy(dict(config)))


def schema_defaults(section: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config section `section` (e.g. "training") with the schema's defaults filled around `given`.

    A key the schema does not know is an error (a typo would otherwise fall back to the default).
    """
    node = _schema()["properties"][section]
    unknown = sorted(set(given or {}) - set(node["properties"]))
    if unknown:
        raise KeyError(f"{section} has no keys {unknown}; see config/schema/config.schema.yaml")
    return fill_defaults(node, copy.deepcopy(dict(given or {})))


def deep_merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied; a mapping merges into the mapping it replaces."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def missing_key(err: KeyError) -> KeyError:
    """The error for a settings mapping that skipped schema validation (which fills every default)."""
    return KeyError(
        f"training settings lack key {err}; validate the config against "
        "config/schema/config.schema.yaml, which fills every default"
    )


@dataclass(frozen=True)
class AdversarySettings:
    """`training.adversary`: the training threat model (K-step PGD)."""

    norm: Literal["l2", "linf"]
    eps: float
    steps: int
    step_size: float
    random_start: bool
    scale_step: bool

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> AdversarySettings:
        """Typed from the schema-filled mapping."""
        return cls(
            norm=m["norm"],
            eps=float(m["eps"]),
            steps=int(m["steps"]),
            step_size=float(m["step_size"]),
            random_start=bool(m["random_start"]),
            scale_step=bool(m["scale_step"]),
        )


@dataclass(frozen=True)
class AugmentationSettings:
    """`training.augmentation`: Margeloiu et al.'s training transforms (dpaat.augment applies them)."""

    enabled: bool
    brightness: float
    contrast: float
    saturation: float
    horizontal_flip: bool
    vertical_flip: bool
    affine_degrees: float
    rotation_degrees: float

    def __post_init__(self) -> None:
        problems = [
            f"{key} must be >= 0, got {getattr(self, key)}"
            for key in ("brightness", "contrast", "saturation", "affine_degrees", "rotation_degrees")
            if getattr(self, key) < 0
        ]
        if problems:
            raise ValueError("invalid training.augmentation: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> AugmentationSettings:
        """Typed from the schema-filled mapping."""
        floats = ("brightness", "contrast", "saturation", "affine_degrees", "rotation_degrees")
        bools = ("enabled", "horizontal_flip", "vertical_flip")
        return cls(**{key: float(m[key]) for key in floats}, **{key: bool(m[key]) for key in bools})


@dataclass(frozen=True)
class AmatSettings:
    """`training.amat`: Δε as a fraction of eps, eps_max as a factor of it, and ξ (None: from the STD model)."""

    delta_eps_fraction: float
    eps_max_factor: float
    xi: float | None

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> AmatSettings:
        """Typed from the schema-filled mapping."""
        xi = m["xi"]
        return cls(float(m["delta_eps_fraction"]), float(m["eps_max_factor"]), None if xi is None else float(xi))


@dataclass(frozen=True)
class DpaatSettings:
    """`training.dpaat`: eps_max as a factor of eps and the cap of γ (None: Eq. 15 as printed)."""

    eps_max_factor: float
    gamma_cap: float | None

    def __post_init__(self) -> None:
        if self.gamma_cap is not None and not self.gamma_cap >= 0:
            raise ValueError(f"training.dpaat.gamma_cap must be >= 0 or null, got {self.gamma_cap}")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> DpaatSettings:
        """Typed from the schema-filled mapping."""
        cap = m["gamma_cap"]
        return cls(float(m["eps_max_factor"]), None if cap is None else float(cap))


@dataclass(frozen=True)
class LossWeight:
    """A baseline's one loss weight (`training.<section>.<key>`): a finite number >= 0."""

    weight: float
    SECTION: ClassVar[str]
    KEY: ClassVar[str]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"training.{self.SECTION}.{self.KEY} must be a finite number >= 0, got {self.weight}")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> LossWeight:
        """Typed from the schema-filled mapping."""
        return cls(float(m[cls.KEY]))

    def as_mapping(self) -> dict[str, Any]:
        """The config's spelling."""
        return {self.KEY: self.weight}


class TradesSettings(LossWeight):
    """`training.trades.beta`: β of TRADES' KL term."""

    SECTION, KEY = "trades", "beta"


class MartSettings(LossWeight):
    """`training.mart.lambda`: λ of MART's KL term."""

    SECTION, KEY = "mart", "lambda"


_SECTIONS = {
    "adversary": AdversarySettings,
    "augmentation": AugmentationSettings,
    "amat": AmatSettings,
    "dpaat": DpaatSettings,
    "trades": TradesSettings,
    "mart": MartSettings,
}


@dataclass(frozen=True)
class TrainingSettings:
    """What one method's training job computes with: the result settings of `training`, typed.

    Built from a mapping with every key the method reads; keys it does not read hold the
    schema's defaults and never reach its params or fingerprint.
    """

    method: str
    warmup_epochs: int
    epochs: int
    batch_size: int
    lr: float
    patience: int
    adversary: AdversarySettings
    augmentation: AugmentationSettings
    bf16: bool
    alpha: float
    beta: float
    synchronization: Literal["js", "printed"]
    amat: AmatSettings
    dpaat: DpaatSettings
    trades: TradesSettings
    mart: MartSettings

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHOD_KINDS:
            problems.append(f"unknown method {self.method!r}; choose one of {sorted(METHOD_KINDS)}")
        if self.warmup_epochs < 0:
            problems.append(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        for key in ("epochs", "batch_size", "patience"):
            if getattr(self, key) < 1:
                problems.append(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.synchronization not in ("js", "printed"):
            problems.append(f"synchronization must be 'js' or 'printed', got {self.synchronization!r}")
        if problems:
            raise ValueError("invalid training settings: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, method: str, training: Mapping[str, Any] | None = None) -> TrainingSettings:
        """Settings of `method` from a `training` mapping (a job's params, the config's section or part of it).

        Keys absent from `training` take the schema's defaults; plan and execution keys are ignored.
        """
        m = schema_defaults("training", training)
        try:
            sections = {key: kind.from_mapping(m[key]) for key, kind in _SECTIONS.items()}
            return cls(
                method=method,
                warmup_epochs=int(m["warmup_epochs"]),
                epochs=int(m["epochs"]),
                batch_size=int(m["batch_size"]),
                lr=float(m["lr"]),
                patience=int(m["patience"]),
                bf16=bool(m["bf16"]),
                alpha=float(m["alpha"]),
                beta=float(m["beta"]),
                synchronization=m["synchronization"],
                **sections,
            )
        except KeyError as err:
            raise missing_key(err) from None

    @property
    def total_epochs(self) -> int:
        """Warm-up plus full epochs (the most the loop runs)."""
        return self.warmup_epochs + self.epochs

    def reads(self) -> tuple[str, ...]:
        """The `training` keys this method's result depends on."""
        return SCHEDULE_KEYS + METHOD_KINDS[self.method].reads

    def params(self) -> dict[str, Any]:
        """The train job's params: the keys this method reads, in the config's spelling.

        The rules pass exactly this, the fingerprint hashes exactly this, and
        `from_mapping(method, params())` rebuilds these settings.
        """
        return {key: _spelled(key, getattr(self, key)) for key in self.reads()}

    def with_updates(self, method: str | None = None, **changes: Any) -> TrainingSettings:
        """A copy for `method` (default this one) with `changes`; a partial section merges into the current one."""
        return TrainingSettings.from_mapping(method or self.method, deep_merge(self.as_mapping(), changes))

    def as_mapping(self) -> dict[str, Any]:
        """Every result setting in the config's spelling, read by this method or not."""
        return {f.name: _spelled(f.name, getattr(self, f.name)) for f in fields(self) if f.name != "method"}

    def with_amat_xi(self, xi: float | None) -> TrainingSettings:
        """These settings with AMAT's ξ fixed to `xi` (taken from the STD model); unchanged for None."""
        return self if xi is None else replace(self, amat=replace(self.amat, xi=float(xi)))

    def digest(self) -> str:
        """sha256 of `params()`: the identity the checkpoint fingerprint starts from."""
        return hashlib.sha256(json.dumps({"method": self.method, **self.params()}, sort_keys=True).encode()).hexdigest()


def training_section(key: str, **overrides: Any) -> Any:
    """One typed section of `training` (adversary, augmentation, amat, ...): the schema's defaults with `overrides`."""
    return _SECTIONS[key].from_mapping(schema_defaults("training", {key: overrides})[key])


def _spelled(key: str, value: Any) -> Any:
    """A setting as the config spells it (sections as plain mappings)."""
    if isinstance(value, LossWeight):
        return value.as_mapping()
    return asdict(value) if key in _SECTIONS else value


def method_params(training: Mapping[str, Any], method: str, **overrides: Any) -> dict[str, Any]:
    """A train job's params for `method` from the config's `training` section (with the ablation's `overrides`)."""
    return TrainingSettings.from_mapping(method, {**training, **overrides}).params()


@dataclass(frozen=True)
class ExecutionSettings:
    """How a model job runs: never in params or the fingerprint, so changing one reruns nothing.

    `fast_paths`: the CUDA-only speed settings (channels_last, fused Adam, bf16 autocast
    where `training.bf16` asks, the GPU evaluation batch): auto = on a GPU only.
    """

    device: str = "cpu"
    threads: int = 1
    deterministic: bool = True
    gpu: Mapping[str, Any] = field(default_factory=dict)
    fast_paths: Literal["auto", "always", "never"] = "auto"
    gpu_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", self.device):
            raise ValueError(f"training.device must be auto, cpu, cuda or cuda:<index>, got {self.device!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.fast_paths not in ("auto", "always", "never"):
            raise ValueError(f"gpu.fast_paths must be auto, always or never, got {self.fast_paths!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], threads: int | None = None) -> ExecutionSettings:
        """From a config (the schema's defaults filled where it leaves keys out); `threads` is what the
        scheduler granted the job (default training.threads)."""
        config = with_defaults(config)
        training, gpu = config["training"], config["gpu"]
        return cls(
            device=str(training["device"]),
            threads=int(training["threads"] if threads is None else threads),
            deterministic=bool(training["deterministic"]),
            gpu=dict(gpu),
            fast_paths=gpu["fast_paths"],
            gpu_batch_size=int(config["evaluation"]["gpu_batch_size"]),
        )
