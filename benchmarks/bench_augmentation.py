"""Time the batched training augmentation against the per-image torchvision v2 loop it replaced; print the ratio.

Both apply Margeloiu et al.'s transforms (config/paper.yaml's training.augmentation) to the
same uint8 batch: the reference stacks a v2.Compose over the images one at a time (the
code before issue 14), ours draws every parameter at once and resamples the batch with
one grid_sample. Process-CPU time is reported (steadier than wall time on a shared CPU).

Usage: python benchmarks/bench_augmentation.py [--batch 32] [--size 224] [--threads 1]
       [--repeats 7] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from dpaat.augment import BatchAugmentation, batch_seed  # noqa: E402
from dpaat.settings import AugmentationSettings, training_section  # noqa: E402


def per_image_loop(config: AugmentationSettings) -> Callable[..., torch.Tensor]:
    """The replaced implementation: torchvision v2 transforms, one seeded draw per image, stacked."""
    transform = v2.Compose(
        [
            v2.ColorJitter(config.brightness, config.contrast, config.saturation, 0),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomAffine(config.affine_degrees),
            v2.RandomRotation(config.rotation_degrees),
        ]
    )

    def run(images: torch.Tensor, *, seed: int, epoch: int, batch: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(batch_seed(seed, epoch, batch))
            return torch.stack([transform(image) for image in images])

    return run


def cpu_seconds(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    """Process-CPU seconds of one call, the GPU queue drained after it."""
    started = time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.process_time() - started


def main() -> None:
    """Warm up both, time them interleaved, print medians and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = training_section("augmentation")  # Margeloiu et al.'s, the schema's defaults
    ours, reference = BatchAugmentation(config), per_image_loop(config)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, device=device)
    times: dict[str, list[float]] = {"per-image loop": [], "batched": []}
    for repeat in range(args.repeats + 1):
        for name, fn in (("per-image loop", reference), ("batched", ours)):
            seconds = cpu_seconds(lambda: fn(images, seed=0, epoch=0, batch=repeat), device)
            if repeat:  # the first round warms up
                times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"augmentation of {args.batch} x 3 x {args.size}^2 uint8 on {device}, {args.threads} thread(s):")
    for name, median in medians.items():
        print(f"  {name:15s} {1000 * median:8.1f} ms CPU per batch (median of {args.repeats})")
    print(f"  speed-up: {medians['per-image loop'] / medians['batched']:.2f}x")


if __name__ == "__main__":
    main()
