"""Zip members hashed as they are written: each file of the bundle streams into the zip while its
SHA-256 and size are counted for the manifest.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class _HashingWriter(io.RawIOBase):
    """Passes bytes through to a zip member while counting them and hashing them with SHA-256."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        self.size += len(b)
        self.inner.write(b)
        return len(b)


@dataclass
class _Member:
    name: str
    sha256: str
    size: int
    rows: int | None = None

    def entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256, "bytes": self.size}
        if self.rows is not None:
            out["rows"] = self.rows
        return out


class _Text:
    """A text stream into a new zip member (UTF-8), hashed as written."""

    def __init__(self, zf: zipfile.ZipFile, name: str, compress: bool = True) -> None:
        info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        self.name = name
        self._raw = zf.open(info, "w", force_zip64=True)
        self._hash = _HashingWriter(self._raw)
        self._buf = io.BufferedWriter(self._hash, buffer_size=1 << 20)
        self.text = io.TextIOWrapper(self._buf, encoding="utf-8", newline="", write_through=False)

    def close(self, rows: int | None = None) -> _Member:
        self.text.flush()
        self._buf.flush()
        self._raw.close()
        return _Member(self.name, self._hash.sha.hexdigest(), self._hash.size, rows)


def _add_file(zf: zipfile.ZipFile, name: str, path: str | Path, compress: bool) -> _Member:
    info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
        while chunk := src.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
            dst.write(chunk)
    return _Member(name, sha.hexdigest(), size)


def _add_bytes(zf: zipfile.ZipFile, name: str, data: bytes, compress: bool = True) -> _Member:
    info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)
    return _Member(name, hashlib.sha256(data).hexdigest(), len(data))
