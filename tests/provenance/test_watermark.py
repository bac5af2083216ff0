"""PRF portability (known-answer vectors, independent pure-Python re-implementation), schemes."""

from __future__ import annotations

import hashlib
import hmac
import struct

import numpy as np
import pytest

from distillguard.errors import ConfigError
from distillguard.provenance.keys import KeyRing, WatermarkKey, load_key
from distillguard.provenance.watermark import Watermark

KAT_KEY = WatermarkKey(key_id="kat", secret=bytes(range(32)), vocab_size=64, gamma=0.25, context_width=2)
KAT_GREEN = [3, 5, 7, 10, 18, 23, 24, 31, 36, 42, 43, 53, 56, 58, 60]


def _splitmix_py(x: int) -> int:
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_known_answer_green_list():
    assert np.flatnonzero(Watermark(KAT_KEY).green_mask([17, 42])).tolist() == KAT_GREEN


def test_prf_matches_pure_python_reimplementation():
    """The green list is HMAC-SHA256 + SplitMix64 integer arithmetic, nothing platform-specific."""
    seed = int.from_bytes(hmac.new(bytes(range(32)), b"greenlist/lefthash|" + struct.pack(">2I", 17, 42), hashlib.sha256).digest()[:8], "big")
    thr = int(0.25 * 2**64)
    green = [y for y in range(64) if _splitmix_py(seed ^ ((y * 0x9E3779B97F4A7C15) & ((1 << 64) - 1))) < thr]
    assert green == KAT_GREEN
    assert Watermark(KAT_KEY).window_seed((17, 42)) == seed


def test_pair_scoring_agrees_with_generation_masks():
    for hashing in ("lefthash", "selfhash"):
        wm = Watermark(KAT_KEY.with_params(hashing=hashing, vocab_size=500))
        mask = wm.green_mask([5, 9], 500)
        assert (wm.green(np.array([[5, 9]] * 500), np.arange(500)) == mask).all()
    assert np.flatnonzero(Watermark(KAT_KEY.with_params(hashing="selfhash")).green_mask([17, 42])).tolist() == [6, 9, 11, 25, 33, 34, 35, 37, 46, 50, 52, 56, 61]


def test_green_fraction_close_to_gamma_and_keys_differ():
    wm = Watermark(KAT_KEY.with_params(vocab_size=20000))
    m = wm.green_mask([1, 2], 20000)
    assert abs(m.mean() - 0.25) < 0.02
    other = Watermark(WatermarkKey.derive(b"x", key_id="other", vocab_size=20000, context_width=2)).green_mask([1, 2], 20000)
    assert 0.03 < (m & other).mean() < 0.10  # independent lists overlap ~ gamma^2


def test_gumbel_known_answer_and_choice_follows_uniforms():
    wm = Watermark(KAT_KEY.with_params(scheme="gumbel"))
    r = Watermark.uniforms(wm.u_all([17, 42], 4))
    assert np.round(r, 6).tolist() == [0.313367, 0.991767, 0.733165, 0.687163]
    out = wm.process_logits([17, 42], np.zeros(4))  # uniform p: argmax r
    assert np.isfinite(out).sum() == 1 and int(np.argmax(out)) == 1


def test_green_list_bias_adds_delta_only_to_green():
    wm = Watermark(KAT_KEY.with_params(delta=3.0))
    out = wm.process_logits([17, 42], np.zeros(64))
    assert np.flatnonzero(out == 3.0).tolist() == KAT_GREEN
    assert (wm.process_logits([17], np.zeros(64)) == 0).all()  # shorter than h: untouched


@pytest.mark.parametrize("bad", [dict(gamma=0.0), dict(gamma=1.5), dict(delta=-1.0), dict(context_width=0),
                                 dict(scheme="nope"), dict(hashing="nope")])
def test_key_validation(bad):
    with pytest.raises(ConfigError):
        WatermarkKey(key_id="k", secret=bytes(32), **bad)


def test_short_secret_rejected():
    with pytest.raises(ConfigError, match="keygen"):
        WatermarkKey(key_id="k", secret=b"short")


def test_key_file_roundtrip_and_ring_rotation(tmp_path):
    k = WatermarkKey.generate(seed=3, vocab_size=10)
    k.save(tmp_path / "k.json")
    assert load_key(tmp_path / "k.json") == k
    assert WatermarkKey.generate(seed=3, vocab_size=10).secret == k.secret  # seeded = reproducible
    ring = KeyRing([k])
    new = ring.rotate(WatermarkKey.generate(seed=4, key_id="wk-new", vocab_size=10))
    ring.save(tmp_path / "ring.jsonl")
    loaded = KeyRing.load(tmp_path / "ring.jsonl")
    assert load_key(tmp_path / "ring.jsonl").key_id == new.key_id == loaded.active.key_id
    assert loaded.get(k.key_id).retired_at is not None
    assert "secret" not in repr(k) or k.secret.hex() not in repr(k)


def test_bad_key_file(tmp_path):
    with pytest.raises(ConfigError, match="keygen"):
        load_key(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"format": "distillguard-watermark-key/1", "key_id": "x", "secret": "zz"}')
    with pytest.raises(ConfigError):
        load_key(tmp_path / "bad.json")


def test_decoys_are_deterministic_and_distinct():
    a, b = KAT_KEY.decoys(5, seed=1), KAT_KEY.decoys(5, seed=1)
    assert [d.secret for d in a] == [d.secret for d in b]
    assert len({d.secret for d in a} | {KAT_KEY.secret}) == 6
