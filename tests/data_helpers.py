"""Shared helpers of the data-stage tests: tiny HAM10000-format files and a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import zipfile
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from PIL import Image

from dpaat.data.ham10000 import HAM10000_FILES, RemoteFile
from dpaat.data.synthetic import generate

TINY = (60, 45)  # a tenth of HAM10000's 600x450 keeps the tests fast
CLASSES = {"mel": 4, "bkl": 4, "nv": 6}


def tiny_ham(folder: Path, images: dict[str, int] | None = None, seed: int = 0, per_archive: int = 8) -> list[Path]:
    """Write a tiny synthetic HAM10000 (two image zips, csv, masks zip) to `folder`."""
    return generate(folder, images or CLASSES, seed=seed, images_per_archive=per_archive, size=TINY)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def file_table(folder: Path) -> tuple[RemoteFile, ...]:
    """HAM10000's file table (names, ids, the metadata's ?format=original) with the tiny files' sizes and md5s."""
    return tuple(
        replace(f, size=(folder / f.name).stat().st_size, md5=md5((folder / f.name).read_bytes()))
        for f in HAM10000_FILES
    )


def jpeg_bytes(colour: tuple[int, int, int] = (200, 120, 90), size: tuple[int, int] = TINY) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A zip holding exactly `members` (name -> bytes), names unchecked (for hostile archives)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


