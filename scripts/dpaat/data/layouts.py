"""Which copy of HAM10000 a folder (or a zip) holds, and the manifest records of its files.

The copies researchers have, each recognised as it comes (nothing to rename):
- dataverse: `HAM10000_images_part_1.zip`, `_part_2.zip`, `HAM10000_metadata.csv` (with or
  without the `dataset` column), optionally the lesion-mask zip;
- kaggle: the unzipped `HAM10000_images_part_{1,2}/` folders and their lower-case
  duplicates with the csv (the `hmnist_*.csv` files are ignored), as a folder or as the
  Kaggle zip itself (`archive.zip`, read in place; also when it is the only dataset file
  of the folder `data.local_dir` names);
- folders: any folders of `ISIC_<digits>.jpg` images beside a csv with HAM10000's columns
  (a lab's own collection, or ISIC 2018's images with HAM10000's metadata);
- isic2018: `ISIC2018_Task3_Training_Input/` (or its zip), the Task 3 ground truth csv (or its
  zip) and, when present, the lesion groupings csv.
When one folder holds several complete layouts, the first of LAYOUTS is used (the log
says why) unless `data.local_layout` names another. Every record carries the file's
computed md5 and whether it equals a published one.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from . import isic2018
from .download import md5_file
from .errors import DataError
from .extract import refuse_escaping_members
from .ham10000 import HAM10000_FILES, IMAGE_NAME, MASK_NAME, MASKS_NAME, METADATA_COLUMNS, METADATA_NAME, RemoteFile

log = logging.getLogger(__name__)

LAYOUTS = ("dataverse", "kaggle", "folders", "isic2018")
# Why a layout earlier in LAYOUTS is used when a folder holds several.
_WHY = {
    "dataverse": "the Dataverse zips are the published release, whose checksums can be compared",
    "kaggle": "HAM10000's metadata csv has lesion ids and patient data, which ISIC 2018's ground truth lacks",
    "folders": "HAM10000's metadata csv has lesion ids and patient data, which ISIC 2018's ground truth lacks",
}
_KAGGLE_FOLDER = re.compile(r"^ham10000_images_part_\d+$", re.IGNORECASE)
_IGNORED_CSV = re.compile(r"^hmnist_.*\.csv$", re.IGNORECASE)
_SHOWN = 10
# What each layout expects, for the error when a folder holds none of them.
_EXPECTS = {
    "dataverse": "HAM10000_images_part_1.zip and HAM10000_images_part_2.zip beside HAM10000_metadata.csv",
    "kaggle": "the folders HAM10000_images_part_1/ and HAM10000_images_part_2/ of ISIC_*.jpg images beside "
    "HAM10000_metadata.csv, or Kaggle's zip of them (archive.zip, any name)",
    "folders": f"folders of ISIC_<digits>.jpg images beside a csv with the columns {', '.join(METADATA_COLUMNS)}",
    "isic2018": f"{isic2018.INPUT_FOLDER}/ (or its zip) beside {isic2018.GROUND_TRUTH_NAME} (or its zip)",
}


@dataclass
class Layout:
    """One recognised copy: its name, manifest records, and what a complete copy still lacks."""

    name: str
    records: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class _Tree:
    """The files under a folder, or inside a zip, as relative POSIX paths, with their csv headers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.in_zip = root.is_file()
        if self.in_zip:
            try:
                with zipfile.ZipFile(root) as archive:
                    refuse_escaping_members(archive, root)
                    self.files = sorted(i.filename for i in archive.infolist() if not i.is_dir())
            except (zipfile.BadZipFile, OSError) as err:
                raise DataError(
                    f"data.local_dir {root} is a file but not a readable zip archive ({err}): it is truncated or "
                    "damaged (download it again), or point data.local_dir at the folder with the HAM10000 files"
                ) from None
        else:
            self.files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def header(self, rel: str) -> list[str]:
        """The column names of a csv (its first line)."""
        if self.in_zip:
            with zipfile.ZipFile(self.root) as archive, archive.open(rel) as fh:
                line = fh.readline(1 << 16)
        else:
            with open(self.root / rel, "rb") as fh:
                line = fh.readline(1 << 16)
        try:
            return next(csv.reader([line.decode("utf-8-sig").strip()]), [])
        except (UnicodeDecodeError, csv.Error):
            return []

    def path(self, rel: str) -> Path:
        return self.root if self.in_zip else self.root / rel

    def where(self, rel: str) -> str:
        return f"{self.root.name}:{rel}" if self.in_zip else rel


