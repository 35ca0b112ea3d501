"""The prepared GPU check: versions, the cuda-marked tests, attack and training-step speed, jobs per GPU.

One command on a machine with a GPU (designed to finish well inside 8 minutes on one
H100/H200), writing a Markdown report ready to be committed as benchmarks/GPU.md:

    python benchmarks/gpu_check.py --out benchmarks/GPU.md

1. versions: Python, torch and its CUDA build, cuDNN, torchvision, torchattacks, the GPU, the driver;
2. the `cuda`-marked tests (pytest -m cuda);
3. our `pgd` against torchattacks' PGDL2 (ResNet34 and MobileNetV2, 224 px, batch 128, 10 L2
   steps), float32 and under bf16 autocast;
4. one training step of every method on all six CNNs at the paper's sizes (batch 32, 224 px,
   299 px for InceptionV3, 7-step PGD, augmentation, bf16, channels_last, fused Adam: the
   loop's own `_train_epoch`), in images/s and in TFLOP/s counted with the formulas of
   torch.utils.flop_counter (FlopCounterMode's), against a measured bf16 matmul rate;
5. a one-epoch mini-grid run by 1, 2 and 4 concurrent jobs on one GPU (the throughput gain
   that `gpu.jobs_per_device` buys);
6. the paper grid's training time from 4 and 5 (the formula, filled in).

`--cpu-smoke` runs every section at toy sizes on the CPU (CI runs it: tests/test_gpu_check.py)
so that the script cannot rot between GPU loans. A section that runs past its share of
`--budget` seconds is cut short and says so in the report.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from dpaat.attacks import eval_mode, pgd  # noqa: E402
from dpaat.augment import BatchAugmentation  # noqa: E402
from dpaat.fast_paths import adam, as_layout, fast_paths, model_to  # noqa: E402
from dpaat.methods import METHODS, build_method  # noqa: E402
from dpaat.models import ARCHITECTURES, build_model  # noqa: E402
from dpaat.runtime import driver_version  # noqa: E402
from dpaat.settings import ExecutionSettings, TrainingSettings, training_section  # noqa: E402
from dpaat.training import _autocast, _train_epoch, train  # noqa: E402

ARCHS = ["resnet34", "inception_v3", "densenet121", "mobilenet_v2", "shufflenet_v2_x1_0", "squeezenet1_1"]
PAPER_METHODS = ["std", "at", "sat", "amat", "dpaat"]
# The paper's grid (config/paper.yaml): 3 seeds, 10 + 50 epochs, 2160 train / 240 val images, batch 32;
# the ablation: 4 methods x 2 CNNs x 3 seeds, 10 + 100 epochs at batch 64.
GRID = {"seeds": 3, "epochs": 60, "n_train": 2160, "n_val": 240, "batch": 32}
ABLATION = {"methods": ["at", "d_a", "d_b", "dpaat"], "archs": ["resnet34", "mobilenet_v2"], "epochs": 110, "batch": 64}


@dataclass(frozen=True)
class Sizes:
    """The sizes one mode runs at."""

    image: int
    inception_image: int
    attack_batch: int
    attack_steps: int
    train_batch: int
    train_steps: int  # the training adversary's K
    repeats: int
    matmul: int
    attack_archs: tuple[str, ...]
    archs: tuple[str, ...]
    grid_models: tuple[tuple[str, str], ...]
    grid_images: int
    grid_jobs: tuple[int, ...]


FULL = Sizes(
    image=224, inception_image=299, attack_batch=128, attack_steps=10, train_batch=32, train_steps=7, repeats=3,
    matmul=8192, attack_archs=("resnet34", "mobilenet_v2"), archs=tuple(ARCHS),
    grid_models=tuple((m, a) for a in ("resnet34", "mobilenet_v2", "shufflenet_v2_x1_0", "squeezenet1_1")
                      for m in ("std", "dpaat")),
    grid_images=256, grid_jobs=(1, 2, 4),
)  # fmt: skip
SMOKE = Sizes(
    image=32, inception_image=75, attack_batch=2, attack_steps=1, train_batch=2, train_steps=1, repeats=1,
    matmul=256, attack_archs=("squeezenet1_1",), archs=("squeezenet1_1",),
    grid_models=(("std", "squeezenet1_1"), ("at", "squeezenet1_1")), grid_images=4, grid_jobs=(1, 2),
)  # fmt: skip


def training_method(name: str, batch: int, steps: int, num_samples: int, device: torch.device | str) -> object:
    """Method `name` with the paper's settings (the schema's: augmentation, L2 PGD) at `steps` steps, bf16, ξ 0.5,
    one epoch of `batch`, prepared for `num_samples` images on `device`."""
    settings = TrainingSettings.from_mapping(name, {
        "warmup_epochs": 0, "epochs": 1, "batch_size": batch, "bf16": True, "adversary": {"steps": steps},
        "amat": {"xi": 0.5},
    })  # fmt: skip
    method = build_method(settings)
    method.prepare(num_samples, device)
    return method


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall seconds of `repeats` calls after one warm-up call, the GPU queue drained around each."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class Report:
    """The Markdown report, printed as it grows; sections share a time budget."""

    def __init__(self, budget: float) -> None:
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.budget = budget

    def add(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)

    def out_of_time(self, share: float) -> bool:
        """True once the run has used `share` of the budget (a section then stops and says so)."""
        return time.monotonic() - self.started > share * self.budget

    def table(self, header: list[str], rows: list[list[object]]) -> None:
        self.add("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        for row in rows:
            self.add("| " + " | ".join(str(cell) for cell in row) + " |")
        self.add("")


def versions(report: Report, device: torch.device) -> None:
    """Section 1."""
    import torchvision

    try:
        import torchattacks

        attacks_version = torchattacks.__version__
    except ImportError:
        attacks_version = "not installed"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU smoke run)"
    rows = [
        ["Python", platform.python_version()],
        ["torch", f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"],
        ["cuDNN", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "n/a"],
        ["torchvision", torchvision.__version__],
        ["torchattacks", attacks_version],
        ["GPU", gpu],
        ["NVIDIA driver", driver_version() or "unreadable"],
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rows.append(["GPU memory", f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs"])
    report.add("## Versions", "")
    report.table(["what", "version"], rows)


def cuda_tests(report: Report, smoke: bool) -> None:
    """Section 2: pytest -m cuda (on the CPU they are all skipped: the plumbing is what the smoke run checks)."""
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rs",
               str(REPO / "tests" / "test_fast_paths.py")]  # fmt: skip
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    summary = (run.stdout.strip().splitlines() or ["(no output)"])[-1]
    report.add(
        "## cuda-marked tests", "", f"`pytest -m cuda tests/test_fast_paths.py`: exit {run.returncode}, {summary}", ""
    )
    if run.returncode not in (0, 5) or (not smoke and "failed" in summary):
        report.add("```", run.stdout[-3000:], run.stderr[-2000:], "```", "")


def attack_speed(report: Report, device: torch.device, sizes: Sizes) -> None:
    """Section 3: our pgd vs torchattacks' PGDL2, float32 and bf16."""
    report.add(
        "## PGD: ours vs torchattacks",
        "",
        f"L2, eps 0.3, {sizes.attack_steps} steps, batch {sizes.attack_batch}, {sizes.image} px, eval mode, "
        f"channels_last on CUDA; median of {sizes.repeats} after a warm-up.",
        "",
    )
    try:
        import torchattacks
    except ImportError:
        report.add("torchattacks is not installed: section skipped.", "")
        return
    rows = []
    for arch in sizes.attack_archs:
        torch.manual_seed(0)
        model = model_to(build_model(arch, 3), device, fast_paths(device).memory_format).eval()
        x = as_layout(torch.rand(sizes.attack_batch, 3, sizes.image, sizes.image, device=device),
                      fast_paths(device).memory_format)  # fmt: skip
        y = torch.randint(0, 3, (sizes.attack_batch,), device=device)
        step = 2.5 * 0.3 / sizes.attack_steps
        theirs = torchattacks.PGDL2(model, eps=0.3, alpha=step, steps=sizes.attack_steps, random_start=False)
        for dtype in ("float32", "bf16"):
            with _autocast(device, dtype == "bf16"), eval_mode(model):
                ours_s = median_seconds(lambda: pgd(model, x, y, eps=0.3, steps=sizes.attack_steps, step_size=step),
                                        device, sizes.repeats)  # fmt: skip
                theirs_s = median_seconds(lambda: theirs(x, y), device, sizes.repeats)
            rows.append([arch, dtype, f"{1000 * ours_s:.1f}", f"{1000 * theirs_s:.1f}", f"{theirs_s / ours_s:.2f}",
                         f"{sizes.attack_batch / ours_s:.0f}"])  # fmt: skip
        del model
    report.table(["CNN", "precision", "ours ms", "torchattacks ms", "theirs / ours", "ours images/s"], rows)