class _Handler(BaseHTTPRequestHandler):
    server: "FileServer"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.server
        path = urlsplit(self.path).path
        server.requests.append((self.path, self.headers.get("Range")))
        if path in server.status:
            self.send_error(server.status[path])
            return
        if path not in server.files:
            self.send_error(404)
            return
        body = server.files[path]
        start = 0
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if asked and server.ranges:
            start = int(asked.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        cut = server.cut_once.pop(path, None)
        if cut is not None:
            # Announce the whole body, send part of it, drop the connection.
            self.wfile.write(rest[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(rest)

    def log_message(self, *args: object) -> None:
        pass


class FileServer(ThreadingHTTPServer):
    """Serves `files` (URL path -> bytes) on 127.0.0.1; records (path with query, Range header) per request."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes], *, ranges: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.ranges = ranges
        self.status: dict[str, int] = {}
        self.cut_once: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/datafile/"


@contextmanager
def serving(files: dict[str, bytes], **options: bool) -> Iterator[FileServer]:
    """Run a FileServer in a thread for the duration of the block."""
    server = FileServer(files, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def dataverse_files(folder: Path) -> dict[str, bytes]:
    """URL paths under /datafile/ (by Dataverse id) of the files in `folder`, as HAM10000's table names them."""
    return {f"/datafile/{f.datafile_id}": (folder / f.name).read_bytes() for f in HAM10000_FILES}


# --- The layouts researchers have, built from a tiny synthetic HAM10000 (see dpaat.data.layouts) ---

ISIC_DX = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def ham_images(ham: Path) -> dict[str, dict[str, bytes]]:
    """Per image zip of the tiny HAM10000 (stem, e.g. HAM10000_images_part_1): member name -> bytes."""
    parts = {}
    for part in sorted(ham.glob("HAM10000_images_part_*.zip")):
        with zipfile.ZipFile(part) as archive:
            parts[part.stem] = {name: archive.read(name) for name in archive.namelist()}
    return parts


def kaggle_members(ham: Path) -> dict[str, bytes]:
    """Kaggle's skin-cancer-mnist-ham10000 tree: both image folders twice (upper- and lower-case), the csv
    without a `dataset` column, and the hmnist_*.csv pixel tables."""
    members = {}
    for stem, images in ham_images(ham).items():
        for folder in (stem, stem.lower()):
            members.update({f"{folder}/{name}": data for name, data in images.items()})
    metadata = (ham / "HAM10000_metadata.csv").read_text()
    members["HAM10000_metadata.csv"] = metadata.encode()
    pixels = "pixel0000,pixel0001,pixel0002,label\n12,200,31,4\n"
    for name in ("hmnist_28_28_RGB.csv", "hmnist_28_28_L.csv", "hmnist_8_8_L.csv", "hmnist_8_8_RGB.csv"):
        members[name] = pixels.encode()
    return members


def write_tree(dest: Path, members: dict[str, bytes]) -> Path:
    """Write `members` (relative path -> bytes) under `dest`."""
    for name, data in members.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(data)
    return dest


def kaggle_tree(ham: Path, dest: Path) -> Path:
    """The Kaggle download unzipped into `dest`."""
    return write_tree(dest, kaggle_members(ham))


def kaggle_zip(ham: Path, path: Path) -> Path:
    """The Kaggle download as it comes (archive.zip), with folder entries like Kaggle's."""
    members = kaggle_members(ham)
    with zipfile.ZipFile(path, "w") as archive:
        for folder in sorted({name.split("/")[0] + "/" for name in members if "/" in name}):
            archive.writestr(zipfile.ZipInfo(folder), b"")
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def isic_members(ham: Path, *, groupings: bool = True) -> dict[str, bytes]:
    """ISIC 2018 Task 3 training data unzipped: the input folder, the one-hot ground truth csv and,
    when `groupings`, the lesion groupings csv; the same images and diagnoses as the tiny HAM10000."""
    import pandas as pd

    folder = "ISIC2018_Task3_Training_Input"
    members = {f"{folder}/{name}": data for images in ham_images(ham).values() for name, data in images.items()}
    members[f"{folder}/LICENSE.txt"] = b"CC-BY-NC 4.0"
    metadata = pd.read_csv(ham / "HAM10000_metadata.csv").sort_values("image_id")
    truth = pd.DataFrame({"image": metadata["image_id"]})
    for column in ISIC_DX:
        truth[column] = (metadata["dx"] == column.lower()).astype(float)
    members["ISIC2018_Task3_Training_GroundTruth.csv"] = truth.to_csv(index=False).encode()
    if groupings:
        confirm = {"histo": "histopathology", "follow_up": "serial imaging showing no change"}
        groups = pd.DataFrame(
            {
                "image": metadata["image_id"],
                "lesion_id": metadata["lesion_id"],
                "diagnosis_confirm_type": metadata["dx_type"].map(
                    lambda t: confirm.get(t, "single image expert consensus")
                ),
            }
        )
        members["ISIC2018_Task3_Training_LesionGroupings.csv"] = groups.to_csv(index=False).encode()
    return members


def isic_downloads(ham: Path) -> dict[str, bytes]:
    """The three files the ISIC challenge bucket serves (by name), made from the tiny HAM10000."""
    members = isic_members(ham)
    inputs, truth = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(inputs, "w") as archive:
        for name, data in members.items():
            if name.startswith("ISIC2018_Task3_Training_Input/"):
                archive.writestr(name, data)
    with zipfile.ZipFile(truth, "w") as archive:
        archive.writestr(
            "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv",
            members["ISIC2018_Task3_Training_GroundTruth.csv"],
        )
        archive.writestr("ISIC2018_Task3_Training_GroundTruth/LICENSE.txt", b"CC-BY-NC 4.0")
    return {
        "ISIC2018_Task3_Training_Input.zip": inputs.getvalue(),
        "ISIC2018_Task3_Training_GroundTruth.zip": truth.getvalue(),
        "ISIC2018_Task3_Training_LesionGroupings.csv": members["ISIC2018_Task3_Training_LesionGroupings.csv"],
    }


def own_members(ham: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """A lab's own HAM-format collection: ids ISIC_<any digits>, images in nested folders of its own
    naming, a csv named its own way with HAM10000's columns (plus an extra). Also returns old -> new id."""
    import pandas as pd

    metadata = pd.read_csv(ham / "HAM10000_metadata.csv")
    renamed = {
        old: f"ISIC_{n}" if i % 2 else f"ISIC_{n:09d}"
        for i, (old, n) in enumerate(zip(metadata["image_id"], range(7, 10**6)))
    }
    members = {}
    for k, images in enumerate(ham_images(ham).values()):
        for name, data in images.items():
            members[f"collection/site_{'ab'[k % 2]}/{renamed[name.removesuffix('.jpg')]}.jpg"] = data
    metadata = metadata.assign(image_id=metadata["image_id"].map(renamed), scanner="DermLite")
    members["labels/our_metadata_v2.csv"] = metadata.to_csv(index=False).encode()
    return members, renamed


def image_tree(root: Path, n_classes: int = 10, per_class: int = 8, *, predefined: bool = False, seed: int = 0) -> Path:
    """A ten-class ImageFolder tree: JPEGs and PNGs with class-coded colours, a nested folder, a grayscale and an
    RGBA PNG, and a groups.csv putting images in pairs; with `predefined`, under train/ (per_class) and test/ (half)."""
    rows = ["path,group"]
    parts = {"train": per_class, "test": per_class // 2} if predefined else {None: per_class}
    for c in range(n_classes):
        colour = (20 * c + 30, 200 - 15 * c, (70 * c) % 256)
        for part, count in parts.items():
            top = root / part if part else root
            for i in range(count):
                folder = top / f"class_{c}" / ("scans/day1" if i % 3 == 2 else "")
                folder.mkdir(parents=True, exist_ok=True)
                shade = tuple(min(255, v + 3 * i) for v in colour)
                if i == 0 and c == 0:
                    path, image = folder / "gray.png", Image.new("L", (30, 24), 90 + i)
                elif i == 1 and c == 1:
                    path, image = folder / "alpha.png", Image.new("RGBA", (30, 24), (*shade, 128))
                elif i % 2:
                    path, image = folder / f"img{i}.png", Image.new("RGB", (30, 24), shade)
                else:
                    path, image = folder / f"img{i}.jpg", Image.new("RGB", (32, 24), shade)
                image.save(path)
                rel = path.relative_to(root).as_posix()
                rows.append(f"{rel},{part or 'all'}_patient_{c}_{i // 2}")
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
    return root


def medmnist_npz(classes: int = 4, counts: dict[str, int] | None = None, size: int = 28, seed: int = 0) -> bytes:
    """A MedMNIST-layout .npz (train_images, train_labels, val_..., test_...; grayscale uint8, labels (N, 1))."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for part, n in (counts or {"train": 40, "val": 12, "test": 16}).items():
        labels = (np.arange(n) % classes).astype(np.uint8).reshape(n, 1)
        images = (rng.integers(0, 40, (n, size, size)) + 50 * labels.reshape(n, 1, 1)).astype(np.uint8)
        arrays[f"{part}_images"], arrays[f"{part}_labels"] = images, labels
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def medmnist_info(flag: str, url: str, md5_hex: str, labels: list[str], task: str = "multi-class") -> dict:
    """An INFO table of one flag at size 28, shaped like the medmnist package's (its keys, our URL and MD5)."""
    return {
        flag: {
            "url": url,
            "MD5": md5_hex,
            "task": task,
            "label": {str(i): name for i, name in enumerate(labels)},
            "n_channels": 1,
            "n_samples": {"train": 40, "val": 12, "test": 16},
        }
    }