def find_layout(
    local_dir: str | Path,
    *,
    files: Sequence[RemoteFile] = HAM10000_FILES,
    layout: str = "auto",
    strict: bool = False,
    md5s: Mapping[str, str] | None = None,
) -> Layout:
    """The layout of `local_dir` (a folder, or a zip holding the files) with its checksummed manifest records.

    `files`: the published files and md5s; `strict` (data.require_published_checksums) refuses
    images or metadata that are not byte-identical to them; `md5s` (path -> md5) are already known.
    """
    root = Path(local_dir).expanduser()
    if not root.exists():
        raise DataError(
            f"data.local_dir {root} does not exist: point it at the folder (or the Kaggle zip) with the HAM10000 files"
        )
    if layout != "auto" and layout not in LAYOUTS:
        raise DataError(f"data.local_layout {layout!r} is not one of {['auto', *LAYOUTS]}: fix data.local_layout")
    tree = _Tree(root)
    candidates = _candidates(tree, files)
    zips = [rel for rel in tree.files if rel.lower().endswith(".zip")]
    if not candidates and not tree.in_zip and len(zips) == 1:
        # A download as it arrives (Kaggle's archive.zip) in a folder of its own: read the zip.
        log.info("data.local_dir %s holds no dataset files but one zip: reading %s as the dataset", root, zips[0])
        try:
            return find_layout(root / zips[0], files=files, layout=layout, strict=strict, md5s=md5s)
        except DataError as err:
            raise DataError(f"data.local_dir {root} holds one zip, {zips[0]}, read as the dataset: {err}") from None
    if layout != "auto":
        if layout not in candidates:
            raise DataError(
                f"data.local_layout is {layout} but {root} holds no {layout} files (it holds: "
                f"{', '.join(candidates) or 'none'}). Found: {_shown(tree)}: set data.local_layout: auto or fix the folder"
            )
        chosen = candidates[layout]
    else:
        complete = [c for c in candidates.values() if not c.missing]
        if not complete:
            raise _incomplete(tree, candidates)
        chosen = complete[0]
        if len(complete) > 1:
            others = ", ".join(c.name for c in complete[1:])
            log.warning(
                "%s holds %d complete layouts (%s): using %s because %s; ignoring %s (set data.local_layout to choose)",
                root,
                len(complete),
                ", ".join(c.name for c in complete),
                chosen.name,
                _WHY[chosen.name],
                others,
            )
    if chosen.missing:
        raise _incomplete(tree, {chosen.name: chosen})
    log.info("%s: %s layout, %d files or folders", root, chosen.name, len(chosen.records))
    published = {f.name: f.md5 for f in files if f.md5}
    memo = dict(md5s or {})
    chosen.records = [_checksummed(r, published, memo) for r in chosen.records]
    _check_published(chosen.records, strict)
    return chosen


def _candidates(tree: _Tree, files: Sequence[RemoteFile]) -> dict[str, Layout]:
    """Every layout `tree` has some files of, in LAYOUTS order, with its records and what it lacks."""
    by_name: dict[str, list[str]] = {}
    for rel in tree.files:
        by_name.setdefault(PurePosixPath(rel).name, []).append(rel)
    ignored = [rel for rel in tree.files if _IGNORED_CSV.match(PurePosixPath(rel).name)]
    if ignored:
        log.info("ignoring %d hmnist_*.csv files (Kaggle's pixel tables): %s", len(ignored), ignored)
    csvs = [r for r in tree.files if r.lower().endswith(".csv") and r not in ignored]
    headers = {rel: tree.header(rel) for rel in csvs}
    ham_csvs = [r for r in csvs if set(METADATA_COLUMNS) <= set(headers[r])]
    image_dirs = _folders_of(tree.files, IMAGE_NAME)
    masks = _masks(tree, by_name)
    candidates: dict[str, Layout] = {}

    # dataverse: the official image zips (zips inside a zip cannot be read in place).
    zip_names = [f.name for f in files if f.role == "images"]
    if any(name in by_name for name in zip_names) and not tree.in_zip:
        found = Layout("dataverse")
        for name in zip_names:
            if name in by_name:
                found.records.append(_record(tree, _single(tree, by_name, name), "images", "zip"))
            elif not image_dirs:
                found.missing.append(f"{name} (or the unzipped ISIC_*.jpg images)")
        if len(found.records) < len(zip_names):
            # One part zipped, the other unzipped: the folders stand in for the missing zip.
            found.records += [_folder_record(tree, d, "images") for d in image_dirs]
        _add_metadata(found, tree, ham_csvs, by_name)
        found.records += masks
        candidates["dataverse"] = found

    # kaggle / folders: folders of images beside a HAM10000-format csv.
    if image_dirs:
        names = {PurePosixPath(d).name for d in image_dirs}
        found = Layout("kaggle" if all(_KAGGLE_FOLDER.match(n) for n in names) else "folders")
        found.records += [_folder_record(tree, d, "images") for d in image_dirs]
        _add_metadata(found, tree, ham_csvs, by_name)
        found.records += masks
        candidates[found.name] = found

    # isic2018: the Task 3 input images with the ground truth.
    isic_dirs = [d for d in image_dirs if PurePosixPath(d).name == isic2018.INPUT_FOLDER]
    input_zip = f"{isic2018.INPUT_FOLDER}.zip"
    if isic_dirs or (input_zip in by_name and not tree.in_zip):
        found = Layout("isic2018")
        if isic_dirs:
            found.records += [_folder_record(tree, d, "images") for d in isic_dirs]
        else:
            found.records.append(_record(tree, _single(tree, by_name, input_zip), "images", "zip"))
        truth = [r for r in csvs if isic2018.is_ground_truth(headers[r])]
        if truth:
            truth_record = _record(tree, _prefer(tree, truth, isic2018.GROUND_TRUTH_NAME), "metadata", "csv")
            found.records.append({**truth_record, "format": "isic2018"})
        elif isic2018.GROUND_TRUTH_ZIP in by_name and not tree.in_zip:
            truth_record = _zipped_csv(tree, _single(tree, by_name, isic2018.GROUND_TRUTH_ZIP))
            found.records.append({**truth_record, "format": "isic2018"})
        else:
            found.missing.append(
                f"{isic2018.GROUND_TRUTH_NAME} (or {isic2018.GROUND_TRUTH_ZIP}, or a csv with the columns image, "
                f"{', '.join(isic2018.DX_COLUMNS)})"
            )
        if isic2018.LESIONS_NAME in by_name:
            found.records.append(_record(tree, _single(tree, by_name, isic2018.LESIONS_NAME), "lesions", "csv"))
        candidates["isic2018"] = found
    return candidates


