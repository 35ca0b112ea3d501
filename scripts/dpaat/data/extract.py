"""The one extract-and-index path every data source goes through.

It reads the acquire manifest, checks that each listed file is still the one acquired
(md5), extracts the images (and lesion masks) from zips (or folders inside a zip) or
copies them from folders, decoding every one so that a corrupt or non-image member is
caught here, drops byte-identical copies of one image (Kaggle ships every image twice),
and joins them with the metadata (HAM10000's csv, or ISIC 2018's ground truth and lesion
groupings) into the index: one row per image, with `source` saying where it came from.
The index's Parquet metadata records the layout and how lesions were grouped.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
from PIL import Image

from .. import io as atomic
from . import imagefolder, isic2018, medmnist
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
        ("source", pa.string()),
        # The dataset's own split (train/val/test) where it has one (MedMNIST, an ImageFolder with train/ and
        # test/), else null; the split step honours it.
        ("predefined_split", pa.string()),
    ]
)
# Key of the index's and the splits' Parquet metadata (a JSON object).
METADATA_KEY = "dpaat"
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
    manifest_path = Path(manifest_path)
    skips = _Skips(max_unreadable)
    if _manifest(manifest_path).get("source") in ("imagefolder", "medmnist"):
        Path(masks_dir).mkdir(parents=True, exist_ok=True)
        return _dataset_index(manifest_path, Path(images_dir), skips)
    layout, files = _verified_files(manifest_path)
    images = _extract(files["images"], IMAGE_NAME, _JPEG_MAGIC, Path(images_dir), "{}.jpg", skips)
    masks = _extract(files["masks"], MASK_NAME, _PNG_MAGIC, Path(masks_dir), "{}_segmentation.png", skips)
    if skips.entries:
        log.warning("skipped %d unreadable files (data.max_unreadable = %d)", len(skips.entries), max_unreadable)

    (metadata_record,) = files["metadata"]
    metadata_name = _name(metadata_record)
    metadata, grouping = _read_metadata(metadata_record, files["lesions"])
    metadata = metadata[~metadata["image_id"].isin(skips.ids)]
    missing = sorted(set(metadata["image_id"]) - set(images))
    if missing:
        sources = ", ".join(_name(r) for r in files["images"])
        raise DataError(
            f"{len(missing)} image ids in {metadata_name} have no image, e.g. {missing[:_EXAMPLES]}: expected every "
            f"image of the metadata in the image files ({sources}); the image files are incomplete "
            "(are both HAM10000_images_part_1.zip and _part_2.zip, or both image folders, there?)"
        )
    extra = len(set(images) - set(metadata["image_id"]))
    if extra:
        log.warning("%d images have no metadata row and are left out of the index", extra)
    paths = {image: path for image, (path, _) in images.items()}
    sources = {image: where for image, (_, where) in images.items()}
    index = metadata.assign(
        image_path=metadata["image_id"].map(paths),
        mask_path=metadata["image_id"].map({image: path for image, (path, _) in masks.items()}),
        source=metadata["image_id"].map(sources),
        predefined_split=None,
    )
    index = index[INDEX_SCHEMA.names].sort_values("image_id", kind="stable").reset_index(drop=True)
    index.attrs[METADATA_KEY] = {"layout": layout, "metadata": metadata_name, "lesion_grouping": grouping}
    log.info(
        "indexed %d images (%d with masks) of %d lesions; %s layout; lesion grouping: %s",
        len(index),
        index["mask_path"].notna().sum(),
        index["lesion_id"].nunique(),
        layout,
        grouping,
    )
    if grouping.startswith("impossible"):
        log.warning("lesion grouping %s", grouping)
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
    sources: list[dict[str, Any]], pattern: re.Pattern[str], magic: bytes, out_dir: Path, name: str, skips: _Skips
) -> dict[str, tuple[str, str]]:
    """Check and store every file named like `pattern` in `sources`; return image id -> (stored path, where from).

    A second copy of an image id with the same bytes is dropped; with other bytes it is an error.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stored: dict[str, tuple[str, str]] = {}
    origin: dict[str, tuple[str, str]] = {}
    copies = 0
    for record in sources:
        for image, where, data, problem in _members(record, pattern):
            digest = hashlib.md5(data).hexdigest()
            if image in origin:
                first, first_digest = origin[image]
                if digest == first_digest and not problem:
                    copies += 1
                    continue
                raise DataError(
                    f"{image} is in both {first} and {where} with different contents (md5 {first_digest} and "
                    f"{digest}): expected one image per id; remove the wrong copy from data.local_dir"
                )
            origin[image] = (where, digest)
            problem = problem or _unreadable(data, magic)
            if problem:
                skips.add(image, where, problem)
                continue
            target = out_dir / name.format(image)
            with atomic.atomic_path(target) as tmp:
                tmp.write_bytes(data)
            stored[image] = (str(target), where)
    if copies:
        log.info("dropped %d byte-identical second copies of images already extracted", copies)
    return stored


