"""Partial files of an export that was killed.

export_bundle writes `.evidence-<host>.<pid>.<random>.zip.part` and a folder `.evidence-<host>.<pid>.<random>/`
next to its output and renames the zip into place at the end; a killed export leaves both behind.
`remove_partials` (at the start of each export, of `attest evidence export` and of the scheduler) removes
those of processes of this host that are gone, and legacy ones (no host and pid) older than an hour.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path

PARTIAL_PREFIX = ".evidence-"
LEGACY_PARTIAL_AGE = 3600.0  # seconds
_PARTIAL = re.compile(r"^\.evidence-(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:60] or "host"


def _partial_prefix() -> str:
    return f"{PARTIAL_PREFIX}{_host()}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def remove_partials(directory: str | os.PathLike, now: float | None = None) -> list[str]:
    """Remove what killed exports left in `directory`: their `.evidence-*.zip.part` files and `.evidence-*/`
    folders, when the process that wrote them (named in the file name) is no longer running on this host;
    unnamed (older versions') leftovers once they are an hour old. Returns the names removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now = time.time() if now is None else now
    host, removed = _host(), []
    for entry in directory.iterdir():
        name = entry.name
        if not name.startswith(PARTIAL_PREFIX):
            continue
        if not (name.endswith(".zip.part") or entry.is_dir()):
            continue
        m = _PARTIAL.match(name)
        if m:
            if m["host"] != host or _pid_alive(int(m["pid"])):
                continue
        else:
            try:
                if now - entry.lstat().st_mtime < LEGACY_PARTIAL_AGE:
                    continue
            except OSError:
                continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(name)
    return sorted(removed)
