"""The gateway as a real process (``distillguard gateway``) over loopback: streaming, disconnects,
``kill -9`` log-loss bound, rotation, the command line."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time

import httpx
import orjson
import pytest
from gwhelpers import CHAT, REPO, auth, gateway_process, read_records

from distillguard.gateway.logsink import LogSink


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_real_server_plain_stream_and_disconnect(upstream, keys_file, tmp_path):
    logs = tmp_path / "logs"
    with gateway_process("--upstream", upstream.url, "--keys", str(keys_file), "--log-dir", str(logs)) as (url, _):
        with httpx.Client(base_url=url, timeout=10) as c:
            r = c.post("/v1/chat/completions", json=CHAT, headers=auth())
            assert r.status_code == 200 and r.json()["usage"]["total_tokens"] == 10

            # streamed chunk by chunk: the first event arrives while the upstream is still generating
            done_before = upstream.stats.streams_completed
            body = dict(CHAT, stream=True, fake_chunks=10, fake_chunk_delay_ms=100)
            with c.stream("POST", "/v1/chat/completions", json=body, headers=auth()) as s:
                it = s.iter_lines()
                first = next(line for line in it if line.startswith("data: "))
                assert upstream.stats.streams_completed == done_before  # not buffered whole
                rest = [line for line in it if line.startswith("data: ")]
            assert orjson.loads(first[6:])["choices"][0]["delta"]["content"] == "w0 "
            assert rest[-1] == "data: [DONE]" and len(rest) == 11

            # a client that goes away mid-stream cancels the upstream generation
            cancelled_before = upstream.stats.streams_cancelled
            body = dict(CHAT, stream=True, fake_chunks=200, fake_chunk_delay_ms=20)
            with c.stream("POST", "/v1/chat/completions", json=body, headers=auth(1)) as s:
                next(line for line in s.iter_lines() if line.startswith("data: "))
            # leaving the block closes the connection
            assert _wait(lambda: upstream.stats.streams_cancelled > cancelled_before)
        time.sleep(0.5)  # > one flush interval
        recs = read_records(logs)
    assert len(recs) == 3
    assert recs[1]["response"]["choices"][0]["message"]["content"] == "".join(f"w{i} " for i in range(10))
    assert recs[2]["distillguard"]["client_disconnected"] is True and recs[2]["account_id"] == "bob"
    assert recs[2]["response"]["choices"][0]["message"]["content"].startswith("w0 ")


@pytest.mark.slow
def test_kill_9_loses_at_most_one_flush_interval(upstream, keys_file, tmp_path):
    logs = tmp_path / "logs"
    with gateway_process("--upstream", upstream.url, "--keys", str(keys_file), "--log-dir", str(logs),
                         "--flush-interval-ms", "200") as (url, proc):
        with httpx.Client(base_url=url, timeout=10) as c:
            for i in range(150):
                assert c.post("/v1/chat/completions", json=dict(CHAT, seed=i), headers=auth()).status_code == 200
            time.sleep(0.6)  # three flush intervals: everything answered so far must be on disk
            burst = 0
            for i in range(40):
                if c.post("/v1/chat/completions", json=dict(CHAT, seed=1000 + i), headers=auth()).status_code == 200:
                    burst += 1
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    recs = read_records(logs)  # every line parses: no torn record
    seeds = {r["request"]["seed"] for r in recs}
    assert set(range(150)) <= seeds  # nothing older than the flush interval was lost
    assert len(recs) <= 150 + burst
    print(f"kill -9: {150 + burst} answered, {len(recs)} logged, {150 + burst - len(recs)} lost (last 200 ms only)")


def test_log_rotation_and_gzip(tmp_path):
    sink = LogSink(log_dir=tmp_path, flush_interval_s=10, max_bytes=2000)
    sink.start()
    for i in range(100):
        sink.put({"request_id": f"r{i}", "pad": "x" * 50})
        if i % 10 == 9:
            sink.flush()
    sink.close()
    gz = sorted(tmp_path.glob("*.jsonl.gz"))
    assert len(gz) >= 2 and sink.files_rotated == len(gz)
    ids = []
    for p in sorted(tmp_path.glob("*.jsonl*")):
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        ids += [orjson.loads(line)["request_id"] for line in data.splitlines()]
    assert sorted(ids, key=lambda s: int(s[1:])) == [f"r{i}" for i in range(100)]


def _failing_writes(monkeypatch, plan):
    """os.write in the log sink, following ``plan``: "fail" raises ENOSPC, an int writes that many
    bytes; after the plan, real writes."""
    import errno

    import distillguard.gateway.logsink as logsink

    real = os.write
    steps = list(plan)

    def write(fd, data):
        if not steps:
            return real(fd, data)
        step = steps.pop(0)
        if step == "fail":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, bytes(data[:step]))

    monkeypatch.setattr(logsink.os, "write", write)


def test_a_full_disk_loses_no_log_record(tmp_path, monkeypatch):
    """A failed write used to drop the records it held (counted as errors only); they are now kept and
    written first once the disk has room, whole (a record cut short mid-write is completed) and in order."""
    sink = LogSink(log_dir=tmp_path, flush_interval_s=10, compress_rotated=False)
    _failing_writes(monkeypatch, ["fail", 10, "fail"])  # nothing; 10 bytes, then no room
    recs = [{"request_id": f"r{i}", "pad": "x" * 20} for i in range(5)]
    for r in recs[:3]:
        sink.put(r)
    assert not sink._try_flush() and sink.pending == 3
    sink.put(recs[3])
    assert not sink._try_flush() and sink.pending == 4  # 10 bytes of r0 went to the file
    sink.put(recs[4])
    assert sink._try_flush() and sink.pending == 0
    sink.close()
    (log,) = tmp_path.glob("*.jsonl")
    assert [orjson.loads(x) for x in log.read_bytes().splitlines()] == recs
    assert sink.errors == 2 and sink.written == 5 and sink.dropped == 0


def test_a_disk_full_for_long_drops_the_oldest_records_and_counts_them(tmp_path, monkeypatch):
    sink = LogSink(log_dir=tmp_path, flush_interval_s=10, compress_rotated=False, max_backlog_bytes=200)
    _failing_writes(monkeypatch, [7] + ["fail"] * 10)  # r0 cut short after 7 bytes, then no room
    for i in range(10):
        sink.put({"request_id": f"r{i}", "pad": "x" * 20})
        sink._try_flush()
    assert sink._try_flush()
    sink.close()
    (log,) = tmp_path.glob("*.jsonl")
    ids = [orjson.loads(x)["request_id"] for x in log.read_bytes().splitlines()]  # every line whole JSON
    assert ids[0] == "r0" and ids == sorted(ids, key=lambda s: int(s[1:]))  # r0 completed, order kept
    assert sink.dropped > 0 and len(ids) + sink.dropped == 10 and ids[-1] == "r9"  # the newest kept


def test_log_dir_unwritable_is_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception, match="not writable"):
        LogSink(log_dir=blocker / "sub").start()


def test_cli_help_and_bad_keys(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    h = subprocess.run([sys.executable, "-m", "distillguard.cli", "gateway", "--help"], capture_output=True, text=True,
                       env=env, cwd=REPO)
    assert h.returncode == 0 and "--upstream" in h.stdout and "Example" in h.stdout and "--redis" in h.stdout
    bad = tmp_path / "keys.jsonl"
    bad.write_text('{"api_key": "sk-x"}\n')
    r = subprocess.run([sys.executable, "-m", "distillguard.cli", "gateway", "--upstream", "http://127.0.0.1:9",
                        "--keys", str(bad), "--log-dir", str(tmp_path / "l")], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=60)
    assert r.returncode == 2 and "account_id" in r.stderr
    good = tmp_path / "good.jsonl"
    good.write_text('{"api_key": "sk-x", "account_id": "acct"}\n')
    for url in ("notaurl", "ftp://host", "http://host:99999"):  # was a startup traceback once serving began
        r = subprocess.run([sys.executable, "-m", "distillguard.cli", "gateway", "--upstream", url, "--keys", str(good),
                            "--log-dir", str(tmp_path / "l"), "--port", "0"], capture_output=True, text=True, env=env,
                           cwd=REPO, timeout=60)
        assert r.returncode == 2 and f"error: upstream URL must be http(s)://host[:port], not {url!r}" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_scan_reads_gateway_logs_directly(make_gw, tmp_path):
    """``distillguard scan`` takes the gateway's log files as they are (plain and rotated .gz)."""
    import asyncio

    async def go():
        async with make_gw() as g:
            for i in range(5):
                await g.client.post("/v1/chat/completions", json=dict(CHAT, seed=i), headers=auth(i % 2))
            await g.client.post("/v1/chat/completions", json=dict(CHAT, stream=True), headers=auth())
            await g.client.post("/v1/chat/completions", json=CHAT)  # 401, logged too
            g.gw.sink.flush()
            g.gw.sink._rotate()  # one rotated .jsonl.gz file
            await g.client.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers=auth(1))
            g.gw.sink.flush()
            return sorted(str(p) for p in g.gw.sink.log_dir.glob("*.jsonl*"))

    files = asyncio.run(go())
    assert any(f.endswith(".jsonl.gz") for f in files) and any(f.endswith(".jsonl") for f in files)
    out = tmp_path / "scan"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    r = subprocess.run([sys.executable, "-m", "distillguard.cli", "scan", *files, "--out", str(out)],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "rejected.jsonl").read_text() == ""
    accounts = {orjson.loads(x)["account_id"] for x in (out / "verdicts.jsonl").read_text().splitlines()}
    assert {"alice", "bob"} <= accounts


