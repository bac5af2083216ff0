"""Reading labelled traffic for the benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distillguard.bench.data import load_event_table, load_traffic, traffic_logs
from distillguard.errors import InputError


def test_python_and_ingest_readers_agree(tiny_eval):
    logs = traffic_logs(tiny_eval)
    a, _ = load_event_table(logs, reader="python")
    b, _ = load_event_table(logs, reader="ingest")
    assert a.num_rows == b.num_rows > 3000
    a = a.sort_by("request_id")
    b = b.sort_by("request_id")
    for col in ("request_id", "account_id", "prompt", "prompt_tokens", "completion_tokens", "logprobs", "n"):
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    np.testing.assert_allclose(a.column("ts").to_numpy(), b.column("ts").to_numpy())


def test_cache_is_reused_and_equal(tiny_eval, tmp_path):
    logs = traffic_logs(tiny_eval)
    first, how = load_event_table(logs, cache_dir=tmp_path)
    assert how.endswith("(cached)") and len(list(tmp_path.glob("events-*.arrow"))) == 1
    again, _ = load_event_table(logs, cache_dir=tmp_path)
    assert again.equals(first)


def test_traffic_is_sorted_and_aligned(tiny_eval):
    t = load_traffic(tiny_eval)
    assert (np.diff(t.acc) >= 0).all()
    for a in range(t.account_ids.size):
        assert (np.diff(t.ts[t.starts[a]:t.starts[a + 1]]) >= 0).all()
    bulk = int(np.flatnonzero(t.account_ids == "bulk-1")[0])
    assert t.requests[bulk] == 2200 and t.label[bulk] == "extraction" and t.campaign[bulk] == "camp-bulk-1"
    assert list(t.account_ids) == sorted(t.account_ids)


def test_bad_labels_are_clear_errors(tiny_eval, tmp_path):
    for name in ("traffic.jsonl.gz", "accounts.jsonl"):
        (tmp_path / name).write_bytes((tiny_eval / name).read_bytes())
    rows = [json.loads(x) for x in (tiny_eval / "labels.jsonl").read_text().splitlines()]
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(r) for r in rows[1:]) + "\n")
    with pytest.raises(InputError, match="have no line"):
        load_traffic(tmp_path)
    rows[0]["label"] = "evil"
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(InputError, match="label must be"):
        load_traffic(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no traffic log"):
        traffic_logs(tmp_path / "empty")


def test_read_labels_names_the_bad_line(tmp_path):
    """train read label files with a bare orjson.loads: a bad line was a traceback, an unknown label benign."""
    from distillguard.bench.data import read_labels
    from distillguard.detect.train import _labels

    good = '{"account_id": "a", "label": "extraction", "campaign_id": "c"}\n{"account_id": "b", "label": "benign"}\n'
    (tmp_path / "ok.jsonl").write_text(good + "\n")
    assert _labels(tmp_path / "ok.jsonl") == ({"a": 1, "b": 0}, {"a": "c"})
    for bad, why in (("not json", "ok.jsonl:3: not JSON"), ('{"label": "benign"}', "string 'account_id'"),
                     ('{"account_id": "c", "label": "malicious"}', "got 'malicious'")):
        (tmp_path / "ok.jsonl").write_text(good + bad + "\n")
        with pytest.raises(InputError, match=why):
            read_labels(tmp_path / "ok.jsonl")
        with pytest.raises(InputError, match=why):
            _labels(tmp_path / "ok.jsonl")
