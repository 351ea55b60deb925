"""A checkpoint's identity: the one content hash that the eval cache, the registry and the DPO
reference cache key a checkpoint by.

    from training.common.checkpoint_hash import checkpoint_hash, model_identity
    h = checkpoint_hash("runs/tiny-sft-reverse/checkpoints/step_000150")   # 64 hex digits
    model_identity("Qwen/Qwen2.5-0.5B")                                    # "hub:Qwen/Qwen2.5-0.5B"

It covers what decides the model's outputs, the weights and the tokenizer files (with
config.json and generation_config.json; for a LoRA checkpoint the adapter, its config and
ladder_base.json, which names the base by its own content hash), and nothing else: not eval/ (results written
later), not trainer_state.pt or ladder_meta.json (a resumed re-save of identical weights
keeps its hash). A copy of a checkpoint elsewhere has the same hash, so it is never
evaluated twice, nor its reference log-probs computed twice. Hashing 16 GB of weights takes a
while, so the hash is remembered in <checkpoint>/eval/content_hash.json with each file's size,
mtime, ctime and inode, and reused while they are unchanged. The memo is signed with this user's
key (training/common/private_key.py): a checkpoint is often someone else's folder, and a memo
planted there could claim another checkpoint's hash and so be served that checkpoint's cached
scores. A memo that does not verify is ignored and the files are hashed. It is read without
following a link; a read-only checkpoint just rehashes next time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
from pathlib import Path

from training.common.content_cache import file_hash
from training.common.errors import CheckpointError
from training.common.private_key import sign, user_key
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
    # a LoRA checkpoint (training/model/lora.py): peft's adapter config, and the base it adapts (its
    # identity: a local base's content hash), so the hash covers base and adapter both
    "adapter_config.json",
    "ladder_base.json",
)
MEMO = "content_hash.json"


def hashed_files(ckpt: Path) -> list[Path]:
    return sorted(
        p
        for p in Path(ckpt).iterdir()
        if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in PATTERNS)
    )


def _stats(files: list[Path]) -> dict[str, list[int]]:
    """What changes when a file does: ctime and the inode too, which no one can set back by hand
    (mtime can be, with touch)."""
    out = {}
    for p in files:
        st = p.stat()
        out[p.name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return out


def checkpoint_hash(ckpt: str | Path) -> str:
    ckpt = Path(ckpt)
    files = hashed_files(ckpt)
    if not any(p.name.endswith((".safetensors", ".bin")) for p in files):
        raise CheckpointError(
            f"{ckpt} holds no model weights (*.safetensors or pytorch_model*.bin)"
        )
    stats = _stats(files)
    memo = ckpt / "eval" / MEMO
    key = user_key()
    try:
        saved = json.loads(read_text(memo))  # O_NOFOLLOW: a planted link is an OSError
        body = {"sha256": saved["sha256"], "files": saved["files"]}
        if saved["files"] == stats and hmac.compare_digest(saved["mac"], sign(key, body)):
            return saved["sha256"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{p.stat().st_size}\0".encode())
        file_hash(p, h)
    digest = h.hexdigest()
    try:  # a read-only checkpoint still evaluates; it only rehashes next time
        memo.parent.mkdir(exist_ok=True)
        body = {"sha256": digest, "files": stats}
        write_atomic(
            memo, json.dumps({**body, "mac": sign(key, body)}) + "\n"
        )  # a temporary name of its own, renamed: never through a planted link (training/common/safe_files.py)
    except OSError:
        pass
    return digest


def model_identity(source: str | Path) -> str:
    """A model source's identity: checkpoint_hash of a local folder, the name of a hub model."""
    return checkpoint_hash(source) if Path(source).is_dir() else f"hub:{source}"
