"""The six torchvision CNNs of the paper as [0, 1]-input classifiers, by name.

`build_model(arch, num_classes)` returns a `Classifier`: ImageNet normalisation inside
the module (attacks work in pixel space), the ImageNet head replaced for our classes,
the head's parameters exposed for the head-only warm-up, and a Grad-CAM target layer
chosen for the image size. ImageNet weights come only from the local torch cache.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
import torchvision.models as tvm
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from dpaat.attacks import eval_mode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's DenseNet checkpoints predate the ban on '.' in module names: their
# keys read 'denselayer1.norm.1.weight' where the module is 'denselayer1.norm1'.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


@dataclass(frozen=True)
class ArchSpec:
    """How to build one torchvision architecture and where its head and Grad-CAM layers are."""

    builder: Callable[..., nn.Module]
    weights: WeightsEnum
    head: str
    cam_layers: tuple[str, ...]
    image_size: int = 224
    builder_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def weights_file(self) -> str:
        """File name of the ImageNet checkpoint in the torch cache (as torch.hub names it)."""
        return os.path.basename(self.weights.url)

    @property
    def min_image_size(self) -> int:
        """Smallest input the architecture accepts (torchvision's own metadata)."""
        return max(self.weights.meta["min_size"])


# Grad-CAM candidates are block outputs, shallow to deep, whose tensors nothing modifies
# in place afterwards (pytorch-grad-cam hooks the output tensor itself). DenseNet's
# `features`/`norm5` are excluded: its forward applies F.relu(inplace=True) to them.
ARCHITECTURES: Mapping[str, ArchSpec] = MappingProxyType(
    {
        "resnet34": ArchSpec(
            tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1, "fc", ("layer1", "layer2", "layer3", "layer4")
        ),
        "inception_v3": ArchSpec(
            tvm.inception_v3,
            tvm.Inception_V3_Weights.IMAGENET1K_V1,
            "fc",
            tuple(f"Mixed_{b}" for b in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c")),
            image_size=299,
            # The Google weights expect (x - 0.5) / 0.5; transform_input maps our ImageNet-normalised
            # input to exactly that, as torchvision does when it loads these weights.
            builder_kwargs={"aux_logits": False, "transform_input": True, "init_weights": True},
        ),
        "densenet121": ArchSpec(
            tvm.densenet121,
            tvm.DenseNet121_Weights.IMAGENET1K_V1,
            "classifier",
            tuple(f"features.denseblock{i}" for i in range(1, 5)),
        ),
        "mobilenet_v2": ArchSpec(
            tvm.mobilenet_v2,
            tvm.MobileNet_V2_Weights.IMAGENET1K_V1,
            "classifier.1",
            tuple(f"features.{i}" for i in range(19)),
        ),
        "shufflenet_v2_x1_0": ArchSpec(
            tvm.shufflenet_v2_x1_0,
            tvm.ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1,
            "fc",
            ("stage2", "stage3", "stage4", "conv5"),
        ),
        "squeezenet1_1": ArchSpec(
            tvm.squeezenet1_1,
            tvm.SqueezeNet1_1_Weights.IMAGENET1K_V1,
            "classifier.1",
            tuple(f"features.{i}" for i in (3, 4, 6, 7, 9, 10, 11, 12)),  # the Fire modules
        ),
    }
)


def _spec(arch: str) -> ArchSpec:
    """Look up an architecture, with the valid names in the error."""
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}") from None


def image_size_for(arch: str, image_size: int, inception_image_size: int) -> int:
    """Input resolution of `arch`: InceptionV3 runs at its own size, the others at `image_size`."""
    spec = _spec(arch)
    size = inception_image_size if arch == "inception_v3" else image_size
    if size < spec.min_image_size:
        key = "models.inception_image_size" if arch == "inception_v3" else "models.image_size"
        raise ValueError(f"{arch} needs inputs of at least {spec.min_image_size} px, got {size}; raise {key}")
    return size


class Normalize(nn.Module):
    """Per-channel (x - mean) / std with the constants as buffers, so they follow .to(device, dtype)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        # Not persistent: constants of the architecture, not learned state.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise an (N, C, H, W) batch."""
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """A torchvision backbone taking [0, 1] images, normalised inside, with a fresh class head."""

    def __init__(self, arch: str, backbone: nn.Module) -> None:
        super().__init__()
        self.arch = arch
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone = backbone
        self._cam_layer_by_size: dict[int, str] = {}

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) for images (N, 3, H, W) in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W) in [0, 1], got shape {tuple(x.shape)}")
        return self.backbone(self.normalize(x))

    @property
    def head(self) -> nn.Module:
        """The replaced classification layer."""
        return self.backbone.get_submodule(_spec(self.arch).head)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the new head only (trained alone during the warm-up)."""
        return list(self.head.parameters())

    def gradcam_target_layer(self, image_size: int) -> nn.Module:
        """Deepest Grad-CAM candidate layer whose feature map is at least 3x3 at `image_size`."""
        if image_size not in self._cam_layer_by_size:
            self._cam_layer_by_size[image_size] = self._deepest_layer_at_least_3x3(image_size)
        return self.backbone.get_submodule(self._cam_layer_by_size[image_size])

    def _deepest_layer_at_least_3x3(self, image_size: int) -> str:
        """Measure the candidates' feature maps with one dummy forward pass."""
        names = _spec(self.arch).cam_layers
        sizes: dict[str, tuple[int, int]] = {}
        handles = [
            self.backbone.get_submodule(name).register_forward_hook(
                lambda _m, _i, out, name=name: sizes.__setitem__(name, tuple(out.shape[-2:]))
            )
            for name in names
        ]
        param = next(self.parameters())
        try:
            with torch.no_grad(), eval_mode(self):
                self(torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype))
        finally:
            for h in handles:
                h.remove()
        fitting = [name for name in names if min(sizes[name]) >= 3]
        if not fitting:
            raise ValueError(
                f"{self.arch} at {image_size} px has no Grad-CAM layer with a map of at least 3x3; use larger images"
            )
        return fitting[-1]


