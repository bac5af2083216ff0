"""`distillguard provenance test` against a fake OpenAI-compatible suspect over real loopback HTTP."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.provenance.keys import WatermarkKey
from distillguard.provenance.suspects import ByteTokenizer
from distillguard.provenance.watermark import Watermark


def _ascii_text(wm, rng, n=120):
    """Byte-level text from a fixed random bigram model over printable ASCII, optionally watermarked."""
    base = np.random.default_rng(11).normal(0, 1.5, (256, 256))
    allowed = np.full(256, -np.inf)
    allowed[97:123] = 0  # a-z
    allowed[32] = 0
    seq = [int(rng.integers(97, 123))]
    for _ in range(n):
        lg = base[seq[-1]] + allowed
        if wm is not None:
            lg = wm.process_logits(seq[-wm.h :], lg)
        p = np.exp(lg - lg.max())
        seq.append(int(rng.choice(256, p=p / p.sum())))
    return bytes(seq).decode()


@pytest.fixture
def setup(tmp_path):
    key = WatermarkKey.generate(key_id="wk-loop", seed=5, vocab_size=256, delta=2.5)
    key.save(tmp_path / "key.json")
    wm = Watermark(key)
    rng = np.random.default_rng(0)
    memory, lines = {}, []
    for i in range(30):
        q = f"question {i}: tell me about {_ascii_text(None, rng, 12)}"
        a = _ascii_text(wm, rng)
        memory[q] = a
        lines.append(json.dumps({"request_id": f"r{i}", "timestamp": 1.0, "account_id": "acct", "endpoint": "/v1/chat/completions",
                                 "request": {"model": "ours", "messages": [{"role": "user", "content": q}]},
                                 "response": {"choices": [{"message": {"role": "assistant", "content": a}}]},
                                 "watermark_key_id": key.key_id}))
    (tmp_path / "served.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path, memory


def _serve(memory, clean):
    rng = np.random.default_rng(3)

    class H(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            q = body["messages"][-1]["content"]
            text = _ascii_text(None, rng) if clean else memory.get(q, "")
            out = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.mark.parametrize("clean", [False, True])
def test_cli_test_over_loopback(setup, clean):
    tmp, memory = setup
    srv = _serve(memory, clean)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        r = CliRunner().invoke(app, ["provenance", "test", "--suspect", f"openai:{url}", "--served", str(tmp / "served.jsonl"),
                                     "--key", str(tmp / "key.json"), "--out", str(tmp / "ev"), "--tokenizer", "bytes",
                                     "--decoys", "40", "--max-prompts", "15", "--samples", "1"])
    finally:
        srv.shutdown()
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp / "ev" / "evidence.json").read_text())
    best = min(t["p_value"] for t in doc["tests"])
    assert (best > 1e-3) if clean else (best < 1e-6)
    assert doc["setup"]["reading_mode"].startswith("not run")
    assert (tmp / "ev" / "evidence.html").stat().st_size > 1000


def test_cli_test_reports_missing_logs(tmp_path):
    WatermarkKey.generate(seed=1, vocab_size=256).save(tmp_path / "k.json")
    r = CliRunner().invoke(app, ["provenance", "test", "--suspect", "openai:http://127.0.0.1:9", "--served", str(tmp_path / "none.jsonl"),
                                 "--key", str(tmp_path / "k.json"), "--out", str(tmp_path / "o"), "--tokenizer", "bytes"])
    assert r.exit_code == 2 and "not found" in r.output


def test_cli_detect_bad_text_inputs_are_clear(tmp_path):
    """A missing file, a folder with no log in it and an empty file are one-line errors (they were a
    traceback, a traceback and silence); bytes that are not UTF-8 are replaced with a warning and the
    line is still tested."""
    WatermarkKey.generate(seed=1, vocab_size=256).save(tmp_path / "k.json")

    def detect(path):
        return CliRunner().invoke(app, ["provenance", "detect", "--key", str(tmp_path / "k.json"), "--tokenizer", "bytes",
                                        str(path)])

    r = detect(tmp_path / "none.txt")
    assert r.exit_code == 2 and "cannot read" in r.output and "No such file" in r.output
    (tmp_path / "logs").mkdir()
    r = detect(tmp_path / "logs")
    assert r.exit_code == 2 and "no text to test" in r.output
    (tmp_path / "empty.txt").write_text("\n\n")
    assert detect(tmp_path / "empty.txt").exit_code == 2
    (tmp_path / "bin.txt").write_bytes(b"caf\xe9 au lait\nplain line\n")
    r = detect(tmp_path / "bin.txt")
    assert r.exit_code == 0 and "1 line(s) are not valid UTF-8" in r.output
    rows = [json.loads(x) for x in r.output.splitlines() if x.startswith("{")]
    assert [x["id"] for x in rows] == ["0", "1"] and all(x["scored"] > 0 for x in rows)


def test_byte_tokenizer_roundtrip():
    t = ByteTokenizer()
    assert bytes(t.encode("héllo")).decode() == "héllo" and len(t) == 256