def write_index(index: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the index to Parquet atomically with the contract's schema and its layout and lesion grouping."""
    atomic.write_parquet(index, path, schema=INDEX_SCHEMA, metadata={METADATA_KEY: index.attrs.get(METADATA_KEY, {})})


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """Read an index written by `write_index`, its layout and lesion grouping in `.attrs[METADATA_KEY]`."""
    index = pd.read_parquet(path)
    index.attrs[METADATA_KEY] = atomic.read_parquet_metadata(path).get(METADATA_KEY, {})
    return index


def read_metadata(path: str | os.PathLike, data: bytes | None = None, name: str | None = None) -> pd.DataFrame:
    """Read a HAM10000 metadata csv (from `path`, or its `data`): the contract's columns (extras such as `dataset` dropped)."""
    path = Path(path)
    name = name or path.name
    try:
        metadata = pd.read_csv(io.BytesIO(data) if data is not None else path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{name} is not a readable csv ({err}): download the original metadata csv again") from None
    absent = [c for c in METADATA_COLUMNS if c not in metadata.columns]
    if absent:
        raise DataError(
            f"{name} lacks the column(s) {absent} (it has {list(metadata.columns)}): expected HAM10000's columns "
            f"{', '.join(METADATA_COLUMNS)}; use the original HAM10000 metadata csv, or name your columns so"
        )
    return checked_metadata(metadata[list(METADATA_COLUMNS)].copy(), name)


def checked_metadata(metadata: pd.DataFrame, name: str) -> pd.DataFrame:
    """HAM10000-format metadata (strings) checked for blank keys, repeated ids and bad ages; age as float."""
    metadata = metadata.reset_index(drop=True)
    for column in ("lesion_id", "image_id", "dx"):
        blank = metadata[column].str.strip() == ""
        if blank.any():
            raise DataError(
                f"{name} has {int(blank.sum())} rows without {column} (first at row {int(blank.idxmax()) + 2}): "
                f"expected a {column} in every row; fill them in or remove those rows"
            )
    duplicated = metadata["image_id"][metadata["image_id"].duplicated()]
    if len(duplicated):
        raise DataError(
            f"{name} lists {len(duplicated)} image ids twice, e.g. {sorted(set(duplicated))[:_EXAMPLES]}: "
            "expected one row per image; remove the repeated rows"
        )
    age = pd.to_numeric(metadata["age"], errors="coerce")
    bad_age = metadata["age"].ne("") & age.isna()
    if bad_age.any():
        raise DataError(
            f"{name} has non-numeric ages, e.g. {metadata['age'][bad_age].unique()[:_EXAMPLES].tolist()}: "
            "expected a number of years or a blank; fix those values"
        )
    return metadata.assign(age=age.astype("float64"))


def _dataset_index(manifest_path: Path, images_dir: Path, skips: _Skips) -> pd.DataFrame:
    """The index of an ImageFolder tree or a MedMNIST npz: HAM10000's columns, the patient fields null."""
    layout, files = _verified_files(manifest_path, need_metadata=False)
    dataset = _manifest(manifest_path)["dataset"]
    (images,) = files["images"]
    if images["kind"] == "npz":
        index, info = medmnist.build_index(images["path"], dataset["classes"], images_dir)
    else:
        index, info = imagefolder.build_index(images["path"], images_dir, skips)
        if skips.entries:
            log.warning("skipped %d unreadable images (data.max_unreadable = %d)", len(skips.entries), skips.allowed)
    index = index.assign(dx_type=None, age=float("nan"), sex=None, localization=None, mask_path=None)
    index = index[INDEX_SCHEMA.names].sort_values("image_id", kind="stable").reset_index(drop=True)
    index.attrs[METADATA_KEY] = {**info, "dataset": dataset}
    log.info(
        "indexed %d images of %d classes (%s); %s layout; grouping: %s",
        len(index),
        index["dx"].nunique(),
        ", ".join(f"{dx} {n}" for dx, n in index["dx"].value_counts(sort=False).items()),
        info["layout"],
        info["lesion_grouping"],
    )
    return index


def _manifest(manifest_path: Path) -> dict[str, Any]:
    try:
        return json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the data manifest {manifest_path} ({err}): rerun the acquire step") from None


def _verified_files(manifest_path: Path, need_metadata: bool = True) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """The manifest's layout and records per role (paths resolved), each file checked to be the one acquired."""
    try:
        manifest = _manifest(manifest_path)
        records = manifest["files"]
    except (KeyError, TypeError) as err:
        raise DataError(f"cannot read the data manifest {manifest_path} ({err}): rerun the acquire step") from None
    files: dict[str, list[dict[str, Any]]] = {"images": [], "metadata": [], "masks": [], "lesions": []}
    checked: set[Path] = set()
    for record in records:
        path = manifest_path.parent / record["path"]
        if not path.exists():
            raise DataError(
                f"{path}, listed in {manifest_path}, is missing: rerun the acquire step (snakemake --forcerun acquire)"
            )
        # A zip read in place (Kaggle's archive.zip) backs several records: hash it once.
        if record["kind"] != "folder" and path not in checked:
            md5 = md5_file(path)
            if md5 != record["md5"]:
                raise DataError(
                    f"{path} changed since the acquire step (md5 {md5}, manifest {record['md5']}): "
                    "rerun the acquire step (snakemake --forcerun acquire)"
                )
            checked.add(path)
        files[record["role"]].append({**record, "path": path})
    if (need_metadata and len(files["metadata"]) != 1) or not files["images"]:
        raise DataError(f"{manifest_path} lists no images or not exactly one metadata file: rerun the acquire step")
    return str(manifest.get("layout", "unknown")), files


def _name(record: dict[str, Any]) -> str:
    """How a record is named in messages: the file, or archive:member."""
    inside = record.get("member") or record.get("prefix")
    return f"{record['path'].name}:{inside}" if inside else record["path"].name


def _read_bytes(record: dict[str, Any]) -> bytes:
    if "member" in record:
        with zipfile.ZipFile(record["path"]) as archive:
            return archive.read(record["member"])
    return record["path"].read_bytes()


def _read_metadata(record: dict[str, Any], lesions: list[dict[str, Any]]) -> tuple[pd.DataFrame, str]:
    """The metadata of either format and how its lesions are grouped."""
    name = _name(record)
    if record.get("format") == "isic2018":
        groups = lesions[0] if lesions else None
        metadata, grouping = isic2018.read_ground_truth(
            _read_bytes(record),
            name,
            _read_bytes(groups) if groups else None,
            _name(groups) if groups else isic2018.LESIONS_NAME,
        )
        return checked_metadata(metadata, name), grouping
    data = _read_bytes(record) if "member" in record else None
    return read_metadata(record["path"], data, name), f"lesion_id from {name}"


def _members(record: dict[str, Any], pattern: re.Pattern[str]) -> Iterator[tuple[str, str, bytes, str | None]]:
    """(image id, where from, bytes, why unreadable or None) of each file named like `pattern` in a record.

    A folder, a zip, or one folder (`prefix`) of a zip read in place: direct children only.
    """
    path = record["path"]
    if record["kind"] == "folder":
        for file in sorted(path.iterdir()):
            match = pattern.match(file.name)
            if match and file.is_file():
                yield _image_id(match), str(file), file.read_bytes(), None
        return
    prefix = record.get("prefix")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(
            f"{path.name} is not a readable zip archive ({err}): it is truncated or corrupt; "
            f"delete {path} and rerun the acquire step (or download it again)"
        ) from None
    with archive:
        refuse_escaping_members(archive, path)
        ignored = 0
        for info in archive.infolist():
            member = PurePosixPath(info.filename)
            if prefix is not None and f"{member.parent}/".removeprefix("./") != prefix:
                continue
            match = pattern.match(member.name)
            if info.is_dir() or not match:
                ignored += not info.is_dir()
                continue
            try:
                yield _image_id(match), f"{path.name}:{info.filename}", archive.read(info), None
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
                # Bytes that fail the CRC or end early: a damaged member, like an undecodable one.
                yield _image_id(match), f"{path.name}:{info.filename}", b"", f"damaged zip member: {err}"
        if ignored and prefix is None:
            log.info("%s: ignored %d members not named like %s", path.name, ignored, pattern.pattern)


def _image_id(match: re.Match[str]) -> str:
    """The image id of a file name match, spelled as in the metadata (ISIC_ upper-case)."""
    return "ISIC_" + match.group(1)[5:]


def refuse_escaping_members(archive: zipfile.ZipFile, path: Path) -> None:
    """Zip-slip guard: refuse the whole archive if any member path leaves the extraction folder."""
    for name in archive.namelist():
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise DataError(
                f"{path.name} has a member {name!r} whose path escapes the extraction folder (zip-slip): "
                "expected every member inside it, so the archive is refused; it is not a genuine HAM10000 file "
                "(download it again from its publisher)"
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