def matmul_rate(device: torch.device, n: int) -> float:
    """Measured bf16 matmul TFLOP/s (n x n by n x n): the roof the training steps are compared with."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    seconds = median_seconds(lambda: a @ b, device, 5)
    return 2 * n**3 / seconds / 1e12


class FlopCount(TorchDispatchMode):
    """FLOPs of every op that torch.utils.flop_counter has a formula for (its flop_registry), summed.

    FlopCounterMode itself cannot be used around a training step here: its module tracker's
    backward hooks fail on the attacks' torch.autograd.grad with respect to the input.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def training_steps(report: Report, device: torch.device, sizes: Sizes) -> dict[tuple[str, str], float]:
    """Section 4: one step of every method on every CNN; returns the seconds per step."""
    roof = matmul_rate(device, sizes.matmul)
    report.add(
        "## One training step of every method",
        "",
        f"Batch {sizes.train_batch}, {sizes.image} px ({sizes.inception_image} px InceptionV3), "
        f"{sizes.train_steps}-step L2 PGD, augmentation, bf16 autocast on CUDA, channels_last, fused Adam "
        f"(`dpaat.training._train_epoch` on one batch); FLOPs counted with torch.utils.flop_counter's formulas. "
        f"Measured bf16 matmul rate ({sizes.matmul}^3): **{roof:.1f} TFLOP/s**.",
        "",
    )
    fast = fast_paths(device)
    use_bf16 = fast.bf16_training
    augmentation = BatchAugmentation(training_section("augmentation"))
    seconds: dict[tuple[str, str], float] = {}
    rows = []
    for arch in sizes.archs:
        size = sizes.inception_image if arch == "inception_v3" else sizes.image
        images = torch.randint(0, 256, (sizes.train_batch, 3, size, size), dtype=torch.uint8, device=device)
        labels = torch.randint(0, 3, (sizes.train_batch,), device=device)
        for name in METHODS:
            if report.out_of_time(0.55):
                rows.append([arch, name, "skipped: out of time", "", "", ""])
                continue
            torch.manual_seed(0)
            model = model_to(build_model(arch, 3), device, fast.memory_format)
            method = training_method(name, sizes.train_batch, sizes.train_steps, sizes.train_batch, device)
            optimizer = adam(list(model.parameters()), 3e-4, fused=fast.fused_adam)
            shuffle = torch.Generator().manual_seed(0)

            def step() -> None:
                _train_epoch(model, method, optimizer, images, labels, sizes.train_batch, shuffle, device, use_bf16,
                             augmentation=augmentation, memory_format=fast.memory_format)  # fmt: skip

            step_s = median_seconds(step, device, sizes.repeats)
            with FlopCount() as counter:
                step()
            tflop = counter.flops / 1e12
            seconds[(name, arch)] = step_s
            rows.append([arch, name, f"{1000 * step_s:.1f}", f"{sizes.train_batch / step_s:.0f}",
                         f"{tflop / step_s:.3g}", f"{100 * tflop / step_s / roof:.2g} %"])  # fmt: skip
            del model, method, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report.table(["CNN", "method", "ms / step", "images/s", "TFLOP/s", "of matmul rate"], rows)
    return seconds


