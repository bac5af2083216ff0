"""Work folders left by a killed run are removed by the next one; others' folders are left alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from distillguard.workdir import OWNER_FILE, sweep_stale, work_dir


def _folder(base, name: str, owner: str | None):
    d = base / name
    d.mkdir()
    (d / "duckdb_temp_storage.tmp").write_bytes(b"x" * 1024)
    if owner is not None:
        (d / OWNER_FILE).write_text(owner)
    return d


def test_a_killed_run_s_folder_goes_and_the_rest_stay(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()  # a run killed from outside: its folder stays behind
    child.wait()
    host = socket.gethostname()
    dead = _folder(tmp_path, "distillguard-scan-dead", f"{child.pid} {host}\n")
    live = _folder(tmp_path, "distillguard-scan-live", f"{os.getppid()} {host}\n")  # a running process
    other_host = _folder(tmp_path, "distillguard-scan-remote", f"{child.pid} not-{host}\n")
    no_owner = _folder(tmp_path, "distillguard-scan-foreign", None)
    other_kind = _folder(tmp_path, "distillguard-replay-dead", f"{child.pid} {host}\n")

    made = work_dir("distillguard-scan-", dir=tmp_path)

    assert not dead.exists()
    assert live.exists() and other_host.exists() and no_owner.exists() and other_kind.exists()
    assert (made / OWNER_FILE).read_text().split() == [str(os.getpid()), host]
    assert sweep_stale("distillguard-replay-", dir=tmp_path) == [other_kind] and not other_kind.exists()
    assert sweep_stale("distillguard-scan-", dir=tmp_path) == []  # its own folder is not stale
