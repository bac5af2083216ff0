"""Work folders for DuckDB's spill files, and the clean-up of those that a killed run left behind.

A run removes its work folder when it ends. A run killed from outside (the kernel's out-of-memory
killer, ``kill -9``, a container stopped) cannot, and its spill files (gigabytes at 10 million
requests) stay in the temp folder; a few such runs fill the disk, and the next scan fails for want of
space. Each folder made here holds a file naming its owner process and host; making one removes the
folders of the same kind whose owner process is gone from this host.

>>> import tempfile
>>> d = work_dir("distillguard-doctest-", dir=tempfile.mkdtemp())
>>> (d / OWNER_FILE).read_text().split()[0] == str(os.getpid())
True
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import tempfile
from pathlib import Path

#: The file in a work folder that names the process that owns it: ``<pid> <hostname>``.
OWNER_FILE = ".distillguard-owner"


def work_dir(prefix: str, *, dir: str | Path | None = None) -> Path:
    """A new folder in ``dir`` (the temp folder by default) named ``prefix`` and a random suffix, owned by
    this process, made after removing the folders of that prefix whose owner is gone (:func:`sweep_stale`)."""
    base = Path(dir) if dir is not None else Path(tempfile.gettempdir())
    sweep_stale(prefix, dir=base)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (path / OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    return path


def sweep_stale(prefix: str, *, dir: str | Path) -> list[Path]:
    """Remove the folders ``<dir>/<prefix>*`` whose owner file names a process of this host that no
    longer runs; returns them. A folder without an owner file (another tool's, or one being made) or
    owned on another host (a shared temp folder) is left alone."""
    removed = []
    host = socket.gethostname()
    for path in Path(dir).glob(glob.escape(prefix) + "*"):
        try:
            pid_text, owner_host = (path / OWNER_FILE).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if owner_host != host or pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
