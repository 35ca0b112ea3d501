"""The prepared GPU check: versions, the cuda-marked tests, attack and training-step speed, jobs per GPU.

One command on a machine with a GPU (benchmarks/gpu_check.sh wraps it: wheels, log, 6 minutes),
writing a Markdown report ready to be committed as benchmarks/GPU.md:

    python benchmarks/gpu_check.py --out benchmarks/GPU.md --budget 300

1. versions: Python, torch and its CUDA build, cuDNN, torchvision, torchattacks, the GPU, the
   driver, and the fast paths in force (`gpu.fast_paths`);
2. the `cuda`-marked tests (pytest -m cuda, with a time-out);
3. our `pgd` against torchattacks' PGDL2 in the same layout (both NCHW; ours in channels_last
   beside), ResNet34 and MobileNetV2, 224 px, batch 128, 10 L2 steps, float32 and bf16 autocast;
4. one training step of every method on all six CNNs at the paper's sizes (batch 32, 224 px,
   299 px for InceptionV3, 7-step PGD, augmentation, bf16, channels_last, fused Adam: the
   loop's own `_train_epoch`), in images/s, in TFLOP/s counted with the formulas of
   torch.utils.flop_counter (FlopCounterMode's) against a bf16 matmul rate measured after a
   warm-up, and its peak GPU memory;
5. what `training.deterministic: true` (config/paper.yaml's setting) costs a training step;
6. a one-epoch mini-grid run by 1, 2 and 4 concurrent jobs on one GPU, every job the same mix of
   methods and CNNs (DenseNet121 and InceptionV3 included): the throughput gain that
   `gpu.jobs_per_device` buys, each job's GFLOP/s (the `job_resources.gpu_gflops` to set) and
   peak GPU memory;
7. the paper grid's time: the work of every job of config/paper.yaml (all its trained methods,
   TRADES and MART included, the ablation, the evaluation and Grad-CAM jobs; dpaat.job_resources'
   model) over the measured GFLOP/s.

Each section is written to the report as soon as it ends (a crash or a time-out keeps what
ran), and one that fails says why and the next one runs. `--cpu-smoke` runs every section at toy
sizes on the CPU with `gpu.fast_paths: always`, so CI (tests/test_gpu_check.py) executes the
branches a GPU runs and the script cannot rot between GPU loans. A section that runs past its
share of `--budget` seconds is cut short and says so in the report.
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
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from dpaat import job_resources  # noqa: E402
from dpaat.attacks import eval_mode, pgd  # noqa: E402
from dpaat.augment import BatchAugmentation  # noqa: E402
from dpaat.fast_paths import (  # noqa: E402
    TRAINING_PATHS,
    adam,
    as_layout,
    fast_paths,
    model_to,
    set_fast_paths_mode,
)
from dpaat.method_kinds import METHOD_KINDS  # noqa: E402
from dpaat.methods import METHODS, build_method  # noqa: E402
from dpaat.models import build_model  # noqa: E402
from dpaat.runtime import driver_version, set_deterministic  # noqa: E402
from dpaat.settings import ExecutionSettings, TrainingSettings, training_section, with_defaults  # noqa: E402
from dpaat.training import _autocast, _train_epoch, train  # noqa: E402

ARCHS = ["resnet34", "inception_v3", "densenet121", "mobilenet_v2", "shufflenet_v2_x1_0", "squeezenet1_1"]
PAPER_CONFIG = REPO / "config" / "paper.yaml"


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
    matmul_warmup_s: float  # seconds of matmuls before the rate is timed (the clocks ramp up)
    attack_archs: tuple[str, ...]
    archs: tuple[str, ...]
    determinism_archs: tuple[str, ...]
    grid_models: tuple[tuple[str, str], ...]  # every mini-grid job trains all of these
    grid_images: int
    grid_jobs: tuple[int, ...]


FULL = Sizes(
    image=224, inception_image=299, attack_batch=128, attack_steps=10, train_batch=32, train_steps=7, repeats=3,
    matmul=8192, matmul_warmup_s=3.0, attack_archs=("resnet34", "mobilenet_v2"), archs=tuple(ARCHS),
    determinism_archs=("resnet34", "densenet121", "mobilenet_v2"),
    grid_models=(("dpaat", "densenet121"), ("at", "inception_v3"), ("trades", "resnet34"), ("std", "mobilenet_v2"),
                 ("mart", "shufflenet_v2_x1_0"), ("amat", "squeezenet1_1")),
    grid_images=160, grid_jobs=(1, 2, 4),
)  # fmt: skip
SMOKE = Sizes(
    image=32, inception_image=75, attack_batch=2, attack_steps=1, train_batch=2, train_steps=1, repeats=1,
    matmul=256, matmul_warmup_s=0.0, attack_archs=("squeezenet1_1",), archs=("squeezenet1_1",),
    determinism_archs=("squeezenet1_1",), grid_models=(("std", "squeezenet1_1"), ("at", "squeezenet1_1")),
    grid_images=4, grid_jobs=(1, 2),
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


def peak_gib(device: torch.device) -> str:
    """Peak GPU memory allocated since the last reset, in GiB ("n/a" on the CPU)."""
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}" if device.type == "cuda" else "n/a"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


class Report:
    """The Markdown report, printed as it grows and written to `out` after every line; sections share a budget."""

    def __init__(self, budget: float, out: Path | None) -> None:
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.budget = budget
        self.out = out
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)

    def add(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)
        if self.out is not None:  # atomically: a crash or a kill keeps what ran
            partial = self.out.with_name(self.out.name + ".partial")
            partial.write_text("\n".join(self.lines) + "\n")
            partial.replace(self.out)

    def seconds_left(self, share: float = 1.0) -> float:
        """Seconds until the run has used `share` of the budget."""
        return share * self.budget - (time.monotonic() - self.started)

    def out_of_time(self, share: float) -> bool:
        """True once the run has used `share` of the budget (a section then stops and says so)."""
        return self.seconds_left(share) < 0

    def table(self, header: list[str], rows: list[list[object]]) -> None:
        self.add("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        for row in rows:
            self.add("| " + " | ".join(str(cell) for cell in row) + " |")
        self.add("")

    def section(self, fn: Callable[..., object], *args: object) -> object:
        """Run one section; a failure is reported (its error and trace) and the next section runs."""
        try:
            return fn(self, *args)
        except Exception as err:  # noqa: BLE001 - every failure is reported, then the check goes on
            self.add(f"**Section failed:** `{type(err).__name__}: {err}`", "", "```",
                     traceback.format_exc()[-3000:], "```", "")  # fmt: skip
            return None


def versions(report: Report, device: torch.device, mode: str) -> None:
    """Section 1."""
    import torchvision

    report.add("## Versions", "")
    try:
        import torchattacks

        attacks_version = torchattacks.__version__
    except ImportError:
        attacks_version = "not installed"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU smoke run)"
    in_force = fast_paths(device).names((*TRAINING_PATHS, "gpu_batch_size"), bf16=True)
    rows = [
        ["Python", platform.python_version()],
        ["torch", f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"],
        ["cuDNN", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "n/a"],
        ["torchvision", torchvision.__version__],
        ["torchattacks", attacks_version],
        ["GPU", gpu],
        ["NVIDIA driver", driver_version() or "unreadable"],
        ["fast paths in force", f"{', '.join(in_force) or 'none'} (gpu.fast_paths: {mode})"],
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rows.append(["GPU memory", f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs"])
    report.table(["what", "version"], rows)


def cuda_tests(report: Report, smoke: bool) -> None:
    """Section 2: pytest -m cuda (on the CPU they are all skipped: the plumbing is what the smoke run checks)."""
    report.add("## cuda-marked tests", "")
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rs",
               str(REPO / "tests" / "test_fast_paths.py")]  # fmt: skip
    limit = max(120.0, report.seconds_left(0.25))
    try:
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as err:
        report.add(f"`pytest -m cuda tests/test_fast_paths.py`: timed out after {limit:.0f} s", "", "```",
                   (err.stdout or b"")[-3000:].decode(errors="replace") if isinstance(err.stdout, bytes)
                   else (err.stdout or "")[-3000:], "```", "")  # fmt: skip
        return
    summary = (run.stdout.strip().splitlines() or ["(no output)"])[-1]
    report.add(f"`pytest -m cuda tests/test_fast_paths.py`: exit {run.returncode}, {summary}", "")
    if run.returncode not in (0, 5) or (not smoke and "failed" in summary):
        report.add("```", run.stdout[-3000:], run.stderr[-2000:], "```", "")


def attack_speed(report: Report, device: torch.device, sizes: Sizes) -> None:
    """Section 3: our pgd vs torchattacks' PGDL2, both NCHW, and ours in channels_last beside; float32 and bf16."""
    report.add(
        "## PGD: ours vs torchattacks",
        "",
        f"L2, eps 0.3, {sizes.attack_steps} steps, batch {sizes.attack_batch}, {sizes.image} px, eval mode; "
        f"ours and torchattacks' PGDL2 on the same NCHW model and batch (PGDL2 flattens with .view, which "
        f"channels_last refuses), ours also on a channels_last model and batch; median of {sizes.repeats} "
        "after a warm-up.",
        "",
    )
    try:
        import torchattacks
    except ImportError:
        report.add("torchattacks is not installed: section skipped.", "")
        return
    rows = []
    step = 2.5 * 0.3 / sizes.attack_steps
    for arch in sizes.attack_archs:
        torch.manual_seed(0)
        model = build_model(arch, 3).to(device).eval()
        last = model_to(copy.deepcopy(model), device, torch.channels_last).eval()
        x = torch.rand(sizes.attack_batch, 3, sizes.image, sizes.image, device=device)
        x_last = as_layout(x, torch.channels_last)
        y = torch.randint(0, 3, (sizes.attack_batch,), device=device)
        theirs = torchattacks.PGDL2(model, eps=0.3, alpha=step, steps=sizes.attack_steps, random_start=False)
        for dtype in ("float32", "bf16"):
            with _autocast(device, dtype == "bf16"), eval_mode(model):
                ours_s = median_seconds(lambda: pgd(model, x, y, eps=0.3, steps=sizes.attack_steps, step_size=step),
                                        device, sizes.repeats)  # fmt: skip
                theirs_s = median_seconds(lambda: theirs(x, y), device, sizes.repeats)
                last_s = median_seconds(
                    lambda: pgd(last, x_last, y, eps=0.3, steps=sizes.attack_steps, step_size=step), device,
                    sizes.repeats,
                )  # fmt: skip
            rows.append([arch, dtype, f"{1000 * ours_s:.1f}", f"{1000 * theirs_s:.1f}", f"{theirs_s / ours_s:.2f}",
                         f"{1000 * last_s:.1f}", f"{ours_s / last_s:.2f}"])  # fmt: skip
        del model, last
    report.table(["CNN", "precision", "ours NCHW ms", "torchattacks NCHW ms", "theirs / ours",
                  "ours channels_last ms", "NCHW / channels_last"], rows)  # fmt: skip


