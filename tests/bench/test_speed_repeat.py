"""``bench scan --repeat``: copies of a log with their own request and account ids."""

from __future__ import annotations

import gzip

import orjson
import pytest

from distillguard.bench.speed import repeat_log


def test_repeat_log_gives_each_copy_its_own_requests_and_accounts(tmp_path):
    log = tmp_path / "t.jsonl"
    log.write_bytes(b'{"request_id":"x1","account_id":"a","request":{"account_id":"kept"}}\n{"request_id":"x2","account_id":"b"}')
    acc = tmp_path / "acc.jsonl"
    acc.write_bytes(b'{"account_id":"a","payment_fingerprint":"p"}\n')
    big, big_acc = repeat_log(log, acc, 3, tmp_path / "out")
    rows = [orjson.loads(x) for x in gzip.open(big).read().splitlines()]
    assert [r["request_id"] for r in rows] == ["r0-x1", "r0-x2", "r1-x1", "r1-x2", "r2-x1", "r2-x2"]
    assert [r["account_id"] for r in rows] == ["c0-a", "c0-b", "c1-a", "c1-b", "c2-a", "c2-b"]
    accs = [orjson.loads(x) for x in gzip.open(big_acc).read().splitlines()]
    assert [a["account_id"] for a in accs] == ["c0-a", "c1-a", "c2-a"]
    assert [a["payment_fingerprint"] for a in accs] == ["c0-p", "c1-p", "c2-p"]


def test_repeated_copies_interleave_in_blocks_so_a_time_ordered_log_stays_nearly_ordered(tmp_path):
    from distillguard.bench.speed import _REPEAT_BLOCK_LINES

    n = 5 * _REPEAT_BLOCK_LINES + 17  # a last, partial block; no newline at the end
    log = tmp_path / "t.jsonl"
    log.write_bytes(b"\n".join(b'{"request_id":"x%d","timestamp":%d,"account_id":"a%d"}' % (k, k, k % 9) for k in range(n)))
    big, _ = repeat_log(log, None, 4, tmp_path / "out")
    rows = [orjson.loads(x) for x in gzip.open(big).read().splitlines()]
    assert len(rows) == 4 * n and len({r["request_id"] for r in rows}) == 4 * n  # nothing lost or repeated
    ts = [r["timestamp"] for r in rows]
    assert max(a - b for a, b in zip(ts, ts[1:])) < _REPEAT_BLOCK_LINES  # steps back by less than a block
    assert rows[_REPEAT_BLOCK_LINES]["request_id"] == "r1-x0"  # the second copy's first block follows the first's
    for i in range(4):  # each copy keeps the original order
        assert [r["timestamp"] for r in rows if r["request_id"].startswith(f"r{i}-")] == list(range(n))


def test_a_step_that_writes_much_to_stderr_does_not_hang(tmp_path, monkeypatch):
    """The step's rusage comes from os.wait4, which reads nothing until it ends: with pipes, 64 KB of
    output (warnings) blocked the step for ever. The figures come back, and a failing step says why."""
    import threading

    from distillguard.bench import speed

    monkeypatch.setitem(speed._STEPS, "noisy", "import sys\nsys.stderr.write('w' * 300_000)\nprint('ROWS 7')\n")
    monkeypatch.setitem(speed._STEPS, "broken", "import sys\nsys.stderr.write('boom ' * 30_000)\nsys.exit(3)\n")
    log = tmp_path / "log.jsonl"
    log.write_text("{}\n")
    got: dict = {}
    t = threading.Thread(target=lambda: got.update(speed._run_step("noisy", log, None)), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the step hung on a full pipe"
    assert got["rows"] == 7 and got["wall_s"] > 0
    with pytest.raises(RuntimeError, match="benchmark step broken failed: .*boom"):
        speed._run_step("broken", log, None)
