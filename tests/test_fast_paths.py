"""The CUDA fast paths, each run on the CPU: bf16 autocast, channels_last, fused Adam, device choice, checkpoints.

`gpu.fast_paths: always` turns them on for the CPU; the tests below with the `always`
fixture run the GPU's program through the library's own entry points.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from dpaat.attacks import pgd
from dpaat.fast_paths import (
    TRAINING_PATHS,
    FastPaths,
    adam,
    as_layout,
    evaluation_batch_size,
    fast_paths,
    model_to,
    set_fast_paths_mode,
    use_fast_paths,
)
from dpaat.methods import METHODS, build_method
from dpaat.models import build_model
from dpaat.predict import device_images, predict_logits
from dpaat.settings import TrainingSettings, training_section
from dpaat import training
from dpaat.training import _autocast, _train_epoch, validate

ADVERSARY = {"norm": "l2", "eps": 0.3, "steps": 2, "step_size": 0.15}


def method_for(name: str, num_samples: int, device: torch.device | str = "cpu", **overrides):
    """Method `name` with the schema's settings, a 2-step adversary, ξ = 1 and `overrides`, prepared for the data."""
    settings = TrainingSettings.from_mapping(name, {"adversary": ADVERSARY, "amat": {"xi": 1.0}, **overrides})
    method = build_method(settings)
    method.prepare(num_samples, device)
    return method


def batch(n: int = 8, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, 3, (n,), generator=generator)


def small_model(arch: str = "mobilenet_v2") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(arch, 3, pretrained=False)


@pytest.fixture
def always():
    """gpu.fast_paths: always for the test, the previous mode after it."""
    previous = set_fast_paths_mode("always")
    yield
    set_fast_paths_mode(previous)


@pytest.mark.parametrize("device", ["cpu", "cuda", "meta"])
def test_always_turns_every_fast_path_on_and_never_turns_them_off_whatever_the_device(device):
    assert fast_paths(device, "always") == FastPaths(True, True, True, True)
    assert fast_paths(device, "never") == FastPaths(False, False, False, False)
    assert fast_paths(device, "auto") == fast_paths(device)  # auto is the process's default mode


def test_the_process_mode_is_what_the_library_reads(always):
    assert fast_paths("cpu") == FastPaths(True, True, True, True) and evaluation_batch_size("cpu", 64, 256) == 256
    assert set_fast_paths_mode("never") == "always"
    assert fast_paths("cuda") == FastPaths(False, False, False, False)


@pytest.mark.parametrize("bad", [True, False, "on", None])
def test_a_bad_mode_is_an_error_naming_the_choices(bad):
    with pytest.raises(ValueError, match="gpu.fast_paths must be auto, always or never"):
        set_fast_paths_mode(bad)
    assert fast_paths("cpu") == FastPaths(False, False, False, False), "the mode is unchanged"


def test_a_model_job_logs_and_records_the_fast_paths_in_force(caplog):
    previous = set_fast_paths_mode("auto")
    try:
        with caplog.at_level("INFO"):
            assert use_fast_paths("always", "cpu", TRAINING_PATHS, bf16=True) == ["channels_last", "fused_adam", "bf16"]
            assert use_fast_paths("always", "cpu", TRAINING_PATHS, bf16=False) == ["channels_last", "fused_adam"]
            assert use_fast_paths("auto", "cpu", TRAINING_PATHS, bf16=True) == []
        assert "fast paths in force on cpu (gpu.fast_paths: always): channels_last, fused_adam, bf16" in caplog.text
        assert "(gpu.fast_paths: auto): none" in caplog.text
    finally:
        set_fast_paths_mode(previous)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_cuda_devices_get_every_fast_path(device):
    assert fast_paths(device) == FastPaths(channels_last=True, fused_adam=True, bf16_training=True, gpu_batch_size=True)
    assert fast_paths(device).memory_format is torch.channels_last
    assert evaluation_batch_size(device, 64, 256) == 256


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "meta"])
def test_other_devices_get_none_and_keep_the_layout(device):
    assert fast_paths(device) == FastPaths(False, False, False, False)
    assert fast_paths(device).memory_format is None and evaluation_batch_size(device, 64, 256) == 64
    x = torch.rand(2, 3, 4, 4)
    assert as_layout(x, None) is x