def _add_metadata(found: Layout, tree: _Tree, ham_csvs: list[str], by_name: dict[str, list[str]]) -> None:
    """Add the HAM10000-format metadata csv to `found`, or say what is missing."""
    if ham_csvs:
        record = _record(tree, _prefer(tree, ham_csvs, METADATA_NAME), "metadata", "csv")
        found.records.append({**record, "format": "ham10000"})
        return
    other = [r for n, rels in by_name.items() if n.lower().startswith("ham10000_metadata") for r in rels]
    hint = f" (found {[PurePosixPath(r).name for r in other]}" if other else ""
    if other and any(r.lower().endswith(".tab") for r in other):
        hint += ": Dataverse's re-export; download the original csv with ?format=original"
    elif other:
        hint += f": they lack some of the columns {list(METADATA_COLUMNS)}"
    found.missing.append(
        f"{METADATA_NAME} (or another csv with the columns {', '.join(METADATA_COLUMNS)}){hint}{')' if other else ''}"
    )


def _prefer(tree: _Tree, rels: list[str], name: str) -> str:
    """The one file of `rels` named `name`, or the only one; several equally good are ambiguous."""
    named = [r for r in rels if PurePosixPath(r).name == name]
    pick = named or rels
    if len(pick) > 1:
        raise DataError(
            f"{tree.root} holds {len(pick)} candidate metadata csvs ({', '.join(map(tree.where, pick))}): "
            "expected one; keep one copy in data.local_dir"
        )
    return pick[0]


def _single(tree: _Tree, by_name: dict[str, list[str]], name: str) -> str:
    hits = by_name[name]
    if len(hits) > 1:
        raise DataError(
            f"{name} found {len(hits)} times ({', '.join(str(tree.root / h) for h in hits)}): "
            "expected one copy; keep one copy in data.local_dir"
        )
    return hits[0]


def _folders_of(rels: list[str], pattern: re.Pattern[str]) -> list[str]:
    """The folders (relative POSIX, "." for the top) that directly hold files named like `pattern`."""
    return sorted({str(PurePosixPath(r).parent) for r in rels if pattern.match(PurePosixPath(r).name)})


def _masks(tree: _Tree, by_name: dict[str, list[str]]) -> list[dict[str, Any]]:
    if MASKS_NAME in by_name and not tree.in_zip:
        return [_record(tree, _single(tree, by_name, MASKS_NAME), "masks", "zip")]
    return [_folder_record(tree, d, "masks") for d in _folders_of(tree.files, MASK_NAME)]


def _record(tree: _Tree, rel: str, role: str, kind: str) -> dict[str, Any]:
    record: dict[str, Any] = {"role": role, "kind": kind, "path": str(tree.path(rel))}
    if tree.in_zip:
        record["member"] = rel
    return record


def _folder_record(tree: _Tree, folder: str, role: str) -> dict[str, Any]:
    pattern = IMAGE_NAME if role == "images" else MASK_NAME
    count = sum(
        1 for r in tree.files if str(PurePosixPath(r).parent) == folder and pattern.match(PurePosixPath(r).name)
    )
    if tree.in_zip:
        prefix = "" if folder == "." else f"{folder}/"
        return {"role": role, "kind": "zip", "path": str(tree.root), "prefix": prefix, "files": count}
    return {"role": role, "kind": "folder", "path": str((tree.root / folder).resolve()), "files": count}


