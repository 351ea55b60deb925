"""A content-addressed cache of the DPO reference model's log-probabilities.

    key = cache_key(reference_hash=..., tokenizer=tok, data_cfg=cfg.data)
    logps = load(cache_dir, key, n_pairs)      # None when missing, stale or corrupt
    store(cache_dir, key, logps, meta)

The key covers everything that changes the numbers: the reference checkpoint's content hash,
the tokenizer (vocabulary and merges) and its chat template, the data files' content hashes
(or the hub name and split), the maximum length, the sample limit and this code's version.
Every run of a sweep with the same key shares one entry, under <run_root>/cache/ref_logps/.
An entry is a tensor file plus a JSON sidecar holding the tensor's SHA-256: a truncated or
altered entry fails the check and is recomputed, never used. It is loaded with
torch.load(weights_only=True), so an entry planted to run code when unpickled is recomputed too.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
from pathlib import Path

import torch
from omegaconf import DictConfig

from training.common.safe_files import read_bytes, write_atomic

CODE_VERSION = 1  # bump when the way log-probs are computed changes
log = logging.getLogger("ladder.ref_cache")


def file_hash(path: str | Path, h=None) -> str:
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_hash(source: str | Path) -> str:
    """Content hash of a local model directory's weights and config; the name for a hub model."""
    p = Path(source)
    if not p.is_dir():
        return f"hub:{source}"
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.suffix in {".safetensors", ".bin"} or f.name == "config.json":
            h.update(f.name.encode())
            file_hash(f, h)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """The vocabulary, merges and special tokens (tokenizer.json) plus the chat template."""
    h = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    h.update((tokenizer.chat_template or "").encode())
    return h.hexdigest()


def data_fingerprint(data_cfg: DictConfig) -> dict:
    if data_cfg.get(
        "sources"
    ):  # a mixture: pairs are its sources' in config order (training/data/mixture.py)
        return {
            "sources": [
                [
                    name,
                    [file_hash(f) for f in s.train_files] or [s.hub_name, s.hub_split],
                    s.max_samples,
                ]
                for name, s in data_cfg.sources.items()
            ]
        }
    if data_cfg.train_files:
        return {"files": [file_hash(f) for f in data_cfg.train_files]}
    return {"hub": data_cfg.hub_name, "split": data_cfg.hub_split}


def cache_key(reference_hash: str, tokenizer, data_cfg: DictConfig) -> str:
    parts = {
        "reference": reference_hash,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "data": data_fingerprint(data_cfg),
        "max_seq_len": data_cfg.max_seq_len,
        "max_samples": data_cfg.max_samples,
        "code_version": CODE_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return Path(cache_dir) / f"{key}.pt", Path(cache_dir) / f"{key}.json"


def read_checked(data_path: Path, meta_path: Path) -> tuple[bytes, dict] | None:
    """A cache entry's bytes and its JSON sidecar; None when either is missing. Raises ValueError
    (or KeyError, OSError, JSONDecodeError) when the bytes do not match the sidecar's SHA-256.
    Shared by this cache and the token cache (training/data/token_cache.py)."""
    if not data_path.exists() or not meta_path.exists():
        return None
    meta = json.loads(
        read_bytes(meta_path)
    )  # O_NOFOLLOW: a link planted in the cache is an OSError
    raw = read_bytes(data_path)
    if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
        raise ValueError("checksum mismatch")
    return raw, meta


def load(cache_dir: Path, key: str, n_pairs: int) -> torch.Tensor | None:
    try:
        entry = read_checked(*paths(cache_dir, key))
        if entry is None:
            return None
        raw, _ = entry
        # weights_only: an entry holding anything but tensors is refused, never unpickled
        logps = torch.load(io.BytesIO(raw), weights_only=True)
        if (
            not torch.is_tensor(logps)
            or tuple(logps.shape) != (n_pairs, 2)
            or not torch.isfinite(logps).all()
        ):
            raise ValueError(f"not a [{n_pairs}, 2] tensor of finite values")
    except pickle.UnpicklingError:
        log.warning(
            "reference log-prob cache entry %s is corrupt or stale (it holds objects other than tensors, "
            "and is not unpickled); recomputing",
            paths(cache_dir, key)[0],
        )
        return None
    except (ValueError, KeyError, TypeError, OSError, RuntimeError, json.JSONDecodeError) as e:
        log.warning(
            "reference log-prob cache entry %s is corrupt or stale (%s); recomputing",
            paths(cache_dir, key)[0],
            e,
        )
        return None
    return logps


def store(cache_dir: Path, key: str, logps: torch.Tensor, meta: dict) -> None:
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(logps.cpu(), buf)
    raw = buf.getvalue()
    data_path, meta_path = paths(cache_dir, key)
    for path, payload in (
        (data_path, raw),
        (meta_path, json.dumps({**meta, "sha256": hashlib.sha256(raw).hexdigest()}).encode()),
    ):
        write_atomic(
            path, payload
        )  # concurrent runs of a sweep write identical entries: last one wins
