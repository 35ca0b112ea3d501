"""The torch-free ImageNet checkpoint table agrees with torchvision and torch.hub; rule weights' fetch."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
import torch
from data_helpers import serving

from dpaat.data.errors import DataError
from dpaat.imagenet_weights import (
    IMAGENET_WEIGHTS_URLS,
    checkpoint_dir,
    fetch_weights,
    missing_weights_error,
    sha256_prefix,
    weights_file,
    weights_url,
)
from dpaat.models import ARCHITECTURES, build_model, weights_path


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


# ------------------------------------------------ rule weights' fetch, against a local HTTP server

FAST = {"backoff": 0.0, "progress": False, "timeout": 5.0}
ARCH = "squeezenet1_1"  # the smallest checkpoint (5 MB)


def checkpoint(arch: str = ARCH, seed: int = 0) -> tuple[str, bytes]:
    """A valid ImageNet-shaped state dict of `arch` (random weights), named as torch.hub names files: stem-<sha256[:8]>."""
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save(ARCHITECTURES[arch].builder(weights=None).state_dict(), buffer)
    body = buffer.getvalue()
    stem = weights_file(arch).name.split("-")[0]
    return f"{stem}-{hashlib.sha256(body).hexdigest()[:8]}.pth", body


@pytest.fixture(scope="module")
def served():
    return checkpoint()


def test_sha256_prefix_is_torch_hubs():
    for url in IMAGENET_WEIGHTS_URLS.values():
        name = os.path.basename(url)
        assert sha256_prefix(name) == torch.hub.HASH_REGEX.search(name).group(1)
    assert sha256_prefix("mine.pth") is None


def test_fetch_downloads_verifies_and_then_keeps_the_file(tmp_path, served):
    name, body = served
    env = {"TORCH_HOME": str(tmp_path)}
    with serving({f"/models/{name}": body}) as server:
        base_url = f"http://127.0.0.1:{server.server_address[1]}/models/"
        [record] = fetch_weights([ARCH], base_url=base_url, files={ARCH: name}, environ=env, **FAST)
        path = tmp_path / "hub" / "checkpoints" / name
        assert record == {
            "arch": ARCH,
            "url": base_url + name,
            "path": str(path),
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        assert path.read_bytes() == body
        # Present and valid: kept, nothing requested.
        fetch_weights([ARCH], base_url=base_url, files={ARCH: name}, environ=env, **FAST)
    assert server.requests == [(f"/models/{name}", None)]
    # The training job's model starts from exactly these weights.
    model = build_model(ARCH, 3, pretrained=True, weights_file=path)
    state = torch.load(io.BytesIO(body), weights_only=True)
    got = model.backbone.state_dict()
    assert all(torch.equal(got[key], value) for key, value in state.items() if not key.startswith("classifier.1"))


def test_a_wrong_digest_is_refused_with_both_and_a_damaged_file_is_replaced(tmp_path, served):
    name, body = served
    wrong = name.split("-")[0] + "-deadbeef.pth"
    env = {"TORCH_HOME": str(tmp_path)}
    with serving({f"/models/{wrong}": body, f"/models/{name}": body}) as server:
        base_url = f"http://127.0.0.1:{server.server_address[1]}/models/"
        with pytest.raises(DataError) as err:
            fetch_weights([ARCH], base_url=base_url, files={ARCH: wrong}, environ=env, **FAST)
        message = str(err.value)
        assert "sha256 mismatch" in message and "deadbeef" in message
        assert hashlib.sha256(body).hexdigest() in message
        assert not any((tmp_path / "hub" / "checkpoints").iterdir())  # neither the file nor its .part
        # A damaged file already in place is downloaded again.
        path = weights_file(ARCH, env, {ARCH: name})
        path.write_bytes(body[:1000])
        fetch_weights([ARCH], base_url=base_url, files={ARCH: name}, environ=env, **FAST)
    assert path.read_bytes() == body


def test_an_interrupted_transfer_resumes(tmp_path, served):
    name, body = served
    with serving({f"/models/{name}": body}) as server:
        server.cut_once[f"/models/{name}"] = len(body) // 3
        base_url = f"http://127.0.0.1:{server.server_address[1]}/models/"
        fetch_weights([ARCH], base_url=base_url, files={ARCH: name}, environ={"TORCH_HOME": str(tmp_path)}, **FAST)
    assert (tmp_path / "hub" / "checkpoints" / name).read_bytes() == body
    assert server.requests == [(f"/models/{name}", None), (f"/models/{name}", f"bytes={len(body) // 3}-")]


def test_offline_fails_once_listing_every_url_and_destination(tmp_path):
    env = {"TORCH_HOME": str(tmp_path)}
    archs = ["resnet34", "mobilenet_v2"]
    with serving({}) as server:
        base_url = f"http://127.0.0.1:{server.server_address[1]}/models/"
        with pytest.raises(DataError) as err:
            fetch_weights(archs, base_url=base_url, environ=env, **FAST)
    message = str(err.value)
    assert "HTTP 404" in message and "models.weights_base_url" in message
    assert "2 ImageNet checkpoint(s) are missing" in message
    for arch in archs:
        assert str(weights_file(arch, env)) in message and weights_url(arch, base_url) in message
        assert weights_url(arch).startswith("https://download.pytorch.org/models/")
    assert len(server.requests) == 1  # the first failure ends the fetch
