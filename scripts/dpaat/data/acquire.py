"""Bring the raw HAM10000-format files of one data source into place and describe them.

Every source ends in the same manifest (`source`, the `layout` of its files, the
`settings` that determine them, and one record per file with its role, kind, path,
size, computed md5 and whether that is the published md5), which is all the
extract-and-index step reads:
- ham10000: the Dataverse files, downloaded with resume and md5 verification;
- isic2018: the ISIC 2018 Task 3 training files (same images), downloaded the same way
  (no md5 is published: the computed ones are recorded);
- local: files a user put in `data.local_dir`, in any layout `layouts` recognises
  (Dataverse zips, Kaggle folders or zip, ISIC 2018, own folders); they stay where they are;
- synthetic: a generated twin written in the HAM10000 format;
- imagefolder: any labelled collection in torchvision's ImageFolder convention in
  `data.local_dir`, read where it is;
- medmnist: one MedMNIST `.npz` (flag and size), downloaded from the URL of the `medmnist`
  package's INFO table and verified against its MD5, or found in `data.local_dir`.
Files are kept under `<raw_dir>/<source>/`, so switching sources never overwrites a
multi-gigabyte download.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .. import io as atomic
from . import imagefolder, isic2018, medmnist, synthetic
from .download import download, md5_file
from .errors import DataError
from .ham10000 import HAM10000_FILES, MASKS_NAME, METADATA_NAME, RemoteFile, Role, masks_file
from .layouts import find_layout

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "local", "ham10000", "isic2018", "imagefolder", "medmnist")
# Sources that are not HAM10000: the index is built from their own files, with their own classes.
OTHER_DATASETS = ("imagefolder", "medmnist")


def acquire(
    settings: Mapping[str, Any],
    raw_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    *,
    files: Sequence[RemoteFile] = HAM10000_FILES,
    isic_files: Sequence[RemoteFile] = isic2018.ISIC2018_FILES,
    workers: int = 1,
    medmnist_info: Mapping[str, Mapping[str, Any]] | None = None,
    **download_options: Any,
) -> dict[str, Any]:
    """Acquire the files `settings["source"]` names, write the manifest and return it.

    settings: `source` plus what that source needs - synthetic: `synthetic` (seed, images,
    images_per_archive); ham10000: `base_url`, `download_masks`, `masks_datafile_id`;
    isic2018: `isic_base_url`; local: `local_dir`, `local_layout`, `require_published_checksums`.
    They are recorded in the manifest. `files`/`isic_files` (the published files and their
    md5s), `medmnist_info` (in place of the medmnist package's INFO table) and `download_options`
    (see `download`) are for tests. `workers` processes render
    synthetic images (the bytes do not depend on it).
    """
    source = settings.get("source")
    if source not in SOURCES:
        raise DataError(f"unknown data.source {source!r}: use one of {list(SOURCES)}")
    target = Path(raw_dir) / source
    layout = "dataverse"
    dataset = None
    if source == "imagefolder":
        layout, records, dataset = _imagefolder(settings)
    elif source == "medmnist":
        layout, records, dataset = _medmnist(settings, target, medmnist_info, download_options)
    elif source == "synthetic":
        options = settings["synthetic"]
        paths = synthetic.generate(
            target,
            options["images"],
            seed=options["seed"],
            images_per_archive=options["images_per_archive"],
            workers=workers,
        )
        records = [file_record(path, _role(path.name)) for path in paths]
        layout = "synthetic"
    elif source == "ham10000":
        records = _ham10000(settings, files, target, download_options)
    elif source == "isic2018":
        base_url = settings.get("isic_base_url") or isic2018.BASE_URL
        downloaded = download_files(isic_files, base_url, target, **download_options)
        # The downloaded files are the isic2018 layout: read them the way a local copy is read.
        found = find_layout(target, layout="isic2018", md5s={Path(r["path"]).as_posix(): r["md5"] for r in downloaded})
        layout, records = found.name, found.records
    else:
        layout, records = _local(settings, files)
    manifest = {
        "source": source,
        "layout": layout,
        "settings": dict(settings),
        "files": _relative_to(records, Path(manifest_path).parent),
    }
    if dataset is not None:
        manifest["dataset"] = dataset
    atomic.write_json(manifest, manifest_path)
    return manifest


def _ham10000(
    settings: Mapping[str, Any], files: Sequence[RemoteFile], target: Path, download_options: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Download HAM10000's published files (and the masks when data.download_masks) from the Dataverse."""
    remote = list(files)
    if settings.get("download_masks"):
        if settings.get("masks_datafile_id") is None:
            raise DataError(
                "data.download_masks is true but data.masks_datafile_id is not set: look up the id of "
                f"{MASKS_NAME} on the dataset page (doi:10.7910/DVN/DBW86T) and set it"
            )
        remote.append(masks_file(settings["masks_datafile_id"]))
    return download_files(remote, settings["base_url"], target, **download_options)


def _local(settings: Mapping[str, Any], files: Sequence[RemoteFile]) -> tuple[str, list[dict[str, Any]]]:
    """A local copy of HAM10000 in data.local_dir (a folder or the Kaggle zip): its layout and records."""
    if not settings.get("local_dir"):
        raise DataError(
            "data.source is local but data.local_dir is not set: point it at the folder (or the Kaggle zip) "
            "with the HAM10000 files"
        )
    # Records carry each file's computed md5 and whether it equals the published one; a
    # mismatch is a logged notice unless data.require_published_checksums.
    found = find_layout(
        settings["local_dir"],
        files=files,
        layout=settings.get("local_layout") or "auto",
        strict=bool(settings.get("require_published_checksums")),
    )
    return found.name, found.records


def _imagefolder(settings: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """An ImageFolder tree in data.local_dir: its folder and its groups.csv (when present), read in place."""
    if not settings.get("local_dir"):
        raise DataError(
            "data.source is imagefolder but data.local_dir is not set: point it at the folder with one "
            "folder per class"
        )
    root = Path(settings["local_dir"]).expanduser()
    classes = imagefolder.find_classes(root)
    records = [{"role": "images", "kind": "folder", "path": str(root), "bytes": None, "md5": None,
                "published_md5": None, "md5_published": False}]  # fmt: skip
    groups = root / imagefolder.GROUPS_NAME
    if groups.is_file():
        records.append({**_record(groups, "lesions", md5_file(groups), None), "kind": "csv"})
    predefined = list(imagefolder.class_roots(root)) != [None]
    log.info("%s: ImageFolder tree of %d classes %s%s", root, len(classes), classes,
             ", predefined train/ and test/" if predefined else "")  # fmt: skip
    return "imagefolder", records, {"name": root.name, "classes": classes, "predefined_split": predefined}


def _medmnist(
    settings: Mapping[str, Any],
    target: Path,
    info: Mapping[str, Mapping[str, Any]] | None,
    download_options: Mapping[str, Any],
) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """One MedMNIST .npz: downloaded and verified against INFO's MD5, or found in data.local_dir."""
    options = settings.get("medmnist") or {}
    entry = medmnist.dataset_info(options.get("flag"), options.get("size"), info)
    local_dir = settings.get("local_dir")
    if local_dir:
        root = Path(local_dir).expanduser()
        path = root if root.is_file() else root / entry["name"]
        if not path.is_file():
            raise DataError(
                f"data.local_dir {root} holds no {entry['name']}: put MedMNIST's file for flag {entry['flag']} "
                f"at size {entry['size']} there (from {entry['url']}), or unset data.local_dir to download it"
            )
        md5 = md5_file(path)
        if md5 != entry["md5"]:
            if settings.get("require_published_checksums"):
                raise DataError(
                    f"{path} has md5 {md5}, but MedMNIST publishes {entry['md5']} for {entry['name']} and "
                    "data.require_published_checksums is true: download the file again, or set it to false"
                )
            log.warning("%s has md5 %s, not MedMNIST's %s: not the published file; proceeding", path, md5, entry["md5"])
    else:
        path = target / entry["name"]
        md5 = download(entry["url"], path, md5=entry["md5"], **download_options)
    record = {**_record(path, "images", md5, entry["md5"]), "kind": "npz"}
    dataset = {key: entry[key] for key in ("flag", "size", "classes", "n_samples")}
    return "medmnist", [record], {"name": entry["flag"], **dataset, "predefined_split": True}


def download_files(
    files: Iterable[RemoteFile], base_url: str, target: str | os.PathLike, **options: Any
) -> list[dict[str, Any]]:
    """Download each file to `target` (resuming, verified) and return its manifest records."""
    records = []
    for remote in files:
        path = Path(target) / remote.name
        md5 = download(remote.url(base_url), path, md5=remote.md5, size=remote.size, **options)
        records.append(_record(path, remote.role, md5, remote.md5))
    return records


def file_record(path: Path, role: Role) -> dict[str, Any]:
    """Manifest record of a file with no published md5 (a generated one): its computed md5."""
    return _record(path, role, md5_file(path), None)


def _record(path: Path, role: Role, md5: str, published_md5: str | None) -> dict[str, Any]:
    kind = "zip" if path.suffix.lower() == ".zip" else "csv"
    record = {
        "role": role,
        "kind": kind,
        "path": str(path),
        "bytes": path.stat().st_size,
        "md5": md5,
        "published_md5": published_md5,
        "md5_published": published_md5 is not None and md5 == published_md5,
    }
    if role == "metadata":
        record["format"] = "ham10000"
    return record


def _role(name: str) -> Role:
    return "metadata" if name == METADATA_NAME else "masks" if name == MASKS_NAME else "images"


def _relative_to(records: list[dict[str, Any]], base: Path) -> list[dict[str, Any]]:
    """Paths inside `base` are stored relative to it (the manifest's folder), others absolute."""
    out = []
    for record in records:
        path = Path(record["path"]).resolve()
        try:
            stored = str(path.relative_to(base.resolve()))
        except ValueError:
            stored = str(path)
        out.append({**record, "path": stored})
    return out
