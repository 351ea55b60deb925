"""A content-addressed cache of the DPO reference model's log-probabilities.

    key = cache_key(reference_hash=..., tokenizer=tok, data_cfg=cfg.data)
    logps = load(cache_dir, key, n_pairs)      # None when missing, stale or corrupt
    store(cache_dir, key, logps, meta)

The key covers everything that changes the numbers: the reference checkpoint's content hash
(training/common/checkpoint_hash.py: model_identity, the eval cache's rule),
the tokenizer (vocabulary and merges) and its chat template, the data files' content hashes
(or the hub name and split), the maximum length, the sample limit and this code's version.
Every run of a sweep with the same key shares one entry, under <run_root>/cache/ref_logps/.
An entry is <key>.pt plus a JSON sidecar holding its SHA-256 (training/common/content_cache.py):
a truncated or altered entry fails the check and is recomputed, never used. It is loaded with
torch.load(weights_only=True), so an entry planted to run code when unpickled is recomputed too.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
from pathlib import Path

import torch
from omegaconf import DictConfig

from training.common.content_cache import ContentCache, file_hash, key_of, tokenizer_fingerprint

CODE_VERSION = 1  # bump when the way log-probs are computed changes
log = logging.getLogger("ladder.ref_cache")


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
    return key_of(parts, 32)


def paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    cache = ContentCache(cache_dir)
    return cache.path(key, ".pt"), cache.path(key, ".json")


def load(cache_dir: Path, key: str, n_pairs: int) -> torch.Tensor | None:
    try:
        entry = ContentCache(cache_dir).read_checked(key, ".pt")
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
    buf = io.BytesIO()
    torch.save(logps.cpu(), buf)
    # concurrent runs of a sweep write identical entries: last one wins
    ContentCache(cache_dir).write_checked(key, buf.getvalue(), meta, ".pt")