def grid_worker(spec: dict) -> None:
    """One mini-grid job (a subprocess): build its models, warm up, wait for go, train each one epoch, report."""
    device = torch.device(spec["device"])
    torch.set_num_threads(spec["threads"])
    execution = ExecutionSettings(threads=spec["threads"], deterministic=False)
    n, size = spec["images"], spec["size"]
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
    labels = torch.arange(n) % 3
    val = max(spec["batch"], n // 8)
    jobs = []
    for name, arch in spec["models"]:
        torch.manual_seed(0)
        model = build_model(arch, 3)
        batch = spec["batch"]
        jobs.append((model, training_method(name, batch, spec["steps"], n, device)))
        # Warm-up (CUDA context, cuDNN's benchmark) on one batch of a copy, outside the timed part.
        warm_up = training_method(name, batch, spec["steps"], batch, device)
        train(copy.deepcopy(model), warm_up, images[:batch], labels[:batch], images[:batch], labels[:batch], seed=1,
              device=device, execution=execution, progress=False)  # fmt: skip
    Path(spec["ready"]).write_text("ready")
    while not Path(spec["go"]).exists():
        time.sleep(0.02)
    for model, method in jobs:
        train(model, method, images, labels, images[:val], labels[:val], seed=0, device=device, execution=execution,
              progress=False)  # fmt: skip
    synchronize(device)
    Path(spec["result"]).write_text(json.dumps({"end": time.time()}))


def mini_grid(report: Report, device: torch.device, sizes: Sizes) -> dict[int, float]:
    """Section 5: the same models, one epoch each, shared by k concurrent jobs on one device."""
    size = sizes.image
    report.add(
        "## Jobs per GPU: a one-epoch mini-grid",
        "",
        f"{len(sizes.grid_models)} models ({', '.join(f'{m}/{a}' for m, a in sizes.grid_models)}), one epoch of "
        f"{sizes.grid_images} images at {size} px (batch {sizes.train_batch}, {sizes.train_steps}-step PGD, "
        "paper settings) each, split round-robin over k concurrent jobs on one device; timed from a common "
        "start after every job has warmed up.",
        "",
    )
    wall: dict[int, float] = {}
    rows = []
    for k in sizes.grid_jobs:
        if report.out_of_time(0.9):
            rows.append([k, "skipped: out of time", "", ""])
            continue
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            procs = []
            for job in range(k):
                spec = {
                    "device": str(device), "threads": 1 if device.type == "cpu" else 2,
                    "models": list(sizes.grid_models[job::k]), "images": sizes.grid_images, "size": size,
                    "batch": sizes.train_batch, "steps": sizes.train_steps, "ready": str(folder / f"ready{job}"),
                    "go": str(folder / "go"), "result": str(folder / f"result{job}.json"),
                }  # fmt: skip
                env = os.environ | {"OMP_NUM_THREADS": str(spec["threads"])}
                procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env))
            while not all((folder / f"ready{job}").exists() for job in range(k)):
                if any(p.poll() not in (None, 0) for p in procs):
                    raise RuntimeError(f"a mini-grid job failed (k={k}); see its output above")
                time.sleep(0.05)
            started = time.time()
            (folder / "go").write_text("go")
            for p in procs:
                if p.wait() != 0:
                    raise RuntimeError(f"a mini-grid job failed (k={k}); see its output above")
            ends = [json.loads((folder / f"result{job}.json").read_text())["end"] for job in range(k)]
            wall[k] = max(ends) - started
        rows.append([k, f"{wall[k]:.1f}", f"{wall[1] / wall[k]:.2f}" if 1 in wall else "", k])
    report.table(["jobs per device k", "grid seconds", "throughput gain s_k", "--resources gpu= (one GPU)"], rows)
    return wall