def _zipped_csv(tree: _Tree, rel: str) -> dict[str, Any]:
    """The ground-truth csv inside the ISIC 2018 ground-truth zip."""
    path = tree.root / rel
    try:
        with zipfile.ZipFile(path) as archive:
            refuse_escaping_members(archive, path)
            names = [n for n in archive.namelist() if n.lower().endswith(".csv")]
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(
            f"{path} is not a readable zip archive ({err}): it is truncated or damaged; download it again"
        ) from None
    named = [n for n in names if PurePosixPath(n).name == isic2018.GROUND_TRUTH_NAME] or names
    if len(named) != 1:
        raise DataError(
            f"{path}: expected one csv ({isic2018.GROUND_TRUTH_NAME}) inside, found {names or 'none'}: "
            "download the ISIC 2018 Task 3 training ground truth again"
        )
    return {"role": "metadata", "kind": "csv", "path": str(path), "member": named[0]}


def _checksummed(record: dict[str, Any], published: Mapping[str, str], memo: dict[str, str]) -> dict[str, Any]:
    """`record` with its bytes and md5 (of the member, inside a zip) and whether that md5 is the published one."""
    if record["kind"] == "folder":
        return {**record, "md5": None, "published_md5": None, "md5_published": False}
    path = Path(record["path"])
    if path.as_posix() not in memo:
        memo[path.as_posix()] = md5_file(path)
    out = {**record, "bytes": path.stat().st_size, "md5": memo[path.as_posix()]}
    name, md5 = path.name, out["md5"]
    if "member" in record:
        with zipfile.ZipFile(path) as archive:
            data = archive.read(record["member"])
        name, md5 = PurePosixPath(record["member"]).name, _md5_bytes(data)
        out["member_md5"] = md5
    elif "prefix" in record:
        name = None  # a folder inside a zip: nothing published to compare
    want = published.get(name) if name else None
    return {**out, "published_md5": want, "md5_published": want is not None and md5 == want}


def _check_published(records: list[dict[str, Any]], strict: bool) -> None:
    """Log (or, when `strict`, refuse) files that are not the published ones; strictly, images and metadata need one."""
    for record in records:
        if record["published_md5"] is None or record["md5_published"]:
            continue
        md5, want = record.get("member_md5", record["md5"]), record["published_md5"]
        where = _where(record)
        if strict:
            raise DataError(
                f"{where} is not byte-identical to the Dataverse release: md5 {md5}, published {want}; "
                "refused because data.require_published_checksums is true: use the Dataverse file, or set "
                "data.require_published_checksums: false to accept it (the manifest records its md5)"
            )
        log.warning(
            "%s is not byte-identical to the Dataverse release (md5 %s, published %s): proceeding; "
            "results record this md5",
            where,
            md5,
            want,
        )
    unpublished = [r for r in records if r["role"] in ("images", "metadata") and r["published_md5"] is None]
    if strict and unpublished:
        raise DataError(
            f"{', '.join(map(_where, unpublished))} have no published md5 to compare (expected the Dataverse files "
            f"{', '.join(f.name for f in HAM10000_FILES)}); refused because data.require_published_checksums is "
            "true: use the Dataverse zips and csv, or set data.require_published_checksums: false"
        )


def _where(record: dict[str, Any]) -> str:
    inside = record.get("member") or record.get("prefix")
    return f"{record['path']}:{inside}" if inside else record["path"]


def _md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _incomplete(tree: _Tree, candidates: Mapping[str, Layout]) -> DataError:
    """The error for a folder without a complete layout: what each partial layout lacks, and what is there."""
    where = f"data.local_dir {tree.root}"
    if not candidates:
        lacks = "holds no copy in a layout the workflow knows; each expects: " + "; ".join(
            f"{name}: {expects}" for name, expects in _EXPECTS.items()
        )
        if tree.in_zip and any(r.lower().endswith(".zip") for r in tree.files):
            lacks += " (zips inside a zip are not read in place: unzip it and point data.local_dir at the folder)"
    else:
        several = len(candidates) > 1
        lacks = "; ".join(
            f"lacks {'; '.join(c.missing)}" + (f" for the {c.name} layout" if several else "")
            for c in candidates.values()
            if c.missing
        )
    return DataError(
        f"{where} {lacks}. Found: {_shown(tree)}. Add the missing files, or point data.local_dir at the folder "
        "that has them (README, Data: the layouts recognised)"
    )


def _shown(tree: _Tree) -> str:
    shown = ", ".join(tree.files[:_SHOWN]) or "nothing"
    return shown + (f" and {len(tree.files) - _SHOWN} more" if len(tree.files) > _SHOWN else "")
