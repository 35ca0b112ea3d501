"""The tiny reference training job whose loss and weight digest show the CPU kernel pin holds.

`python -m dpaat.kernel_reference [--unpinned]` runs it in a fresh process and prints it as
JSON (tests/cpu_kernels_reference.json holds the pinned result; benchmarks/bench_cpu_kernels.py
times it both ways).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from dpaat.cpu_kernels import kernel_record, pin_cpu_kernels, weights_digest


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
    from dpaat.settings import TrainingSettings
    from dpaat.training import train

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(images) % 3
    pixels = torch.rand(images, 3, image_size, image_size, generator=generator) * 0.6
    pixels[torch.arange(images), labels] += 0.4
    uint8 = (pixels * 255).round().to(torch.uint8)
    # The schema's defaults but for a short schedule, a small adversary and no augmentation.
    settings = TrainingSettings.from_mapping(method, {
        "warmup_epochs": 0, "epochs": epochs, "batch_size": 16, "lr": 0.003, "patience": epochs,
        "adversary": {"eps": 0.15, "step_size": 0.075}, "amat": {"xi": 0.6}, "augmentation": {"enabled": False},
    })  # fmt: skip
    torch.manual_seed(0)
    model = build_model(arch, 3)
    val = slice(0, max(1, images // 4))
    start, cpu_start = time.perf_counter(), time.process_time()
    result = train(model, build_method(settings), uint8, labels, uint8[val], labels[val], seed=0, progress=False)
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
