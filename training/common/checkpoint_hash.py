"""A checkpoint's identity: the one content hash that the eval cache, the registry and the DPO
reference cache key a checkpoint by.

    from training.common.checkpoint_hash import checkpoint_hash, model_identity
    h = checkpoint_hash("runs/tiny-sft-reverse/checkpoints/step_000150")   # 64 hex digits
    model_identity("Qwen/Qwen2.5-0.5B")                                    # "hub:Qwen/Qwen2.5-0.5B"

It covers what decides the model's outputs, the weights and the tokenizer files (with
config.json and generation_config.json), and nothing else: not eval/ (results written
later), not trainer_state.pt or ladder_meta.json (a resumed re-save of identical weights
keeps its hash). A copy of a checkpoint elsewhere has the same hash, so it is never
evaluated twice, nor its reference log-probs computed twice. Hashing 16 GB of weights takes a
while, so the hash is remembered in <checkpoint>/eval/content_hash.json with each file's size and
mtime and reused while they are unchanged (read without following a link; a read-only checkpoint
just rehashes next time).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

from training.common.content_cache import file_hash
from training.common.errors import CheckpointError
from training.common.safe_files import read_text, write_atomic

PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.*",
    "merges.txt",
    "*.model",
    "*.tiktoken",
)
MEMO = "content_hash.json"


def hashed_files(ckpt: Path) -> list[Path]:
    return sorted(
        p
        for p in Path(ckpt).iterdir()
        if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in PATTERNS)
    )


def _stats(files: list[Path]) -> dict[str, list[int]]:
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def checkpoint_hash(ckpt: str | Path) -> str:
    ckpt = Path(ckpt)
    files = hashed_files(ckpt)
    if not any(p.name.endswith((".safetensors", ".bin")) for p in files):
        raise CheckpointError(
            f"{ckpt} holds no model weights (*.safetensors or pytorch_model*.bin)"
        )
    stats = _stats(files)
    memo = ckpt / "eval" / MEMO
    try:
        saved = json.loads(read_text(memo))  # O_NOFOLLOW: a planted link is an OSError
        if saved.get("files") == stats:
            return saved["sha256"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{p.stat().st_size}\0".encode())
        file_hash(p, h)
    digest = h.hexdigest()
    try:  # a read-only checkpoint still evaluates; it only rehashes next time
        memo.parent.mkdir(exist_ok=True)
        write_atomic(
            memo, json.dumps({"sha256": digest, "files": stats}) + "\n"
        )  # a temporary name of its own, renamed: never through a planted link (training/common/safe_files.py)
    except OSError:
        pass
    return digest


def model_identity(source: str | Path) -> str:
    """A model source's identity: checkpoint_hash of a local folder, the name of a hub model."""
    return checkpoint_hash(source) if Path(source).is_dir() else f"hub:{source}"
