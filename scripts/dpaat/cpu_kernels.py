"""One set of CPU kernels on every x86-64 machine: the math libraries limited to AVX2 before torch loads.

torch's CPU wheels pick their kernels by the CPU they find. oneDNN (convolutions,
batch norm) runs AVX-512 code on a CPU that has it and AVX2 code elsewhere, and the
two round differently: on an AMD EPYC with AVX-512 a 32 px MobileNetV2 job's first
epoch loss is 1.5105 with AVX-512 kernels and 1.4243 limited to AVX2, and six epochs
amplify that into points of accuracy. Tried one at a time on that machine (docs/reproducibility.md,
"Reproducibility across machines"), only `DNNL_MAX_CPU_ISA` changed a training job's
weights; ATen's own capability (`ATEN_CPU_CAPABILITY`), `MKL_ENABLE_INSTRUCTIONS` and
`MKL_CBWR=AVX2` changed nothing there. ATen is pinned all the same: the default run's
DPAAT models (whose Jensen-Shannon term leans on ATen's vectorised exp and log) came out
differently on an AVX2-only EPYC and on the AVX-512 one, while every other method agreed. MKL's code path does decide the result
(`MKL_CBWR=COMPATIBLE` changes the weights) and MKL picks AVX-512 code on an Intel CPU
that has it, where on that AMD machine neither MKL setting changes anything; so
`MKL_ENABLE_INSTRUCTIONS=AVX2` is set as well, for Intel machines (not tried on one);
on the AMD machine it leaves weights and speed as they are.

`pin_cpu_kernels` must run before anything imports torch: every stage script calls it
first. `python -m dpaat.kernel_reference` trains the tiny reference job and prints its
final loss and weight digest (tests/cpu_kernels_reference.json); it lives in its own module
so that the data stage, which pins too, does not depend on the training code.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from typing import Any

# What every x86-64 machine of the last decade (Intel Haswell, AMD Zen and later) runs.
# ATen's own vector kernels (exp, log, softmax) round differently under AVX-512 too: the reference
# job (cross-entropy only) did not show it, DPAAT's Jensen-Shannon synchronisation did.
PINNED_VARIABLES = {"DNNL_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
X86_64 = ("x86_64", "amd64")


def pin_cpu_kernels(enabled: bool) -> dict[str, Any]:
    """Limit oneDNN and MKL to AVX2 (when `enabled`, on x86-64); returns the record run.json keeps.

    Raises when torch is already imported and a variable would change: the libraries may
    have read the old value, and a job half pinned is worse than one not pinned.
    """
    applies = bool(enabled) and platform.machine().lower() in X86_64
    if applies:
        changed = [name for name, value in PINNED_VARIABLES.items() if os.environ.get(name) != value]
        if changed and "torch" in sys.modules:
            raise RuntimeError(
                f"pin_cpu_kernels must run before torch is imported (it would change {', '.join(changed)}); "
                "call it first in the stage script"
            )
        os.environ.update(PINNED_VARIABLES)
    return {
        "reproducible_cpu_kernels": bool(enabled),
        "pinned": applies,
        "machine": platform.machine(),
        "variables": {name: os.environ.get(name) for name in PINNED_VARIABLES},
    }


def kernel_record(pin: dict[str, Any]) -> dict[str, Any]:
    """`pin`'s record plus what torch chose (call once torch is imported): version and ATen capability."""
    import torch

    return {**pin, "torch": torch.__version__, "aten_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def weights_digest(state_dict: dict[str, Any]) -> str:
    """sha256 of every tensor's name, shape, dtype and raw bytes, in state-dict order."""
    import torch

    hasher = hashlib.sha256()
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return hasher.hexdigest()