def test_channels_last_gives_the_nchw_logits_and_attacks_within_float_tolerance():
    model = small_model().eval()
    images, labels = batch()
    nchw = predict_logits(model, images, batch_size=4)
    last = model_to(copy.deepcopy(model), "cpu", torch.channels_last)
    x = as_layout(images.float() / 255, torch.channels_last)
    assert x.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(last(x), nchw, atol=1e-4, rtol=1e-4)
    x_adv_nchw = pgd(model, images.float() / 255, labels, eps=0.3, steps=2, step_size=0.15)
    x_adv_last = pgd(last, x, labels, eps=0.3, steps=2, step_size=0.15)
    assert x_adv_last.is_contiguous(memory_format=torch.channels_last), "the attack keeps the layout"
    assert (x_adv_last - x_adv_nchw).abs().max() < 1e-3


def test_uint8_batches_are_copied_before_they_are_converted():
    images, _ = batch(2, 8)
    assert torch.equal(device_images(images, "cpu"), images.float() / 255)
    assert device_images(images.float() / 255, "cpu").dtype == torch.float32


def test_fused_adam_steps_like_the_default_one():
    reference, fused = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    fused.load_state_dict(reference.state_dict())
    optimisers = [
        adam(list(reference.parameters()), 1e-2, fused=False),
        adam(list(fused.parameters()), 1e-2, fused=True),
    ]
    assert optimisers[1].defaults["fused"] and not optimisers[0].defaults["fused"]
    x = torch.randn(16, 6)
    for _ in range(5):
        for model, optimiser in zip((reference, fused), optimisers):
            optimiser.zero_grad()
            model(x).square().mean().backward()
            optimiser.step()
    for a, b in zip(reference.parameters(), fused.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_bf16_autocast_trains_every_method_through_the_loops_functions(name):
    """The CUDA branch's code with device_type="cpu": finite losses, eps in bounds, float32 eps and attacks."""
    model = small_model()
    images, labels = batch(8)
    method = method_for(name, len(images))
    optimiser = adam(list(model.parameters()), 1e-3, fused=False)
    loss, eps = _train_epoch(
        model, method, optimiser, images, labels, 4, torch.Generator().manual_seed(0), torch.device("cpu"), True,
        memory_format=torch.channels_last,
    )  # fmt: skip
    assert loss == loss and abs(loss) < 100
    if eps is not None:
        assert eps.dtype == torch.float32 and eps.min() >= 0 and eps.max() <= 2 * ADVERSARY["eps"] + 1e-6
    scores = validate(
        model, images, labels, adversary=method.adversary, adversarial_loss=method.adversarial, batch_size=4,
        device=torch.device("cpu"), bf16=True,
    )  # fmt: skip
    assert all(0 <= scores[key] <= 1 for key in ("val_clean_acc", "val_adv_acc")) and scores["val_loss"] < 100


def test_bf16_attacks_keep_float32_budgets_and_land_near_the_float32_attack():
    model = small_model("resnet34").eval()
    images, labels = batch(8)
    x = images.float() / 255
    eps = torch.linspace(0.1, 0.6, len(x))
    reference = pgd(model, x, labels, eps=eps, steps=3, step_size=eps / 2)
    with _autocast(torch.device("cpu"), True):
        half = pgd(model, x, labels, eps=eps, steps=3, step_size=eps / 2)
        with torch.no_grad():
            assert model(x).dtype == torch.bfloat16, "autocast is on"
    assert half.dtype == torch.float32
    norms = (half - x).flatten(1).norm(dim=1)
    assert (norms <= eps + 1e-5).all(), "per-sample L2 budgets hold exactly (float32 projection)"
    # bf16 gradients point nearly where float32 ones do: the perturbations agree in direction.
    cosine = F.cosine_similarity((half - x).flatten(1), (reference - x).flatten(1))
    assert cosine.min() > 0.9, cosine


def one_epoch_on_the_cpu(bf16: bool, name: str = "std"):
    """`name` (STD) for one epoch of batch 3, no augmentation."""
    return method_for(name, 6, warmup_epochs=0, epochs=1, batch_size=3, lr=1e-3, patience=1, bf16=bf16,
                      augmentation={"enabled": False})  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("auto", (False, None, False)), ("always", (True, torch.channels_last, True))],
)
def test_the_cpu_trains_with_bf16_channels_last_and_fused_adam_under_always_only(monkeypatch, mode, expected):
    """training.bf16 is ignored on the CPU under auto; always brings it, channels_last and fused Adam (TRADES)."""
    seen = []
    real = training._train_epoch

    def spy(*args, **kwargs):
        seen.append((args[8], kwargs.get("memory_format"), bool(args[2].defaults["fused"])))
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "_train_epoch", spy)
    model = small_model()
    images, labels = batch(6, 24)
    method = one_epoch_on_the_cpu(bf16=True, name="trades")
    previous = set_fast_paths_mode(mode)
    try:
        training.train(model, method, images, labels, images, labels, seed=0, progress=False)
    finally:
        set_fast_paths_mode(previous)
    assert seen == [expected]
    layout = torch.channels_last if mode == "always" else torch.contiguous_format
    assert model.backbone.features[0][0].weight.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("killed_at", [1, 2])
