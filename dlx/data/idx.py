"""Reader for the IDX format used by the MNIST files (raw or gzipped), without pickle.

Header: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32
per dimension; the data follows, big-endian, row-major.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from dlx.errors import DataError

# IDX dtype codes -> big-endian numpy dtypes (MNIST itself only uses 0x08, unsigned bytes).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: str | Path) -> bytes:
    """The file's contents, gunzipped when the name ends in ``.gz``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from err
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} is not a valid gzip file ({err})") from err


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Decode IDX bytes; ``name`` (a path or file name) is used in error messages."""
    if len(data) < 4:
        raise DataError(f"{name} is not an IDX file: only {len(data)} bytes")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(f"{name} is not an IDX file: bad magic number 0x{magic:08x}")
    if code not in IDX_DTYPES:
        raise DataError(f"{name} has an unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{name} is a malformed IDX file: zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated: the IDX header needs {header} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{name} is a malformed IDX file: header says shape {shape} "
            f"({expected} bytes of data) but {len(data) - header} bytes follow it"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    # Native byte order so downstream code (and JAX) never sees a big-endian array.
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) as a read-only array in native byte order.

    Malformed files (bad magic, unknown dtype code, size not matching the header) raise
    DataError naming the file.
    """
    return parse_idx(read_bytes(path), str(path))
