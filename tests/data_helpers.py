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
