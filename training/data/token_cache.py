"""Tokenised documents of one data source, cached by content so a second run skips tokenisation.

    .venv/bin/python bench/token_cache.py            # how much faster a second run's data set-up is
    src = load_source(spec, tokenizer, max_seq_len=64, fmt="messages", cache_dir=Path("runs/cache/tokens"))
    src.docs, src.rows, src.truncated, src.dropped, src.cached

Every run (every source of a mixture, and plain data) goes through here. The key covers everything
that changes the tokens: the source's data (each local file's SHA-256, or a hub dataset's `datasets`
fingerprint, which changes with its revision), its max_samples, the tokenizer (tokenizer.json and
chat template, training/common/content_cache.py), max_seq_len, the format (messages or preference pairs),
whether untrained documents are dropped, and CODE_VERSION. Entries live in <run_root>/cache/tokens/
as <key>.npz (token ids, labels and document offsets) plus <key>.json holding the .npz's SHA-256
(a ContentCache, training/common/content_cache.py);
an entry that is missing, truncated, altered or inconsistent is recomputed and rewritten, never
used. Both files are written to a temporary name and renamed, so a reader never sees half an entry
(the runs of a sweep may write the same entry at once: they write identical bytes; the last wins).
The .npz is read with allow_pickle=False: an entry holding pickled objects is recomputed, never unpickled.

A hit skips reading, checking and tokenising the rows: the key holds the files' content hashes, and
an entry is written only after every row passed the checks (a malformed row is named by file and
line, training/data/chat_data.py).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.common.content_cache import ContentCache, file_hash, key_of, tokenizer_fingerprint
from training.common.errors import DataError
from training.data.chat_data import IGNORE, check_messages, encode_chat, load_rows
from training.data.mixture_config import SourceSpec

CODE_VERSION = 1  # bump when encode_chat or the dropping rule changes the tokens of a row
log = logging.getLogger("ladder.token_cache")


@dataclass
class SourceDocs:
    spec: SourceSpec
    docs: list  # messages: (ids, labels); preference: (ids_c, labels_c, ids_r, labels_r)
    rows: int  # rows read (after max_samples)
    truncated: int  # documents (pairs: either side) cut at max_seq_len
    dropped: int  # documents left with no trained token after truncation (mixtures drop them)
    cached: bool
    key: str


def row_check(fmt: str, prefix: str = ""):
    """The row check of a format; a row of the other format is named as such (a preference pair in
    an SFT mixture, a messages row given to DPO), by source, file and line."""
    from training.data.preference import check_pair

    def check(row, where):
        where = prefix + where
        if (
            isinstance(row, dict)
            and fmt == "messages"
            and "messages" not in row
            and "chosen" in row
        ):
            raise DataError(
                f"{where}: a preference pair (chosen/rejected) in SFT data; recipe.loss=sft trains on "
                "rows with `messages`; preference sources belong to recipe=dpo"
            )
        if (
            isinstance(row, dict)
            and fmt == "preference"
            and "chosen" not in row
            and "messages" in row
        ):
            raise DataError(
                f"{where}: a `messages` row in preference data; recipe=dpo needs chosen/rejected pairs"
            )
        (check_messages if fmt == "messages" else check_pair)(row, where)

    return check


def _data_fingerprint(spec: SourceSpec) -> dict:
    if spec.train_files:
        return {"files": [file_hash(f) for f in spec.train_files]}
    import datasets  # the hub copy in the local `datasets` cache; its fingerprint follows its revision

    ds = datasets.load_dataset(spec.hub_name, split=spec.hub_split)
    return {"hub": spec.hub_name, "split": spec.hub_split, "fingerprint": ds._fingerprint}


def cache_key(spec: SourceSpec, tokenizer, max_seq_len: int, fmt: str, drop_untrained: bool) -> str:
    parts = {
        "data": _data_fingerprint(spec),
        "max_samples": spec.max_samples,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_seq_len": max_seq_len,
        "format": fmt,
        "drop_untrained": drop_untrained,
        "code_version": CODE_VERSION,
    }
    return key_of(parts, 32)


def _trains(labels: list[int]) -> bool:
    return any(t != IGNORE for t in labels)


def encode_source(
    spec: SourceSpec, tokenizer, max_seq_len: int, fmt: str, drop_untrained: bool, prefix: str = ""
) -> tuple[list, int, int, int]:
    """Read, check and tokenise a source's rows: (docs, rows, truncated, dropped)."""
    ds = load_rows(spec, row_check(fmt, prefix))
    docs, truncated, dropped = [], 0, 0
    for row in ds:
        if fmt == "messages":
            ids, labels = encode_chat(tokenizer, row["messages"], max_seq_len)
            doc, cut, trains = (ids, labels), len(ids) == max_seq_len, _trains(labels)
        else:  # as training.data.preference.load_pairs: only the final assistant turn is scored
            c = encode_chat(tokenizer, row["chosen"], max_seq_len, last_turn_only=True)
            r = encode_chat(tokenizer, row["rejected"], max_seq_len, last_turn_only=True)
            doc, cut = (*c, *r), max(len(c[0]), len(r[0])) == max_seq_len
            trains = _trains(c[1]) and _trains(r[1])
        truncated += cut
        if drop_untrained and not trains:
            dropped += 1
            continue
        docs.append(doc)
    return docs, len(ds), truncated, dropped


