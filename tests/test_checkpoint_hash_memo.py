"""The content-hash memo a checkpoint keeps in <ckpt>/eval/content_hash.json is trusted only when
signed with this user's key: a memo planted in a shared checkpoint cannot claim another
checkpoint's hash (and so be served that checkpoint's cached scores).

    .venv/bin/python -m pytest -q tests/test_checkpoint_hash_memo.py
"""

from __future__ import annotations

import json
import os

import pytest

from training.common.checkpoint_hash import MEMO, checkpoint_hash
from training.common.private_key import sign, user_key


@pytest.fixture
def keys(tmp_path, monkeypatch):
    monkeypatch.setenv("LADDER_KEY_DIR", str(tmp_path / "keys"))


def fake_checkpoint(path, weights: bytes):
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(weights)
    (path / "config.json").write_text('{"model_type": "llama"}')
    return path


def test_a_planted_memo_claiming_another_checkpoints_hash_is_ignored(tmp_path, keys):
    good = fake_checkpoint(tmp_path / "good", b"good weights")
    evil = fake_checkpoint(tmp_path / "evil", b"other weights")
    good_hash, evil_hash = checkpoint_hash(good), checkpoint_hash(evil)
    assert good_hash != evil_hash
    # the memo that good's hashing wrote, its stats rewritten to evil's, as a planter would
    memo = json.loads((good / "eval" / MEMO).read_text())
    planted = json.loads((evil / "eval" / MEMO).read_text())
    planted["sha256"] = memo["sha256"]
    for forged_mac in (planted["mac"], memo["mac"], "0" * 64, None):
        planted["mac"] = forged_mac
        (evil / "eval" / MEMO).write_text(json.dumps(planted))
        assert checkpoint_hash(evil) == evil_hash
    # no signature at all, as a memo of an older Ladder: hashed again, not trusted
    (evil / "eval" / MEMO).write_text(json.dumps({"sha256": good_hash, "files": planted["files"]}))
    assert checkpoint_hash(evil) == evil_hash


def test_a_memo_signed_with_this_users_key_is_reused_until_a_file_changes(tmp_path, keys):
    ckpt = fake_checkpoint(tmp_path / "c", b"weights")
    real = checkpoint_hash(ckpt)
    memo = json.loads((ckpt / "eval" / MEMO).read_text())
    # a signed memo is believed without hashing: prove it by signing a made-up hash
    body = {"sha256": "f" * 64, "files": memo["files"]}
    (ckpt / "eval" / MEMO).write_text(json.dumps({**body, "mac": sign(user_key(), body)}))
    assert checkpoint_hash(ckpt) == "f" * 64
    # a file rewritten with its size and mtime kept (touch can set mtime back) changes ctime
    st = (ckpt / "model.safetensors").stat()
    (ckpt / "model.safetensors").write_bytes(b"WEIGHTS")
    os.utime(ckpt / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert checkpoint_hash(ckpt) not in (real, "f" * 64)


def test_a_key_readable_by_others_is_not_trusted_and_is_replaced(tmp_path, keys):
    key = user_key()
    path = tmp_path / "keys" / "memo.key"
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)  # someone could have read it
    assert user_key() != key
    assert path.stat().st_mode & 0o777 == 0o600
