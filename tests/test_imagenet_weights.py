"""The torch-free ImageNet checkpoint table agrees with torchvision and torch.hub."""

from __future__ import annotations

import pytest
import torch

from dpaat.imagenet_weights import IMAGENET_WEIGHTS_URLS, checkpoint_dir, missing_weights_error, weights_file
from dpaat.models import ARCHITECTURES, weights_path


def test_urls_are_torchvisions():
    assert dict(IMAGENET_WEIGHTS_URLS) == {arch: spec.weights.url for arch, spec in ARCHITECTURES.items()}


@pytest.mark.parametrize(
    "env",
    [{"TORCH_HOME": "/opt/torch-cache"}, {"XDG_CACHE_HOME": "/scratch/cache"}, {"TORCH_HOME": "~/th"}, {}],
    ids=["torch_home", "xdg", "tilde", "default"],
)
def test_paths_are_where_torch_hub_looks(monkeypatch, env):
    for key in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert checkpoint_dir() == checkpoint_dir(env)
    assert str(checkpoint_dir()) == f"{torch.hub.get_dir()}/checkpoints"
    for arch in ARCHITECTURES:
        assert weights_file(arch) == weights_path(arch)


def test_missing_weights_error_names_only_the_missing_files(tmp_path):
    env = {"TORCH_HOME": str(tmp_path)}
    assert "2 ImageNet checkpoint(s) are missing" in missing_weights_error(["resnet34", "mobilenet_v2"], env)
    weights_file("resnet34", env).parent.mkdir(parents=True)
    weights_file("resnet34", env).touch()
    message = missing_weights_error(["resnet34", "mobilenet_v2"], env)
    assert str(weights_file("mobilenet_v2", env)) in message and "resnet34" not in message
    weights_file("mobilenet_v2", env).touch()
    assert missing_weights_error(["resnet34", "mobilenet_v2"], env) is None
    with pytest.raises(ValueError, match="unknown architecture"):
        weights_file("vgg16", env)