def _pack(docs: list, fmt: str) -> bytes:
    flat = docs if fmt == "messages" else [d for p in docs for d in ((p[0], p[1]), (p[2], p[3]))]
    offsets = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum([len(d[0]) for d in flat], out=offsets[1:])
    buf = io.BytesIO()
    np.savez(
        buf,
        ids=np.fromiter((t for d in flat for t in d[0]), np.int32, int(offsets[-1])),
        labels=np.fromiter((t for d in flat for t in d[1]), np.int32, int(offsets[-1])),
        offsets=offsets,
    )
    return buf.getvalue()


def _unpack(raw: bytes, fmt: str, n_docs: int) -> list:
    with np.load(
        io.BytesIO(raw), allow_pickle=False
    ) as z:  # an object array is refused, never unpickled
        ids, labels, offsets = z["ids"], z["labels"], z["offsets"]
    n_flat = n_docs if fmt == "messages" else 2 * n_docs
    if (
        offsets.shape != (n_flat + 1,)
        or ids.shape != labels.shape
        or offsets[0] != 0
        or offsets[-1] != len(ids)
        or (np.diff(offsets) < 0).any()
    ):
        raise ValueError("arrays inconsistent with the recorded document count")
    ids_l, labels_l, off = ids.tolist(), labels.tolist(), offsets.tolist()
    flat = [(ids_l[a:b], labels_l[a:b]) for a, b in itertools.pairwise(off)]
    if fmt == "messages":
        return flat
    return [(*flat[i], *flat[i + 1]) for i in range(0, len(flat), 2)]


def paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    cache = ContentCache(cache_dir)
    return cache.path(key, ".npz"), cache.path(key, ".json")


def load_entry(cache_dir: Path, key: str, fmt: str) -> tuple[list, dict] | None:
    """The entry's documents and metadata; None when missing, corrupt or inconsistent."""
    try:
        entry = ContentCache(cache_dir).read_checked(key, ".npz")
        if entry is None:
            return None
        raw, meta = entry
        if meta.get("format") != fmt or meta.get("code_version") != CODE_VERSION:
            raise ValueError("written for another format or code version")
        return _unpack(raw, fmt, meta["docs"]), meta
    except (ValueError, KeyError, TypeError, OSError, EOFError, json.JSONDecodeError) as e:
        log.warning(
            "token cache entry %s is corrupt or stale (%s); recomputing",
            paths(cache_dir, key)[0],
            e,
        )
        return None


def store_entry(cache_dir: Path, key: str, docs: list, fmt: str, meta: dict) -> None:
    meta = {**meta, "docs": len(docs), "format": fmt, "code_version": CODE_VERSION}
    ContentCache(cache_dir).write_checked(key, _pack(docs, fmt), meta, ".npz", fsync=True)


def load_source(
    spec: SourceSpec,
    tokenizer,
    max_seq_len: int,
    fmt: str,
    cache_dir: Path | None,
    drop_untrained: bool = False,
    prefix: str = "",
) -> SourceDocs:
    """A source's documents: from the cache when its entry is sound, else tokenised and stored.
    cache_dir=None tokenises without the cache."""
    t0 = time.perf_counter()
    key = (
        cache_key(spec, tokenizer, max_seq_len, fmt, drop_untrained)
        if cache_dir is not None
        else ""
    )
    hit = load_entry(cache_dir, key, fmt) if cache_dir is not None else None
    if hit is not None:
        docs, meta = hit
        log.info(
            "source %s: %d documents from the token cache (%s) in %.2f s",
            spec.name,
            len(docs),
            key,
            time.perf_counter() - t0,
        )
        return SourceDocs(spec, docs, meta["rows"], meta["truncated"], meta["dropped"], True, key)
    docs, rows, truncated, dropped = encode_source(
        spec, tokenizer, max_seq_len, fmt, drop_untrained, prefix
    )
    if cache_dir is not None:
        store_entry(
            cache_dir,
            key,
            docs,
            fmt,
            {
                "source": spec.describe(),
                "rows": rows,
                "truncated": truncated,
                "dropped": dropped,
                "max_seq_len": max_seq_len,
            },
        )
    log.info(
        "source %s: tokenised %d rows in %.1f s%s",
        spec.name,
        rows,
        time.perf_counter() - t0,
        f"; cached as {key}" if cache_dir is not None else "",
    )
    return SourceDocs(spec, docs, rows, truncated, dropped, False, key)