def matmul_rate(device: torch.device, n: int, warmup_s: float) -> float:
    """Measured bf16 matmul TFLOP/s (n x n by n x n) after `warmup_s` seconds of matmuls (the clocks ramp up)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    until = time.perf_counter() + warmup_s
    while time.perf_counter() < until:
        a @ b
        synchronize(device)
    seconds = median_seconds(lambda: a @ b, device, 10)
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


def step_timer(device: torch.device, sizes: Sizes, arch: str, name: str) -> Callable[[], None]:
    """One training step of method `name` on `arch` at the paper's settings, as the loop runs it."""
    fast = fast_paths(device)
    size = sizes.inception_image if arch == "inception_v3" else sizes.image
    images = torch.randint(0, 256, (sizes.train_batch, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 3, (sizes.train_batch,), device=device)
    torch.manual_seed(0)
    model = model_to(build_model(arch, 3), device, fast.memory_format)
    method = training_method(name, sizes.train_batch, sizes.train_steps, sizes.train_batch, device)
    optimizer = adam(list(model.parameters()), 3e-4, fused=fast.fused_adam)
    shuffle = torch.Generator().manual_seed(0)
    augmentation = BatchAugmentation(training_section("augmentation"))  # Margeloiu et al.'s, the schema's defaults

    def step() -> None:
        _train_epoch(model, method, optimizer, images, labels, sizes.train_batch, shuffle, device,
                     fast.bf16_training, augmentation=augmentation, memory_format=fast.memory_format)  # fmt: skip

    return step


def training_steps(report: Report, device: torch.device, sizes: Sizes) -> dict[tuple[str, str], float]:
    """Section 4: one step of every method on every CNN; returns the seconds per step."""
    report.add("## One training step of every method", "")
    roof = matmul_rate(device, sizes.matmul, sizes.matmul_warmup_s)
    in_force = ", ".join(fast_paths(device).names(TRAINING_PATHS, bf16=True)) or "no fast path"
    report.add(
        f"Batch {sizes.train_batch}, {sizes.image} px ({sizes.inception_image} px InceptionV3), "
        f"{sizes.train_steps}-step L2 PGD, augmentation, {in_force} "
        f"(`dpaat.training._train_epoch` on one batch); FLOPs counted with torch.utils.flop_counter's formulas. "
        f"Measured bf16 matmul rate ({sizes.matmul}^3, after {sizes.matmul_warmup_s:.0f} s of warm-up): "
        f"**{roof:.3g} TFLOP/s**. Peak memory: the step's, allocated by torch.",
        "",
    )
    seconds: dict[tuple[str, str], float] = {}
    rows = []
    for arch in sizes.archs:
        for name in METHODS:
            if report.out_of_time(0.45):
                rows.append([arch, name, "skipped: out of time", "", "", "", ""])
                continue
            reset_peak(device)
            step = step_timer(device, sizes, arch, name)
            step_s = median_seconds(step, device, sizes.repeats)
            with FlopCount() as counter:
                step()
            tflop = counter.flops / 1e12
            seconds[(name, arch)] = step_s
            rows.append([arch, name, f"{1000 * step_s:.1f}", f"{sizes.train_batch / step_s:.0f}",
                         f"{tflop / step_s:.3g}", f"{100 * tflop / step_s / roof:.2g} %", peak_gib(device)])  # fmt: skip
            del step
    report.table(["CNN", "method", "ms / step", "images/s", "TFLOP/s", "of matmul rate", "peak GiB"], rows)
    return seconds


def determinism_cost(report: Report, device: torch.device, sizes: Sizes) -> dict[str, float]:
    """Section 5: a DPAAT training step with deterministic kernels (config/paper.yaml) and without."""
    report.add(
        "## What training.deterministic costs",
        "",
        "One DPAAT step as above with `training.deterministic: true` (config/paper.yaml: deterministic "
        "algorithms, cuDNN deterministic, no cuDNN benchmark) and `false`.",
        "",
    )
    rows, ratios = [], {}
    for arch in sizes.determinism_archs:
        if report.out_of_time(0.55):
            rows.append([arch, "skipped: out of time", "", ""])
            continue
        timed = {}
        for deterministic in (True, False):
            restore = set_deterministic(deterministic)
            try:
                timed[deterministic] = median_seconds(step_timer(device, sizes, arch, "dpaat"), device, sizes.repeats)
            finally:
                restore()
        ratios[arch] = timed[True] / timed[False]
        rows.append([arch, f"{1000 * timed[True]:.1f}", f"{1000 * timed[False]:.1f}", f"{ratios[arch]:.2f}"])
    report.table(["CNN", "deterministic ms / step", "not deterministic ms / step", "ratio"], rows)
    return ratios


def worker_work_gflop(spec: dict) -> float:
    """Forward GFLOPs of one mini-grid job's epochs in dpaat.job_resources' model (what gpu_gflops divides)."""
    k, n, val = spec["steps"], spec["images"], spec["val"]
    total = 0.0
    for name, arch in spec["models"]:
        size = spec["inception_size"] if arch == "inception_v3" else spec["size"]
        gflops, native = job_resources.ARCH_GFLOPS[arch]
        units = n * METHOD_KINDS[name].train_units(k) + val * (2 * k + 2)
        total += units * gflops * (size / native) ** 2
    return total


def grid_worker(spec: dict) -> None:
    """One mini-grid job (a subprocess): build its models, warm up, wait for go, train each one epoch, report."""
    set_fast_paths_mode(spec["fast_paths"])
    device = torch.device(spec["device"])
    torch.set_num_threads(spec["threads"])
    execution = ExecutionSettings(threads=spec["threads"], deterministic=spec["deterministic"])
    n, batch = spec["images"], spec["batch"]
    jobs = []
    for name, arch in spec["models"]:
        size = spec["inception_size"] if arch == "inception_v3" else spec["size"]
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)
        labels = torch.arange(n) % 3
        torch.manual_seed(0)
        model = build_model(arch, 3)
        jobs.append((model, training_method(name, batch, spec["steps"], n, device), images, labels))
        # Warm-up (CUDA context, cuDNN's benchmark) on one batch of a copy, outside the timed part.
        warm_up = training_method(name, batch, spec["steps"], batch, device)
        train(copy.deepcopy(model), warm_up, images[:batch], labels[:batch], images[:batch], labels[:batch], seed=1,
              device=device, execution=execution, progress=False)  # fmt: skip
    reset_peak(device)
    Path(spec["ready"]).write_text("ready")
    while not Path(spec["go"]).exists():
        time.sleep(0.02)
    for model, method, images, labels in jobs:
        train(model, method, images, labels, images[: spec["val"]], labels[: spec["val"]], seed=0, device=device,
              execution=execution, progress=False)  # fmt: skip
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    Path(spec["result"]).write_text(json.dumps({"end": time.time(), "peak_gib": peak}))


