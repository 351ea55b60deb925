"""Content-addressed caches: an entry named by the SHA-256 of everything that made it.

    from training.common.content_cache import ContentCache, key_of, file_hash, tokenizer_fingerprint
    key = key_of({"data": file_hash(path), "max_seq_len": 64, "code_version": 1})
    cache = ContentCache(run_root / "cache" / "tokens")
    cache.write_checked(key, raw, {"rows": 10}, ".npz")     # <key>.npz + <key>.json with its SHA-256
    raw, meta = cache.read_checked(key, ".npz")             # None if missing; ValueError if altered
    cache = ContentCache(run_root / "eval_cache", fan_out=True)
    cache.write_json(key, result); cache.read_json(key)     # <root>/<key[:2]>/<key>.json

The three caches use it: the DPO reference log-probs (training/recipes/ref_cache.py), tokenised
documents (training/data/token_cache.py) and eval results (evals/store/cache.py). Each builds its
own key parts (file_hash and tokenizer_fingerprint are the shared ones); this module hashes them,
names the files and moves the bytes. Writes go to a random temporary name and are renamed, and
reads open with O_NOFOLLOW, so a link planted in the cache is replaced or refused, never followed
(training/common/safe_files.py). It reads bytes and JSON only: decoding tensors or arrays, with
weights_only or allow_pickle=False, is the caller's. An entry written by several runs at once
gets identical bytes from each; the last rename wins.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from training.common.safe_files import read_bytes, write_atomic


def key_of(parts, length: int = 64) -> str:
    """The SHA-256 (hex, first `length` digits) of the parts as canonical JSON. The reference and
    token caches name entries by the first 32 digits, the eval cache by all 64."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_hash(path: str | Path, h=None) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB chunks; with `h`, fed into that hash."""
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """The vocabulary, merges and special tokens (tokenizer.json) plus the chat template."""
    h = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    h.update((tokenizer.chat_template or "").encode())
    return h.hexdigest()


class ContentCache:
    """Entries under `root`: <key><suffix>, or <key[:2]>/<key><suffix> with fan_out (a cache of many
    small entries, such as one per checkpoint and task, keeps its folders short)."""

    def __init__(self, root: str | Path, fan_out: bool = False):
        self.root, self.fan_out = Path(root), fan_out

    def path(self, key: str, suffix: str) -> Path:
        return (self.root / key[:2] if self.fan_out else self.root) / f"{key}{suffix}"

    def _write(self, key: str, suffix: str, data: bytes, fsync: bool) -> Path:
        path = self.path(key, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, fsync=fsync)
        return path

    # ---- JSON entries ---------------------------------------------------------------------
    def read_json(self, key: str, suffix: str = ".json"):
        """The entry's JSON; None when missing, a link or not JSON."""
        try:
            return json.loads(read_bytes(self.path(key, suffix)))
        except (OSError, ValueError):
            return None

    def write_json(self, key: str, obj, suffix: str = ".json") -> Path:
        return self._write(key, suffix, (json.dumps(obj) + "\n").encode(), fsync=False)

    # ---- binary entries with a checksum sidecar ---------------------------------------------
    def read_checked(self, key: str, suffix: str) -> tuple[bytes, dict] | None:
        """The entry's bytes and its JSON sidecar (<key>.json); None when either is missing. Raises
        ValueError (or KeyError, OSError, JSONDecodeError) when the bytes do not match the sidecar's
        SHA-256, or either file is a link."""
        data_path, meta_path = self.path(key, suffix), self.path(key, ".json")
        if not data_path.exists() or not meta_path.exists():
            return None
        meta = json.loads(read_bytes(meta_path))
        raw = read_bytes(data_path)
        if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
            raise ValueError("checksum mismatch")
        return raw, meta

    def write_checked(
        self, key: str, raw: bytes, meta: dict, suffix: str, fsync: bool = False
    ) -> None:
        """The bytes, then the sidecar (meta plus their SHA-256): a sidecar only ever names data
        that is already complete under its name."""
        self._write(key, suffix, raw, fsync)
        sidecar = {**meta, "sha256": hashlib.sha256(raw).hexdigest()}
        self._write(key, ".json", json.dumps(sidecar, indent=1).encode(), fsync)
