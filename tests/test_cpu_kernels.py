"""One set of CPU kernels: the pin holds across instruction sets, matters, and gives the committed reference."""

from __future__ import annotations

import ast
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpaat.cpu_kernels import PINNED_VARIABLES, X86_64, kernel_record, pin_cpu_kernels, weights_digest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((REPO / "tests" / "cpu_kernels_reference.json").read_text())
ISA_VARIABLES = (*PINNED_VARIABLES, "ATEN_CPU_CAPABILITY", "MKL_CBWR")
AVX2_ONLY = {"DNNL_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}

on_x86_64 = pytest.mark.skipif(
    platform.machine().lower() not in X86_64, reason=f"the pin is for x86-64 CPUs; this is {platform.machine()}"
)
with_avx512 = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() != "AVX512",
    reason=f"needs a CPU with AVX-512 to compare its kernels with AVX2 ones; ATen finds "
    f"{torch.backends.cpu.get_cpu_capability()}",
)


def reference_job(*options: str, **environment: str) -> dict:
    """`python -m dpaat.kernel_reference` in a fresh process: no instruction-set variable but `environment`."""
    env = {k: v for k, v in os.environ.items() if k not in ISA_VARIABLES}
    env.update(environment, PYTHONPATH=str(REPO / "scripts"), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "dpaat.kernel_reference", *options], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def pinned_widest() -> dict:
    """The pinned job where the environment allows the CPU's widest instruction set."""
    return reference_job()


# ---------------------------------------------------------------- the pin itself


def test_pin_refuses_to_change_the_libraries_once_torch_is_imported(monkeypatch):
    for name in PINNED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if platform.machine().lower() in X86_64:
        with pytest.raises(RuntimeError, match="before torch is imported"):
            pin_cpu_kernels(True)
    for name, value in PINNED_VARIABLES.items():
        monkeypatch.setenv(name, value)  # already pinned (a job's parent set it): nothing changes, no error
    record = kernel_record(pin_cpu_kernels(True))
    assert record["variables"] == PINNED_VARIABLES
    assert record["torch"] == torch.__version__ and record["aten_cpu_capability"]


def test_turned_off_the_pin_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX512_CORE")
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    record = pin_cpu_kernels(False)
    assert record["reproducible_cpu_kernels"] is False and record["pinned"] is False
    assert record["variables"] == {"DNNL_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": None, "ATEN_CPU_CAPABILITY": None}
    assert os.environ["DNNL_MAX_CPU_ISA"] == "AVX512_CORE"


def test_every_stage_script_pins_before_its_first_import():
    for script in sorted((REPO / "scripts").glob("*.py")):
        body = ast.parse(script.read_text()).body
        first, call = body[1], body[2]  # after the docstring
        assert isinstance(first, ast.ImportFrom) and first.module == "dpaat.cpu_kernels", script.name
        value = call.value if isinstance(call, (ast.Expr, ast.Assign)) else None
        assert isinstance(value, ast.Call) and value.func.id == "pin_cpu_kernels", script.name
        assert ast.unparse(value.args[0]) == "snakemake.config['reproducible_cpu_kernels']", script.name


def test_weights_digest_sees_every_bit_and_every_name():
    state = {"a": torch.zeros(3), "b": torch.ones(2, dtype=torch.float64)}
    flipped = {"a": torch.tensor([0.0, -0.0, 0.0]), "b": state["b"]}  # -0.0 == 0.0, but another bit pattern
    renamed = {"c": state["a"], "b": state["b"]}
    digests = {weights_digest(s) for s in (state, flipped, renamed)}
    assert len(digests) == 3 and weights_digest(dict(state)) == weights_digest(state)


# ---------------------------------------------------------------- proof that it holds


@on_x86_64
@with_avx512
def test_pinned_jobs_give_identical_weights_with_avx512_allowed_and_with_avx2_only(pinned_widest):
    avx2_only = reference_job(**AVX2_ONLY)
    assert pinned_widest["cpu_kernels"]["aten_cpu_capability"] == "AVX512"
    assert avx2_only["cpu_kernels"]["aten_cpu_capability"] == "AVX2"
    assert avx2_only["train_loss"] == pinned_widest["train_loss"]
    assert avx2_only["weights_sha256"] == pinned_widest["weights_sha256"]


@on_x86_64
@with_avx512
def test_without_the_pin_avx512_kernels_train_another_model(pinned_widest):
    """What the pin is for: the same job unpinned on this CPU ends elsewhere (so the test above can fail)."""
    unpinned = reference_job("--unpinned")
    assert unpinned["cpu_kernels"]["variables"] == {name: None for name in PINNED_VARIABLES}
    assert unpinned["weights_sha256"] != pinned_widest["weights_sha256"]


@on_x86_64
def test_the_pinned_job_reproduces_the_committed_reference(pinned_widest):
    """A machine on which the pin does not hold fails here, loudly (tests/cpu_kernels_reference.json)."""
    if torch.__version__.split("+")[0] != REFERENCE["torch"].split("+")[0]:
        pytest.skip(
            f"the reference was made with torch {REFERENCE['torch']} (requirements.txt); this is {torch.__version__}"
        )
    assert pinned_widest["job"] == REFERENCE["job"]
    assert pinned_widest["train_loss"] == REFERENCE["train_loss"], (
        f"the pinned reference job's losses {pinned_widest['train_loss']} differ from the committed "
        f"{REFERENCE['train_loss']} (made on {REFERENCE['made_on']}): this machine's CPU kernels are not the reference's"
    )
    assert pinned_widest["weights_sha256"] == REFERENCE["weights_sha256"]