def run_workers(specs: list[dict], folder: Path, limit: float) -> list[dict]:
    """Start the jobs, wait for all to warm up, start them together; their results (time-out: `limit` seconds)."""
    deadline = time.monotonic() + limit
    procs = []
    for spec in specs:
        env = os.environ | {"OMP_NUM_THREADS": str(spec["threads"])}
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env))
    try:
        while not all(Path(spec["ready"]).exists() for spec in specs):
            if any(p.poll() not in (None, 0) for p in procs):
                raise RuntimeError("a mini-grid job failed while warming up; see its output in the log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the mini-grid jobs were not warmed up within {limit:.0f} s")
            time.sleep(0.05)
        started = time.time()
        (folder / "go").write_text("go")
        for p in procs:
            if p.wait(timeout=max(1.0, deadline - time.monotonic())) != 0:
                raise RuntimeError("a mini-grid job failed; see its output in the log")
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"the mini-grid jobs did not finish within {limit:.0f} s") from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [{**json.loads(Path(spec["result"]).read_text()), "started": started} for spec in specs]


def mini_grid(report: Report, device: torch.device, sizes: Sizes, mode: str) -> dict[int, dict[str, float]]:
    """Section 6: k concurrent jobs on one device, each training the same mix of models for one epoch."""
    val = max(sizes.train_batch, sizes.grid_images // 8)
    models = ", ".join(f"{m}/{a}" for m, a in sizes.grid_models)
    report.add(
        "## Jobs per GPU: a one-epoch mini-grid",
        "",
        f"Each of k concurrent jobs trains the same {len(sizes.grid_models)} models ({models}) for one epoch of "
        f"{sizes.grid_images} images ({val} validation images) at {sizes.image} px ({sizes.inception_image} px "
        f"InceptionV3), batch {sizes.train_batch}, {sizes.train_steps}-step PGD, the paper's settings with "
        "`deterministic: true`; timed from a common start after every job has warmed up. Throughput gain "
        "s_k = k x T_1 / T_k; a job's GFLOP/s is its work (dpaat.job_resources' count) over T_k: the "
        "`job_resources.gpu_gflops` of a run with `gpu.jobs_per_device: k`.",
        "",
    )
    measured: dict[int, dict[str, float]] = {}
    rows = []
    for k in sizes.grid_jobs:
        if report.out_of_time(0.9):
            rows.append([k, "skipped: out of time", "", "", ""])
            continue
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            specs = [{
                "device": str(device), "threads": 1 if device.type == "cpu" else 2, "fast_paths": mode,
                "deterministic": True, "models": list(sizes.grid_models), "images": sizes.grid_images, "val": val,
                "size": sizes.image, "inception_size": sizes.inception_image, "batch": sizes.train_batch,
                "steps": sizes.train_steps, "ready": str(folder / f"ready{job}"), "go": str(folder / "go"),
                "result": str(folder / f"result{job}.json"),
            } for job in range(k)]  # fmt: skip
            results = run_workers(specs, folder, max(10.0, report.seconds_left(0.9)))
        wall = max(r["end"] for r in results) - results[0]["started"]
        work = worker_work_gflop(specs[0])
        peaks = [r["peak_gib"] for r in results if r["peak_gib"] is not None]
        measured[k] = {"wall": wall, "job_gflops": work / wall}
        gain = k * measured[1]["wall"] / wall if 1 in measured else math.nan
        rows.append([k, f"{wall:.1f}", f"{gain:.2f}", f"{work / wall:.3g}", f"{max(peaks):.2f}" if peaks else "n/a"])
    report.table(["jobs per device k", "T_k seconds", "throughput gain s_k", "GFLOP/s per job (gpu_gflops)",
                  "peak GiB per job"], rows)  # fmt: skip
    return measured


def paper_config() -> dict:
    """config/config.yaml updated with config/paper.yaml, the schema's defaults filled (PyYAML, no snakemake)."""
    import yaml

    config: dict = {}
    for path in (REPO / "config" / "config.yaml", PAPER_CONFIG):
        job_resources._update(config, yaml.safe_load(path.read_text()) or {})
    return with_defaults(config)


def paper_grid_work(config: dict) -> dict[str, float]:
    """Forward GFLOPs of every model job of the paper's grid, by rule (dpaat.job_resources' model)."""
    training, archs, seeds = config["training"], config["models"]["archs"], len(config["seeds"])
    ablation = config["ablation"]
    work = {"train": 0.0, "train_ablation": 0.0, "evaluate": 0.0, "evaluate_ablation": 0.0, "gradcam": 0.0}
    ablation_training = {**training, "batch_size": ablation["batch_size"], "epochs": ablation["epochs"]}
    ablation_config = {**config, "training": ablation_training}
    for arch in archs:
        for method in training["methods"]:
            work["train"] += seeds * job_resources.work_gflop(config, "train", arch, method)
            work["evaluate"] += seeds * job_resources.work_gflop(config, "evaluate", arch)
        if arch in config["report"]["gradcam_archs"]:
            work["gradcam"] += job_resources.work_gflop(config, "gradcam", arch)
        if arch in config["report"]["ablation_archs"]:
            for method in ablation["methods"]:
                work["train_ablation"] += seeds * job_resources.work_gflop(ablation_config, "train", arch, method)
                work["evaluate_ablation"] += seeds * job_resources.work_gflop(config, "evaluate_ablation", arch)
    return work


def grid_estimate(report: Report, grid: dict[int, dict[str, float]] | None, ratios: dict[str, float] | None) -> None:
    """Section 7: the paper grid's time, its work over the measured GFLOP/s per job and k jobs per GPU."""
    config = paper_config()
    work = paper_grid_work(config)
    total = sum(work.values())
    report.add(
        "## The paper grid's time",
        "",
        f"config/paper.yaml: {len(config['seeds'])} seeds x {len(config['models']['archs'])} CNNs x the methods "
        f"{', '.join(config['training']['methods'])} ({config['training']['warmup_epochs']} + "
        f"{config['training']['epochs']} epochs, an upper bound: early stopping ends most runs sooner), one "
        f"evaluation job per model (the test and sanity attacks), the ablation's "
        f"{', '.join(config['ablation']['methods'])} and Grad-CAM; `deterministic: "
        f"{str(config['training']['deterministic']).lower()}`. Work in forward GFLOPs "
        "(dpaat.job_resources: a backward counts 2 forwards, Square at its full query budget):",
        "",
    )
    report.table(["jobs", "PFLOP"], [[rule, f"{gflop / 1e6:.1f}"] for rule, gflop in work.items()]
                 + [["all", f"{total / 1e6:.1f}"]])  # fmt: skip
    if not grid:
        report.add("Hours not computed: the mini-grid did not run (see above).", "")
        return
    report.add(
        "T_grid(k) = all work / (k x GFLOP/s per job at k) on one GPU (evaluation assumed to run at training's "
        "rate); divide by the number of GPUs. The mini-grid ran with deterministic kernels, as the paper "
        "config does" + (f"; without them a step takes {1 / statistics.fmean(ratios.values()):.2f} x the time "
                         "(section 5)" if ratios else "") + ".",
        "",
    )  # fmt: skip
    rows = [[k, f"{m['job_gflops']:.3g}", f"{total / (k * m['job_gflops']) / 3600:.1f}"] for k, m in sorted(grid.items())]
    report.table(["k", "GFLOP/s per job (gpu_gflops to set)", "T_grid hours on one GPU"], rows)


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
        # The GPU's program on the CPU: every fast path with a CPU implementation.
        device, sizes, mode = torch.device("cpu"), SMOKE, "always"
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device visible to torch: run with --cpu-smoke on a machine without a GPU")
        device, sizes, mode = torch.device("cuda", 0), FULL, "auto"
        torch.backends.cudnn.benchmark = True
    set_fast_paths_mode(mode)
    began = time.monotonic()
    report = Report(args.budget, args.out)
    report.add("# GPU check (benchmarks/gpu_check.py)", "")
    report.add(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
               f"{'CPU smoke run (toy sizes, gpu.fast_paths: always)' if args.cpu_smoke else 'full run'}, "
               f"budget {args.budget:.0f} s.", "")  # fmt: skip
    report.section(versions, device, mode)
    if not args.skip_tests:
        report.section(cuda_tests, args.cpu_smoke)
    report.section(attack_speed, device, sizes)
    report.section(training_steps, device, sizes)
    ratios = report.section(determinism_cost, device, sizes)
    grid = report.section(mini_grid, device, sizes, mode)
    report.section(grid_estimate, grid, ratios)
    report.add(f"Total wall time of the check: {time.monotonic() - began:.0f} s.")


if __name__ == "__main__":
    main()