def grid_formula(report: Report, steps: dict[tuple[str, str], float], wall: dict[int, float], sizes: Sizes) -> None:
    """Section 6: the paper grid's training time from the step times and the jobs-per-device gain."""
    g = GRID
    per_epoch = math.ceil(g["n_train"] / g["batch"])
    val_batches = math.ceil(g["n_val"] / g["batch"])
    report.add(
        "## The paper grid's training time",
        "",
        "```",
        "T_grid(k) = sum over CNNs a, methods m of  seeds x E x (ceil(n_train/B) x t(m, a) + ceil(n_val/B) x t(at, a))",
        "            + ablation: seeds x 110 x (ceil(n_train/64) + ceil(n_val/64)) x 2 t(m, a)   [batch 64 ~ 2x batch 32]",
        "            all divided by G x s_k",
        f"seeds = {g['seeds']}, E = 10 + 50 = {g['epochs']} (an upper bound: early stopping ends most runs sooner),",
        f"n_train = {g['n_train']}, n_val = {g['n_val']}, B = {g['batch']}; t(m, a) = one training step above,",
        "t(at, a) stands in for a validation batch (a K-step attack and two forward passes);",
        "s_k = the mini-grid's throughput gain at k jobs per device; G = GPUs. Evaluation jobs are not included.",
        "```",
        "",
    )
    archs = [a for a in ARCHS if all((m, a) in steps for m in METHODS)]
    if not archs or 1 not in wall:
        report.add("Not computed: the step times or the k = 1 mini-grid are missing (out of time).", "")
        return
    if len(archs) < len(ARCHS):
        report.add(f"Partial: only {', '.join(archs)} ran{' (CPU smoke run: toy sizes, not the paper grid)' if sizes is SMOKE else ''}.", "")  # fmt: skip
    seconds = sum(
        g["seeds"] * g["epochs"] * (per_epoch * steps[(m, a)] + val_batches * steps[("at", a)])
        for a in archs for m in PAPER_METHODS
    )  # fmt: skip
    ablation = sum(
        g["seeds"] * ABLATION["epochs"] * (math.ceil(g["n_train"] / 64) + math.ceil(g["n_val"] / 64)) * 2 * steps[(m, a)]
        for a in ABLATION["archs"] if a in archs for m in ABLATION["methods"]
    )  # fmt: skip
    rows = [[k, f"{wall[1] / wall[k]:.2f}", f"{(seconds + ablation) / 3600 / (wall[1] / wall[k]):.1f}"]
            for k in sorted(wall)]  # fmt: skip
    report.add(f"Filled in with this GPU's numbers (G = 1): main grid {seconds / 3600:.1f} h + ablation "
               f"{ablation / 3600:.1f} h at k = 1.", "")  # fmt: skip
    report.table(["k", "s_k", "T_grid hours on one GPU"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every section at toy sizes on the CPU (CI)")
    parser.add_argument(
        "--out", type=Path, default=None, help="write the Markdown report here (e.g. benchmarks/GPU.md)"
    )
    parser.add_argument("--budget", type=float, default=420, help="seconds the sections may use in all (default 420)")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the cuda-marked tests")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        grid_worker(json.loads(args.worker))
        return
    if args.cpu_smoke:
        device, sizes = torch.device("cpu"), SMOKE
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device visible to torch: run with --cpu-smoke on a machine without a GPU")
        device, sizes = torch.device("cuda", 0), FULL
        torch.backends.cudnn.benchmark = True
    began = time.monotonic()
    report = Report(args.budget)
    report.add("# GPU check (benchmarks/gpu_check.py)", "")
    report.add(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
               f"{'CPU smoke run (toy sizes)' if args.cpu_smoke else 'full run'}.", "")  # fmt: skip
    versions(report, device)
    if not args.skip_tests:
        cuda_tests(report, args.cpu_smoke)
    attack_speed(report, device, sizes)
    steps = training_steps(report, device, sizes)
    wall = mini_grid(report, device, sizes)
    grid_formula(report, steps, wall, sizes)
    report.add(f"Total wall time of the check: {time.monotonic() - began:.0f} s.")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(report.lines) + "\n")


if __name__ == "__main__":
    main()
