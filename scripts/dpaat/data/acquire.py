"""Bring the raw HAM10000-format files of one data source into place and describe them.

Every source ends in the same manifest (`source`, the `settings` that determine the
files, and one record per file with its role, kind, path, size and md5), which is all
the extract-and-index step reads:
- ham10000: the Dataverse files, downloaded with resume and md5 verification;
- local: files a user put in `data.local_dir` (the two image zips or the unzipped
  images, the metadata csv, optionally the masks), checked against the published md5s
  where their names are the official ones; they stay where they are;
- synthetic: a generated twin written in the HAM10000 format.
Files are kept under `<raw_dir>/<source>/`, so switching sources never overwrites a
multi-gigabyte download.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .. import io as atomic
from . import synthetic
from .download import download, md5_file
from .errors import DataError
from .ham10000 import (
    HAM10000_FILES,
    IMAGE_NAME,
    MASK_NAME,
    MASKS_NAME,
    METADATA_NAME,
    RemoteFile,
    Role,
    masks_file,
)

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "local", "ham10000")


def acquire(
    settings: Mapping[str, Any],
    raw_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    *,
    files: Sequence[RemoteFile] = HAM10000_FILES,
    **download_options: Any,
) -> dict[str, Any]:
    """Acquire the files `settings["source"]` names, write the manifest and return it.

    settings: `source` plus what that source needs - synthetic: `synthetic` (seed, images,
    images_per_archive); ham10000: `base_url`, `download_masks`, `masks_datafile_id`;
    local: `local_dir`. They are recorded in the manifest. `files` (the published files
    and their md5s) and `download_options` (see `download`) are for tests.
    """
    source = settings.get("source")
    if source not in SOURCES:
        raise DataError(f"unknown data.source {source!r}: use one of {list(SOURCES)}")
    target = Path(raw_dir) / source
    if source == "synthetic":
        options = settings["synthetic"]
        paths = synthetic.generate(
            target, options["images"], seed=options["seed"], images_per_archive=options["images_per_archive"]
        )
        records = [file_record(path, _role(path.name)) for path in paths]
    elif source == "ham10000":
        remote = list(files)
        if settings.get("download_masks"):
            if settings.get("masks_datafile_id") is None:
                raise DataError(
                    "data.download_masks is true but data.masks_datafile_id is not set: look up the id of "
                    f"{MASKS_NAME} on the dataset page (doi:10.7910/DVN/DBW86T) and set it"
                )
            remote.append(masks_file(settings["masks_datafile_id"]))
        records = download_files(remote, settings["base_url"], target, **download_options)
    else:
        if not settings.get("local_dir"):
            raise DataError(
                "data.source is local but data.local_dir is not set: point it at the folder with the HAM10000 files"
            )
        records = find_local(settings["local_dir"], files=files)
    manifest = {
        "source": source,
        "settings": dict(settings),
        "files": _relative_to(records, Path(manifest_path).parent),
    }
    atomic.write_json(manifest, manifest_path)
    return manifest


def download_files(
    files: Iterable[RemoteFile], base_url: str, target: str | os.PathLike, **options: Any
) -> list[dict[str, Any]]:
    """Download each file to `target` (resuming, verified) and return its manifest records."""
    records = []
    for remote in files:
        path = Path(target) / remote.name
        md5 = download(remote.url(base_url), path, md5=remote.md5, size=remote.size, **options)
        records.append(_record(path, remote.role, md5, known=remote.md5 is not None))
    return records


def find_local(local_dir: str | os.PathLike, *, files: Sequence[RemoteFile] = HAM10000_FILES) -> list[dict[str, Any]]:
    """Records of the HAM10000 files found under `local_dir` (zips or unzipped images, csv, masks).

    A file named like one of `files` is checked against that file's published md5; loose
    images are checked one by one at index time.
    """
    root = Path(local_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data.local_dir {root} is not a folder: point it at the folder with the HAM10000 files")
    found = sorted(p for p in root.rglob("*") if p.is_file())
    named = _by_name(found, [*(f.name for f in files), MASKS_NAME])
    known_md5 = {f.name: f.md5 for f in files}
    zip_names = [f.name for f in files if f.role == "images"]
    image_zips = [named[name] for name in zip_names if name in named]
    loose_images = sorted({p.parent for p in found if IMAGE_NAME.match(p.name)})
    loose_masks = sorted({p.parent for p in found if MASK_NAME.match(p.name)})

    missing = []
    if len(image_zips) < len(zip_names) and not loose_images:
        missing.append(" and ".join(n for n in zip_names if n not in named) + " (or the unzipped ISIC_*.jpg images)")
    if METADATA_NAME not in named:
        other = [p.name for p in found if p.name.lower().startswith("ham10000_metadata")]
        hint = (
            f" (found {other}: Dataverse's re-export; download the original csv with ?format=original)" if other else ""
        )
        missing.append(METADATA_NAME + hint)
    if missing:
        shown = ", ".join(str(p.relative_to(root)) for p in found[:10]) or "nothing"
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        raise DataError(f"data.local_dir {root} lacks {'; '.join(missing)}. Found: {shown}{more}")

    records = [file_record(path, "images", known_md5[path.name]) for path in image_zips]
    if len(image_zips) == len(zip_names):
        if loose_images:
            log.info("both image zips found: ignoring the loose images in %s", [str(p) for p in loose_images])
    else:
        records += [_folder_record(folder, "images", IMAGE_NAME) for folder in loose_images]
    records.append(file_record(named[METADATA_NAME], "metadata", known_md5.get(METADATA_NAME)))
    if MASKS_NAME in named:
        records.append(file_record(named[MASKS_NAME], "masks"))
    else:
        records += [_folder_record(folder, "masks", MASK_NAME) for folder in loose_masks]
    return records


def file_record(path: Path, role: Role, known_md5: str | None = None) -> dict[str, Any]:
    """Manifest record of a file, its md5 checked against `known_md5` when that is given."""
    md5 = md5_file(path)
    if known_md5 is not None and md5 != known_md5:
        raise DataError(
            f"md5 mismatch for {path.name} ({path}): expected {known_md5}, got {md5}: "
            "the file is damaged or not the published one; download it again"
        )
    return _record(path, role, md5, known=known_md5 is not None)


def _record(path: Path, role: Role, md5: str, *, known: bool) -> dict[str, Any]:
    kind = "zip" if path.suffix.lower() == ".zip" else "csv"
    return {
        "role": role,
        "kind": kind,
        "path": str(path),
        "bytes": path.stat().st_size,
        "md5": md5,
        "md5_published": known,
    }


def _folder_record(folder: Path, role: Role, pattern: re.Pattern[str]) -> dict[str, Any]:
    count = sum(1 for p in folder.iterdir() if pattern.match(p.name))
    return {"role": role, "kind": "folder", "path": str(folder.resolve()), "files": count}


def _by_name(found: Sequence[Path], names: Iterable[str]) -> dict[str, Path]:
    """The file found under each official name; two copies of one name are ambiguous."""
    named = {}
    for name in names:
        hits = [p for p in found if p.name == name]
        if len(hits) > 1:
            raise DataError(
                f"{name} found {len(hits)} times ({', '.join(map(str, hits))}): keep one copy in data.local_dir"
            )
        if hits:
            named[name] = hits[0]
    return named


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