def test_a_fused_adam_bf16_channels_last_run_resumes_to_the_uninterrupted_runs_weights(tmp_path, always, killed_at):
    """Killed in the warm-up or the full phase (the fused optimiser's state restored), then resumed."""
    from test_training import RANDOM_START, Kill, assert_same_state, kill_after, run, training_mapping, without_seconds

    mapping = training_mapping(adversary=RANDOM_START, bf16=True)
    whole_model, whole = run("amat", mapping)
    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(Kill):
        run("amat", mapping, checkpoint_path=checkpoint, callback=kill_after(killed_at))
    assert torch.load(checkpoint, weights_only=True)["optimizer"]["param_groups"][0]["fused"]
    resumed_model, resumed = run("amat", mapping, checkpoint_path=checkpoint)
    assert resumed.resumed_from_epoch == killed_at
    assert_same_state(resumed_model.state_dict(), whole_model.state_dict())
    assert without_seconds(resumed.history).equals(without_seconds(whole.history))


def test_the_checkpoint_holds_the_best_weights_once_when_they_are_the_models(tmp_path):
    model = small_model("squeezenet1_1")
    images, labels = batch(6, 24)
    path = tmp_path / "checkpoint.pt"
    training.train(model, one_epoch_on_the_cpu(bf16=False), images, labels, images, labels, seed=0, progress=False,
                   checkpoint_path=path)  # fmt: skip
    blob = torch.load(path, weights_only=True)
    assert blob["best_is_model"] and blob["run_state"]["best_state"] is None
    assert all(torch.equal(blob["model"][k], v) for k, v in model.state_dict().items())


def test_grad_cam_of_a_channels_last_model_is_the_nchw_models():
    from dpaat.gradcam import compute_cams

    model = small_model().eval()
    images, labels = batch(4, 32)
    x = images.float() / 255
    last = model_to(copy.deepcopy(model), "cpu", torch.channels_last)
    cams = compute_cams(last, last.gradcam_target_layer(32), x, labels)
    reference = compute_cams(model, model.gradcam_target_layer(32), x, labels)
    assert cams.shape == (4, 32, 32) and float(abs(cams - reference).max()) < 1e-4


