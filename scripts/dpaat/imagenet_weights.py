"""Where each architecture's ImageNet checkpoint lives in the torch cache, known without importing torch.

The Snakefile checks these files before any training job is planned (so a missing file
fails `snakemake -n` on the login node, not a job on a GPU node); `dpaat.models` loads
them. The URLs are torchvision's IMAGENET1K_V1 weights (tests/test_models.py checks that
they match torchvision's own), and the cache folder follows `torch.hub.get_dir()`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlparse

IMAGENET_WEIGHTS_URLS: Mapping[str, str] = {
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "inception_v3": "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    "densenet121": "https://download.pytorch.org/models/densenet121-a639ec97.pth",
    "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    "shufflenet_v2_x1_0": "https://download.pytorch.org/models/shufflenetv2_x1-5666bf0f80.pth",
    "squeezenet1_1": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}


def checkpoint_dir(environ: Mapping[str, str] | None = None) -> Path:
    """torch.hub's checkpoint folder: $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to $XDG_CACHE_HOME/torch."""
    environ = os.environ if environ is None else environ
    cache = environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.path.expanduser(environ.get("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(torch_home) / "hub" / "checkpoints"


def weights_file(arch: str, environ: Mapping[str, str] | None = None) -> Path:
    """The cached ImageNet checkpoint of `arch`, named as torch.hub names a download."""
    if arch not in IMAGENET_WEIGHTS_URLS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(IMAGENET_WEIGHTS_URLS)}")
    return checkpoint_dir(environ) / os.path.basename(urlparse(IMAGENET_WEIGHTS_URLS[arch]).path)


def missing_weights_error(archs: Iterable[str], environ: Mapping[str, str] | None = None) -> str | None:
    """A message naming every missing checkpoint of `archs` and where to put it, or None when all are there."""
    missing = [(arch, weights_file(arch, environ)) for arch in archs]
    missing = [(arch, path) for arch, path in missing if not path.is_file()]
    if not missing:
        return None
    lines = [f"  {arch}: {path}  (download {IMAGENET_WEIGHTS_URLS[arch]})" for arch, path in missing]
    return (
        f"models.pretrained is true but {len(missing)} ImageNet checkpoint(s) are missing; jobs never download:\n"
        + "\n".join(lines)
        + f"\nPut each file in {checkpoint_dir(environ)} (or point TORCH_HOME at a torch cache holding them under "
        "hub/checkpoints/, set where snakemake and its jobs run), or set models.pretrained: false."
    )
