"""The one extract-and-index path every data source goes through.

It reads the acquire manifest, checks that each listed file is still the one acquired
(size and md5), extracts the images (and lesion masks) from zips or copies them from
folders, decoding every one so that a corrupt or non-image member is caught here, and
joins them with the metadata csv into the index (one row per image).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

import pandas as pd
import pyarrow as pa
from PIL import Image

from .. import io as atomic
from .download import md5_file
from .errors import DataError
from .ham10000 import IMAGE_NAME, MASK_NAME, METADATA_COLUMNS

log = logging.getLogger(__name__)

INDEX_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("lesion_id", pa.string()),
        ("dx", pa.string()),
        ("dx_type", pa.string()),
        ("age", pa.float64()),
        ("sex", pa.string()),
        ("localization", pa.string()),
        ("image_path", pa.string()),
        ("mask_path", pa.string()),
    ]
)
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_EXAMPLES = 5


def build_index(
    manifest_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    *,
    max_unreadable: int = 0,
) -> pd.DataFrame:
    """Extract what the manifest lists into `images_dir`/`masks_dir`; return the index (INDEX_SCHEMA)."""
    files = _verified_files(manifest_path)
    skips = _Skips(max_unreadable)
    images = _extract(files["images"], IMAGE_NAME, _JPEG_MAGIC, Path(images_dir), "{}.jpg", skips)
    masks = _extract(files["masks"], MASK_NAME, _PNG_MAGIC, Path(masks_dir), "{}_segmentation.png", skips)
    if skips.entries:
        log.warning("skipped %d unreadable files (data.max_unreadable = %d)", len(skips.entries), max_unreadable)

    (metadata_path,) = [path for _, path in files["metadata"]]
    metadata = read_metadata(metadata_path)
    metadata = metadata[~metadata["image_id"].isin(skips.ids)]
    missing = sorted(set(metadata["image_id"]) - set(images))
    if missing:
        raise DataError(
            f"{len(missing)} image ids in {metadata_path.name} have no image, e.g. {missing[:_EXAMPLES]}: "
            "the image files are incomplete (are both HAM10000_images_part_1.zip and _part_2.zip there?)"
        )
    extra = len(set(images) - set(metadata["image_id"]))
    if extra:
        log.warning("%d images have no metadata row and are left out of the index", extra)
    index = metadata.assign(image_path=metadata["image_id"].map(images), mask_path=metadata["image_id"].map(masks))
    index = index[INDEX_SCHEMA.names].sort_values("image_id", kind="stable").reset_index(drop=True)
    log.info(
        "indexed %d images (%d with masks) of %d lesions",
        len(index),
        index["mask_path"].notna().sum(),
        index["lesion_id"].nunique(),
    )
    return index


class _Skips:
    """Unreadable files met so far; one more than `allowed` is an error."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.entries: list[str] = []
        self.ids: set[str] = set()

    def add(self, image: str, where: str, problem: str) -> None:
        self.entries.append(f"{where} ({problem})")
        self.ids.add(image)
        if len(self.entries) > self.allowed:
            raise DataError(
                f"unreadable image files: {'; '.join(self.entries[-_EXAMPLES:])}. "
                f"{len(self.entries)} found so far, data.max_unreadable allows {self.allowed}: "
                "replace the damaged files, or raise data.max_unreadable to skip them"
            )
        log.warning("skipping %s: %s", where, problem)


def _extract(
    sources: list[tuple[str, Path]], pattern: re.Pattern[str], magic: bytes, out_dir: Path, name: str, skips: _Skips
) -> dict[str, str]:
    """Check and store every file named like `pattern` in `sources`; return image id -> stored path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stored: dict[str, str] = {}
    origin: dict[str, str] = {}
    for kind, path in sources:
        for image, where, data, problem in _members(kind, path, pattern):
            if image in origin:
                raise DataError(f"{image} is in both {origin[image]} and {where}: keep one copy")
            origin[image] = where
            problem = problem or _unreadable(data, magic)
            if problem:
                skips.add(image, where, problem)
                continue
            target = out_dir / name.format(image)
            with atomic.atomic_path(target) as tmp:
                tmp.write_bytes(data)
            stored[image] = str(target)
    return stored


def write_index(index: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the index to Parquet atomically with the contract's schema."""
    atomic.write_parquet(index, path, schema=INDEX_SCHEMA)


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """Read a HAM10000 metadata csv: the contract's columns (extras such as `dataset` dropped)."""
    path = Path(path)
    try:
        metadata = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path} is not a readable csv ({err}): download the original metadata csv again") from None
    absent = [c for c in METADATA_COLUMNS if c not in metadata.columns]
    if absent:
        raise DataError(
            f"{path.name} lacks the column(s) {absent} (it has {list(metadata.columns)}): "
            "use the original HAM10000 metadata csv"
        )
    metadata = metadata[list(METADATA_COLUMNS)].copy()
    for column in ("lesion_id", "image_id", "dx"):
        blank = metadata[column].str.strip() == ""
        if blank.any():
            raise DataError(
                f"{path.name} has {int(blank.sum())} rows without {column} (first at row {int(blank.idxmax()) + 2})"
            )
    duplicated = metadata["image_id"][metadata["image_id"].duplicated()]
    if len(duplicated):
        raise DataError(
            f"{path.name} lists {len(duplicated)} image ids twice, e.g. {sorted(set(duplicated))[:_EXAMPLES]}"
        )
    age = pd.to_numeric(metadata["age"], errors="coerce")
    bad_age = metadata["age"].ne("") & age.isna()
    if bad_age.any():
        raise DataError(
            f"{path.name} has non-numeric ages, e.g. {metadata['age'][bad_age].unique()[:_EXAMPLES].tolist()}"
        )
    return metadata.assign(age=age.astype("float64"))


