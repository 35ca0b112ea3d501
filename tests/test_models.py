"""Models: every architecture at a tiny size, normalisation, heads, Grad-CAM layers, cached weights."""

import re
import socket
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from dpaat.models import ARCHITECTURES, Classifier, build_model, image_size_for

NUM_CLASSES = 5
SIZE = {"inception_v3": 75}  # InceptionV3's minimum input; the rest run at 64 px


def size_of(arch: str) -> int:
    return SIZE.get(arch, 64)


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def built(request) -> tuple[str, Classifier]:
    torch.manual_seed(0)
    return request.param, build_model(request.param, NUM_CLASSES).eval()


def test_forward_normalises_inside_and_gives_one_logit_per_class(built):
    arch, model = built
    x = torch.rand(2, 3, size_of(arch), size_of(arch))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, model.backbone((x - mean) / std))
    assert out.shape == (2, NUM_CLASSES) and out.isfinite().all()


def test_head_parameters_are_exactly_the_new_head(built):
    _, model = built
    head = {id(p) for p in model.head_parameters()}
    # Only the new head has NUM_CLASSES output units; no trace of the 1000-class ImageNet head remains.
    assert head == {id(p) for p in model.parameters() if p.shape[0] == NUM_CLASSES}
    assert len(head) == 2
    assert not any(p.shape[0] == 1000 for p in model.parameters())


def test_no_in_place_activation_is_left(built):
    _, model = built
    assert not any(getattr(m, "inplace", False) for m in model.modules() if isinstance(m, (nn.ReLU, nn.Hardtanh)))


def feature_map_shape(model: Classifier, layer: nn.Module, size: int) -> tuple[int, int]:
    shapes = []
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    handle.remove()
    return shapes[0]


def test_gradcam_layer_is_the_deepest_that_fits():
    """MobileNetV2: stride 32 gives 2x2 at 64 px, so stride 16 (4x4); at 224 px stride 32 gives 7x7."""
    model = build_model("mobilenet_v2", NUM_CLASSES).train()
    forwards = []
    handle = model.register_forward_pre_hook(lambda _m, _i: forwards.append(1))
    layer = model.gradcam_target_layer(64)
    assert model.gradcam_target_layer(64) is layer and len(forwards) == 1  # measured once, then cached
    assert model.training  # the dummy pass ran in eval mode and left the mode as it was
    handle.remove()
    model.eval()
    assert feature_map_shape(model, layer, 64) == (4, 4)
    assert model.gradcam_target_layer(224) is model.backbone.features[18]
    assert feature_map_shape(model, model.gradcam_target_layer(224), 224) == (7, 7)


def test_gradcam_layer_is_larger_than_2x2_and_grad_cam_sees_untouched_activations(built):
    """pytorch-grad-cam keeps the hooked output tensor itself: an in-place op after the layer would alter it."""
    arch, model = built
    size = size_of(arch)
    layer = model.gradcam_target_layer(size)
    clones = []
    handle = layer.register_forward_hook(lambda _m, _i, out: clones.append(out.detach().clone()))
    x = torch.rand(2, 3, size, size)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(3)])
        torch.testing.assert_close(cam.activations_and_grads.activations[0], clones[0])
    handle.remove()
    assert min(clones[0].shape[-2:]) > 2
    assert heat.shape == (2, size, size)
    assert (heat >= 0).all() and (heat <= 1).all()


def test_build_is_reproducible_and_state_dict_round_trips():
    torch.manual_seed(0)
    a = build_model("squeezenet1_1", NUM_CLASSES)
    torch.manual_seed(0)
    b = build_model("squeezenet1_1", NUM_CLASSES)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = build_model("squeezenet1_1", NUM_CLASSES)
    c.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(c.eval()(x), a.eval()(x), rtol=0, atol=0)


def test_default_image_sizes_and_image_size_for():
    assert {a: s.image_size for a, s in ARCHITECTURES.items()} == {
        "resnet34": 224,
        "inception_v3": 299,
        "densenet121": 224,
        "mobilenet_v2": 224,
        "shufflenet_v2_x1_0": 224,
        "squeezenet1_1": 224,
    }
    assert image_size_for("inception_v3", 224, 299) == 299
    assert image_size_for("resnet34", 224, 299) == 224
    with pytest.raises(ValueError, match="inception_image_size"):
        image_size_for("inception_v3", 224, 64)
    with pytest.raises(ValueError, match="resnet34"):
        image_size_for("resnet50", 224, 299)


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="choose one of"):
        build_model("vgg16", NUM_CLASSES)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("squeezenet1_1", 1)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        build_model("squeezenet1_1", NUM_CLASSES)(torch.rand(1, 1, 64, 64))


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch cache, with every way of reaching the network made to fail loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return tmp_path


def densenet_old_keys(state: dict) -> dict:
    """Spell keys as torchvision's published DenseNet checkpoint does: 'norm.1', no num_batches_tracked."""
    return {
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }


FAKE_IMAGENET = {
    "squeezenet1_1": (lambda: tvm.squeezenet1_1(), "squeezenet1_1-b8a52dc0.pth", lambda s: s),
    "densenet121": (lambda: tvm.densenet121(), "densenet121-a639ec97.pth", densenet_old_keys),
    "inception_v3": (
        lambda: tvm.inception_v3(aux_logits=True, init_weights=False),
        "inception_v3_google-0cc3c7bd.pth",
        lambda s: s,
    ),
}


@pytest.mark.parametrize("arch", sorted(FAKE_IMAGENET))
def test_pretrained_weights_load_from_the_torch_cache(arch, offline_torch_home):
    make, file_name, rename = FAKE_IMAGENET[arch]
    torch.manual_seed(1)
    reference = make().state_dict()
    checkpoints = offline_torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(rename(reference), checkpoints / file_name)

    torch.manual_seed(2)
    model = build_model(arch, NUM_CLASSES, pretrained=True)
    loaded = model.backbone.state_dict()
    head = ARCHITECTURES[arch].head
    compared = 0
    for key, value in reference.items():
        if key.startswith(head + ".") or key.startswith("AuxLogits."):
            continue
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded[key], value), key
        compared += 1
    assert compared == len(loaded) - 2  # everything but the new head's weight and bias


def test_missing_pretrained_weights_name_the_file_and_the_fix(offline_torch_home):
    expected = offline_torch_home / "hub" / "checkpoints" / "resnet34-b627a593.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_model("resnet34", NUM_CLASSES, pretrained=True)
    message = str(err.value)
    assert str(expected) in message
    assert "TORCH_HOME" in message and "models.pretrained: false" in message
