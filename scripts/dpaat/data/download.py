"""HTTP download with resume, a progress bar and md5 (or sha256 prefix) verification.

Bytes go to `<dest>.part` (kept across failed attempts and reruns, so a cut connection
resumes with an HTTP Range request) and the file is renamed to `dest` only once its
size and digest check out: a file under its final name is always a verified one.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import DataError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# Server-side failures worth another try; any other HTTP error is final.
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class _Interrupted(Exception):
    """A transfer that stopped early or hit a transient error; the next attempt resumes."""


def _file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file with hashlib's `algorithm`, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def md5_file(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks."""
    return _file_digest(path, "md5")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    return _file_digest(path, "sha256")


def partial_path(dest: str | os.PathLike) -> Path:
    """Where the unverified bytes of a download to `dest` accumulate."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    size: int | None = None,
    sha256_prefix: str | None = None,
    setting: str = "data.base_url",
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> str:
    """Download `url` to `dest`, resuming a partial download, verify size and digests; return the md5.

    A `dest` already in place with the expected md5 (and sha256 prefix) is kept. `retries`
    counts consecutive attempts that brought no new byte; the wait doubles from `backoff`
    seconds. `setting` is the config key an error tells the user to check.
    """
    dest = Path(dest)
    name = dest.name
    if dest.exists():
        got = md5_file(dest)
        problem = _digest_problem(dest, md5, got, sha256_prefix)
        if problem is None:
            log.info("%s already downloaded (md5 %s)", name, got)
            return got
        log.warning("%s in place: downloading it again", problem)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    failures = 0
    while True:
        before = _size(part)
        try:
            _fetch(url, part, name=name, size=size, timeout=timeout, progress=progress, setting=setting)
            break
        except _Interrupted as err:
            failures = 0 if _size(part) > before else failures + 1
            if failures > retries:
                raise DataError(
                    f"downloading {name} from {url} failed {failures} times in a row ({err}): "
                    f"check the connection and {setting}, then rerun (a partial download resumes)"
                ) from None
            wait = backoff * 2 ** max(failures - 1, 0)
            log.warning("%s: %s; resuming from byte %d in %.1f s", name, err, _size(part), wait)
            time.sleep(wait)
    got = md5_file(part)
    if size is not None and _size(part) != size:
        problem = f"size mismatch for {name}: expected {size} bytes, got {_size(part)}"
    else:
        problem = _digest_problem(part, md5, got, sha256_prefix, name)
    if problem:
        # A rerun must neither trust nor resume these bytes.
        part.unlink()
        raise DataError(f"{problem} (downloaded from {url}); the bad file was deleted: check {setting} and rerun")
    os.replace(part, dest)
    log.info("%s downloaded and verified (md5 %s)", name, got)
    return got


def _digest_problem(
    path: Path, md5: str | None, got_md5: str, sha256_prefix: str | None, name: str | None = None
) -> str | None:
    """Why the file at `path` (of md5 `got_md5`) is not the expected `name`, or None when it is."""
    name = name or path.name
    if md5 is not None and got_md5 != md5:
        return f"md5 mismatch for {name}: expected {md5}, got {got_md5}"
    if sha256_prefix:
        got = sha256_file(path)
        if not got.startswith(sha256_prefix):
            return f"sha256 mismatch for {name}: expected a sha256 starting {sha256_prefix}, got {got}"
    return None


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _fetch(url: str, part: Path, *, name: str, size: int | None, timeout: float, progress: bool, setting: str) -> None:
    """Append the rest of `url` to `part`; raise _Interrupted when the transfer stops early."""
    start = _size(part)
    if size is not None and start > size:
        part.unlink()
        start = 0
    if size is not None and start == size:
        return
    request = urllib.request.Request(url, headers={"User-Agent": "dpaat-pipeline"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:
            # The partial file is not a prefix the server can continue: start over.
            part.unlink()
            raise _Interrupted("server refused to resume (HTTP 416)") from None
        if err.code in _RETRY_STATUS:
            raise _Interrupted(f"HTTP {err.code} {err.reason}") from None
        raise DataError(
            f"HTTP {err.code} {err.reason} for {url} ({name}): check {setting}"
            + (" and the datafile id" if setting == "data.base_url" else "")
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _Interrupted(f"connection failed: {err}") from None
    with response:
        offset = _resume_offset(response, start)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        if size is not None and total is not None and total != size:
            raise DataError(
                f"{url} ({name}) is {total} bytes, expected {size}: not the published file; check {setting}"
            )
        written = 0
        with open(part, "r+b" if offset else "wb") as fh, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress
        ) as bar:
            fh.seek(offset)
            fh.truncate()
            try:
                while chunk := response.read(_CHUNK):
                    fh.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                raise _Interrupted(f"connection lost after {offset + written} bytes: {err!r}") from None
    if length is not None and written != int(length):
        raise _Interrupted(f"connection closed after {offset + written} of {total} bytes")


def _resume_offset(response: http.client.HTTPResponse, start: int) -> int:
    """Byte offset the response body starts at: `start` for a matching 206, else 0 (full body)."""
    if not start or response.status != 206:
        if start:
            log.warning("server ignored the Range request: downloading from the start")
        return 0
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if not match or int(match.group(1)) != start:
        raise _Interrupted(f"unexpected Content-Range {response.headers.get('Content-Range')!r} for bytes={start}-")
    return start