def _verified_files(manifest_path: str | os.PathLike) -> dict[str, list[tuple[str, Path]]]:
    """The manifest's (kind, path) per role, each file checked to be the one acquired."""
    manifest_path = Path(manifest_path)
    try:
        records = json.loads(manifest_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"cannot read the data manifest {manifest_path} ({err}): rerun the acquire step") from None
    files: dict[str, list[tuple[str, Path]]] = {"images": [], "metadata": [], "masks": []}
    for record in records:
        path = manifest_path.parent / record["path"]
        if not path.exists():
            raise DataError(
                f"{path}, listed in {manifest_path}, is missing: rerun the acquire step (snakemake --forcerun acquire)"
            )
        if record["kind"] != "folder":
            md5 = md5_file(path)
            if md5 != record["md5"]:
                raise DataError(
                    f"{path} changed since the acquire step (md5 {md5}, manifest {record['md5']}): "
                    "rerun the acquire step (snakemake --forcerun acquire)"
                )
        files[record["role"]].append((record["kind"], path))
    if len(files["metadata"]) != 1 or not files["images"]:
        raise DataError(f"{manifest_path} lists no images or not exactly one metadata file: rerun the acquire step")
    return files


def _members(kind: str, path: Path, pattern: re.Pattern[str]) -> Iterator[tuple[str, str, bytes, str | None]]:
    """(image id, where from, bytes, why unreadable or None) of each file named like `pattern`."""
    if kind == "folder":
        for file in sorted(path.iterdir()):
            match = pattern.match(file.name)
            if match and file.is_file():
                yield match.group(1), str(file), file.read_bytes(), None
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(
            f"{path.name} is not a readable zip archive ({err}): it is truncated or corrupt; "
            "delete it and rerun the acquire step"
        ) from None
    with archive:
        _refuse_escaping_members(archive, path)
        ignored = 0
        for info in archive.infolist():
            match = pattern.match(PurePosixPath(info.filename).name)
            if info.is_dir() or not match:
                ignored += not info.is_dir()
                continue
            try:
                yield match.group(1), f"{path.name}:{info.filename}", archive.read(info), None
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
                # Bytes that fail the CRC or end early: a damaged member, like an undecodable one.
                yield match.group(1), f"{path.name}:{info.filename}", b"", f"damaged zip member: {err}"
        if ignored:
            log.info("%s: ignored %d members not named like %s", path.name, ignored, pattern.pattern)


def _refuse_escaping_members(archive: zipfile.ZipFile, path: Path) -> None:
    """Zip-slip guard: refuse the whole archive if any member path leaves the extraction folder."""
    for name in archive.namelist():
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise DataError(
                f"{path.name} has a member {name!r} whose path escapes the extraction folder (zip-slip): "
                "refusing the archive; it is not a genuine HAM10000 file"
            )


def _unreadable(data: bytes, magic: bytes) -> str | None:
    """Why `data` is not a decodable image of the expected format, or None if it is."""
    if not data.startswith(magic):
        kind = "JPEG" if magic == _JPEG_MAGIC else "PNG"
        return f"not a {kind} file (starts with {data[:8]!r})"
    try:
        with Image.open(io.BytesIO(data)) as image:
            # Decoding at reduced scale still reads every byte, so truncation is caught cheaply.
            image.draft("RGB", (image.width // 8, image.height // 8))
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        return f"cannot decode: {err}"
    return None
