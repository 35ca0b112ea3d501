"""One set of CPU kernels on every x86-64 machine: the math libraries limited to AVX2 before torch loads.

torch's CPU wheels pick their kernels by the CPU they find. oneDNN (convolutions,
batch norm) runs AVX-512 code on a CPU that has it and AVX2 code elsewhere, and the
two round differently: on an AMD EPYC with AVX-512 a 32 px MobileNetV2 job's first
epoch loss is 1.5105 with AVX-512 kernels and 1.4243 limited to AVX2, and six epochs
amplify that into points of accuracy. Tried one at a time on that machine (README,
"Reproducibility across machines"), only `DNNL_MAX_CPU_ISA` changed a training job's
weights; ATen's own capability (`ATEN_CPU_CAPABILITY`), `MKL_ENABLE_INSTRUCTIONS` and
`MKL_CBWR=AVX2` changed nothing there. MKL's code path does decide the result
(`MKL_CBWR=COMPATIBLE` changes the weights) and MKL picks AVX-512 code on an Intel CPU
that has it, where on that AMD machine neither MKL setting changes anything; so
`MKL_ENABLE_INSTRUCTIONS=AVX2` is set as well, for Intel machines (not tried on one);
on the AMD machine it leaves weights and speed as they are.

`pin_cpu_kernels` must run before anything imports torch: every stage script calls it
first. Running this module (`python -m dpaat.cpu_kernels`) trains the tiny reference
job and prints its final loss and weight digest (tests/cpu_kernels_reference.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from typing import Any

# What every x86-64 machine of the last decade (Intel Haswell, AMD Zen and later) runs.
PINNED_VARIABLES = {"DNNL_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
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


def reference_job(
    method: str = "std", arch: str = "mobilenet_v2", images: int = 48, epochs: int = 2, image_size: int = 32
) -> dict[str, Any]:
    """Train `arch` with `method` on seeded random images (the class brightens its channel); loss, digest, times.

    The default is the tiny job of tests/cpu_kernels_reference.json (about a second of
    training on one thread); the benchmark runs larger ones.
    """
    import torch

    from dpaat.methods import build_method
    from dpaat.models import build_model
    from dpaat.training import TrainConfig, train

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(images) % 3
    pixels = torch.rand(images, 3, image_size, image_size, generator=generator) * 0.6
    pixels[torch.arange(images), labels] += 0.4
    uint8 = (pixels * 255).round().to(torch.uint8)
    training = {
        "warmup_epochs": 0,
        "epochs": epochs,
        "batch_size": 16,
        "lr": 0.003,
        "patience": epochs,
        "alpha": 0.5,
        "beta": 1.0,
        "adversary": {"norm": "l2", "eps": 0.15, "steps": 7, "step_size": 0.075, "random_start": False},
        "amat": {"delta_eps_fraction": 0.1, "eps_max_factor": 2.0, "xi": 0.6},
        "dpaat": {"eps_max_factor": 2.0},
        "device": "cpu",
        "bf16": False,
        "threads": 1,
        "deterministic": True,
        "augmentation": {
            "enabled": False,
            "brightness": 0.2,
            "contrast": 0.2,
            "saturation": 0.2,
            "horizontal_flip": True,
            "vertical_flip": True,
            "affine_degrees": 10,
            "rotation_degrees": 50,
        },
    }
    torch.manual_seed(0)
    model = build_model(arch, 3)
    val = slice(0, max(1, images // 4))
    start, cpu_start = time.perf_counter(), time.process_time()
    result = train(
        model,
        build_method(method, training, num_samples=images),
        TrainConfig.from_mapping(training),
        uint8,
        labels,
        uint8[val],
        labels[val],
        seed=0,
        progress=False,
    )
    return {
        "job": {"method": method, "arch": arch, "images": images, "epochs": epochs, "image_size": image_size},
        "train_loss": [float(loss) for loss in result.history["train_loss"]],
        "weights_sha256": weights_digest(model.state_dict()),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
    }


def main(argv: list[str] | None = None) -> None:
    """Run `reference_job` in this process, pinned unless --unpinned, and print it as JSON with the kernel record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unpinned", action="store_true", help="leave the math libraries' instruction sets alone")
    parser.add_argument("--method", default="std")
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    pin = pin_cpu_kernels(not args.unpinned)
    import torch

    torch.set_num_threads(1)
    job = reference_job(args.method, args.arch, args.images, args.epochs)
    print(json.dumps({**job, "cpu_kernels": kernel_record(pin)}))


if __name__ == "__main__":
    main()