def test_head_and_body_leave_in_one_write():
    """The uvicorn protocol used by ``distillguard gateway`` writes a whole answer with one call; a head
    without a body in the same loop step (a stream still waiting for its first chunk) goes out on the
    next iteration; closing flushes it."""
    import asyncio

    from distillguard.gateway.server import _HeadHoldingTransport

    class T:
        def __init__(self):
            self.writes, self.closed = [], False

        def write(self, b):
            self.writes.append(b)

        def is_closing(self):
            return self.closed

        def close(self):
            self.closed = True

        def get_extra_info(self, name):
            return ("127.0.0.1", 1) if name == "peername" else None

    async def go():
        loop = asyncio.get_running_loop()
        a, b, c = T(), T(), T()
        ta = _HeadHoldingTransport(a, loop)
        ta.write(b"HEAD")
        ta.write(b"BODY")
        ta.write(b"MORE")
        tb = _HeadHoldingTransport(b, loop)
        tb.write(b"HEAD")
        before = list(b.writes)
        await asyncio.sleep(0)
        tc = _HeadHoldingTransport(c, loop)
        tc.write(b"HEAD")
        tc.close()
        await asyncio.sleep(0)
        return a.writes, before, b.writes, c.writes, c.closed, ta.get_extra_info("peername")

    a, before, b, c, c_closed, peer = asyncio.run(go())
    assert a == [b"HEADBODY", b"MORE"]
    assert before == [] and b == [b"HEAD"]
    assert c == [b"HEAD"] and c_closed and peer == ("127.0.0.1", 1)
