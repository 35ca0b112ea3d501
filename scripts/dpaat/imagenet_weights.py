"""Each architecture's ImageNet checkpoint: where it lives in the torch cache, and fetching it.

Rule `weights` downloads the checkpoints (`fetch_weights`, run where snakemake runs) and
records where each went; `dpaat.models` loads them in the training jobs, which never
download. The URLs are torchvision's IMAGENET1K_V1 weights (tests/test_models.py checks
that they match torchvision's own), the cache folder follows `torch.hub.get_dir()`, and a
file is verified as torch.hub verifies it: its sha256 starts with the hex digits of its
name. No torch here: the Snakefile imports this module.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

IMAGENET_WEIGHTS_URLS: Mapping[str, str] = {
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "inception_v3": "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    "densenet121": "https://download.pytorch.org/models/densenet121-a639ec97.pth",
    "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    "shufflenet_v2_x1_0": "https://download.pytorch.org/models/shufflenetv2_x1-5666bf0f80.pth",
    "squeezenet1_1": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}
DEFAULT_BASE_URL = "https://download.pytorch.org/models/"
# torch.hub's HASH_REGEX: the hex digits between a dash and a dot are the first of the file's sha256.
_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")


def checkpoint_dir(environ: Mapping[str, str] | None = None) -> Path:
    """torch.hub's checkpoint folder: $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to $XDG_CACHE_HOME/torch."""
    environ = os.environ if environ is None else environ
    cache = environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.path.expanduser(environ.get("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(torch_home) / "hub" / "checkpoints"


def file_name(arch: str, files: Mapping[str, str] | None = None) -> str:
    """The checkpoint's file name: `files[arch]` (models.weights_files) or torchvision's, as torch.hub names it."""
    if arch not in IMAGENET_WEIGHTS_URLS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(IMAGENET_WEIGHTS_URLS)}")
    return (files or {}).get(arch) or os.path.basename(urlparse(IMAGENET_WEIGHTS_URLS[arch]).path)


def weights_url(arch: str, base_url: str = DEFAULT_BASE_URL, files: Mapping[str, str] | None = None) -> str:
    """Where the checkpoint of `arch` is downloaded from: the base URL joined with its file name."""
    return base_url.rstrip("/") + "/" + file_name(arch, files)


def sha256_prefix(name: str) -> str | None:
    """The leading sha256 hex digits a checkpoint's file name carries (torch.hub's rule), or None."""
    match = _HASH_PREFIX.search(name)
    return match.group(1) if match and match.group(1) else None


def weights_file(arch: str, environ: Mapping[str, str] | None = None, files: Mapping[str, str] | None = None) -> Path:
    """The cached ImageNet checkpoint of `arch`, named as torch.hub names a download."""
    return checkpoint_dir(environ) / file_name(arch, files)


def missing_weights_error(
    archs: Iterable[str],
    environ: Mapping[str, str] | None = None,
    *,
    base_url: str = DEFAULT_BASE_URL,
    files: Mapping[str, str] | None = None,
) -> str | None:
    """A message naming every missing checkpoint of `archs`, its URL and where it goes, or None when all are there."""
    missing = [(arch, weights_file(arch, environ, files)) for arch in archs]
    missing = [(arch, path) for arch, path in missing if not path.is_file()]
    if not missing:
        return None
    lines = [f"  {arch}: {path}  (download {weights_url(arch, base_url, files)})" for arch, path in missing]
    return (
        f"models.pretrained is true but {len(missing)} ImageNet checkpoint(s) are missing:\n"
        + "\n".join(lines)
        + f"\nRun snakemake where the internet is (rule weights downloads them), or put each file in "
        f"{checkpoint_dir(environ)} (or point TORCH_HOME at a torch cache holding them under hub/checkpoints/, "
        "set where snakemake and its jobs run), or set models.pretrained: false."
    )


def fetch_weights(
    archs: Iterable[str],
    *,
    base_url: str = DEFAULT_BASE_URL,
    files: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    **download_options: Any,
) -> list[dict[str, Any]]:
    """Put each checkpoint of `archs` in the torch cache (kept when present and valid), verified; their records.

    The first failure stops the fetch with one error that lists every checkpoint still
    missing, its URL and where it goes. `download_options`: see `dpaat.data.download.download`.
    """
    # Imported here: the Snakefile imports this module, and dpaat.data imports torch.
    from dpaat.data.download import download, sha256_file
    from dpaat.data.errors import DataError

    archs = list(archs)
    records = []
    for arch in archs:
        name, dest, url = file_name(arch, files), weights_file(arch, environ, files), weights_url(arch, base_url, files)
        prefix = sha256_prefix(name)
        if prefix is None:
            raise DataError(
                f"{name} (models.weights_files.{arch}) carries no sha256 prefix, so it cannot be verified: "
                "name it <name>-<first hex digits of its sha256>.pth as torch.hub's files are"
            )
        try:
            download(url, dest, sha256_prefix=prefix, setting="models.weights_base_url", **download_options)
        except DataError as err:
            raise DataError(f"{err}\n{missing_weights_error(archs, environ, base_url=base_url, files=files)}") from None
        records.append(
            {"arch": arch, "url": url, "path": str(dest), "bytes": dest.stat().st_size, "sha256": sha256_file(dest)}
        )
        log.info("%s: %s (sha256 %s)", arch, dest, records[-1]["sha256"])
    return records


def recorded_weights_file(record_path: str | os.PathLike, arch: str) -> Path:
    """Where rule `weights` (its record at `record_path`) put the checkpoint of `arch`."""
    for record in json.loads(Path(record_path).read_text())["checkpoints"]:
        if record["arch"] == arch:
            return Path(record["path"])
    raise ValueError(f"{record_path} lists no ImageNet checkpoint for {arch}: rerun with --forcerun weights")