def test_evaluation_under_always_runs_every_attack_kind_in_channels_last_at_the_gpu_batch(tmp_path, always):
    """The evaluate job's library calls on a GPU's settings: the same logits as the NCHW program, within float error."""
    from dpaat.evaluation import attack_specs, evaluate_model
    from dpaat.trained import load_trained, save_trained

    path = tmp_path / "weights.pt"
    save_trained(small_model(), "mobilenet_v2", ["mel", "bkl", "nv"], 32, path)
    images, labels = batch(7, 32)
    specs = attack_specs({
        "fgsm": {"kind": "fgsm", "eps": 0.01}, "ifgsm": {"kind": "ifgsm", "eps": 0.01, "steps": 2},
        "pgd": {"kind": "pgd", "eps": 0.3, "steps": 2}, "restarts": {"kind": "pgd", "eps": 0.3, "steps": 2, "restarts": 2},
        "apgd": {"kind": "apgd", "eps": 0.3, "steps": 2}, "apgd_dlr": {"kind": "apgd", "eps": 0.3, "steps": 2, "loss": "dlr"},
        "square": {"kind": "square", "eps": 0.3, "queries": 5},
        "autoattack": {"kind": "autoattack", "eps": 0.3, "steps": 2, "queries": 5},
    })  # fmt: skip
    batch_size = evaluation_batch_size("cpu", 4, 5)
    trained = load_trained(path, "cpu")
    assert batch_size == 5 and trained.model.backbone.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    fast = evaluate_model(trained.model, images, labels, specs, batch_size=batch_size, device="cpu")
    set_fast_paths_mode("auto")
    # The same batches (Square's and the restarts' draws are per batch), NCHW and no fast path.
    reference = evaluate_model(load_trained(path, "cpu").model, images, labels, specs, batch_size=5, device="cpu")
    assert fast.keys() == reference.keys() == {"clean", *specs}
    for name in reference:
        assert torch.allclose(fast[name], reference[name], atol=1e-3), name


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU torch can use")


@pytest.mark.cuda
@needs_cuda
def test_cuda_auto_picks_the_gpu_and_batches_arrive_as_channels_last_floats():
    from dpaat.runtime import select_device

    assert select_device("auto").type == "cuda"
    images, _ = batch(4, 16)
    x = device_images(images, "cuda")
    assert x.device.type == "cuda" and x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x.cpu(), images.float() / 255)


@pytest.mark.cuda
@needs_cuda
def test_cuda_logits_match_the_cpu_within_tf32_tolerance():
    model = small_model("resnet34").eval()
    images, _ = batch(8, 64)
    cpu = predict_logits(model, images, batch_size=4)
    gpu = predict_logits(model_to(copy.deepcopy(model), "cuda", torch.channels_last), images, batch_size=4,
                         device="cuda")  # fmt: skip
    assert torch.allclose(gpu, cpu, atol=5e-2, rtol=5e-2)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", ["at", "amat", "dpaat"])
def test_cuda_training_step_with_every_fast_path(name):
    device = torch.device("cuda")
    model = model_to(small_model(), device, torch.channels_last)
    images, labels = batch(8, 64)
    images, labels = images.to(device), labels.to(device)
    method = method_for(name, len(images), device)
    optimiser = adam(list(model.parameters()), 1e-3, fused=True)
    loss, eps = _train_epoch(model, method, optimiser, images, labels, 4, torch.Generator().manual_seed(0), device,
                             True, memory_format=torch.channels_last)  # fmt: skip
    assert math.isfinite(loss)
    if eps is not None:
        assert eps.dtype == torch.float32 and 0 <= eps.min() and eps.max() <= 2 * ADVERSARY["eps"] + 1e-6


@pytest.mark.cuda
@needs_cuda
def test_cuda_augmentation_equals_the_cpus():
    from dpaat.augment import BatchAugmentation

    augment = BatchAugmentation(training_section("augmentation"))  # Margeloiu et al.'s, the schema's defaults
    images, _ = batch(16, 64)
    params = augment.draw(len(images), seed=0, epoch=0, batch=0)
    difference = (augment.apply(images.cuda(), params).cpu().int() - augment.apply(images, params).int()).abs()
    assert (difference > 0).float().mean() < 0.005