def weights_path(arch: str) -> Path:
    """Where torch.hub caches `arch`'s ImageNet weights (honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _spec(arch).weights_file


def _load_imagenet_weights(arch: str, backbone: nn.Module, path: Path) -> None:
    """Load the cached ImageNet checkpoint at `path` into the 1000-class backbone; never downloads."""
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet weights for {arch} were requested but {path} does not exist (jobs never download). "
            "Fix: rerun snakemake with --forcerun weights where the internet is (rule weights fetches it; trained "
            f"models are kept), or put {path.name} there, or set TORCH_HOME to a torch cache that holds it under "
            "hub/checkpoints/, or set models.pretrained: false."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    fixed = {}
    for key, value in state.items():
        if key.startswith("AuxLogits."):  # InceptionV3 is built without its auxiliary head
            continue
        match = _DENSENET_OLD_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    try:
        backbone.load_state_dict(fixed)
    except RuntimeError as err:
        raise RuntimeError(f"{path} does not hold {arch} ImageNet weights: {err}") from err


def _make_activations_out_of_place(module: nn.Module) -> None:
    """Turn in-place ReLU/ReLU6 modules out-of-place so hooked feature maps are never overwritten."""
    for m in module.modules():
        if isinstance(m, (nn.ReLU, nn.Hardtanh)):  # Hardtanh covers ReLU6
            m.inplace = False


def _replace_head(backbone: nn.Module, path: str, num_classes: int) -> None:
    """Swap the ImageNet classification layer for a fresh one with `num_classes` outputs."""
    old = backbone.get_submodule(path)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes)
    elif isinstance(old, nn.Conv2d):  # SqueezeNet classifies with a 1x1 convolution
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
    else:
        raise TypeError(f"cannot replace a head of type {type(old).__name__}")
    backbone.set_submodule(path, new)


def build_model(
    arch: str, num_classes: int, *, pretrained: bool = False, weights_file: str | os.PathLike | None = None
) -> Classifier:
    """Build `arch` for `num_classes` classes, from ImageNet weights when `pretrained`.

    The weights are read from `weights_file` (where rule weights put them), else from the
    torch cache under torchvision's name (`weights_path`).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    spec = _spec(arch)
    kwargs = dict(spec.builder_kwargs)
    if pretrained and "init_weights" in kwargs:
        kwargs["init_weights"] = False  # the checkpoint overwrites every weight; InceptionV3's init is slow
    backbone = spec.builder(weights=None, **kwargs)
    if pretrained:
        _load_imagenet_weights(arch, backbone, Path(weights_file) if weights_file else weights_path(arch))
    _replace_head(backbone, spec.head, num_classes)
    _make_activations_out_of_place(backbone)
    return Classifier(arch, backbone)
