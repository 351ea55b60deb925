"""Private keys kept on disk: a run's checkpoint key, and this user's key for memos Ladder writes
into folders that others may write to as well.

    from training.common.private_key import ensure_private_key, private_key, user_key
    key = ensure_private_key(run_dir / ".checkpoint_key")   # made once: 32 random bytes, mode 0600
    private_key(path)          # None unless it is this user's own private, non-link file
    user_key()                 # ~/.cache/ladder/memo.key (LADDER_KEY_DIR moves it)

A key is trusted only if it is a plain file (never a link), owned by this user and readable by
nobody else: whoever could read it could sign what Ladder later trusts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path

from training.common.safe_files import open_nofollow, write_atomic

log = logging.getLogger("ladder.keys")


def private_key(path: Path) -> bytes | None:
    """The key in `path`, or None when there is none that can be trusted: missing, a link, not owned
    by this user, or readable by others."""
    try:
        with open_nofollow(path) as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except OSError:  # missing, or a link (ELOOP)
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        log.warning(
            "%s is not this user's own private file (owner %d, mode %o): it is not trusted as a key",
            path,
            st.st_uid,
            st.st_mode & 0o777,
        )
        return None
    try:
        return bytes.fromhex(raw.decode().strip())
    except ValueError:
        return None


def ensure_private_key(path: Path) -> bytes:
    """The key in `path`, made (32 random bytes, mode 0600, written atomically) if there is no trusted
    one."""
    key = private_key(path)
    if key is None:
        key = secrets.token_bytes(32)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(path), key.hex() + "\n", fsync=True, mode=0o600)
    return key


def user_key() -> bytes:
    """This user's memo key, ~/.cache/ladder/memo.key (the folder: LADDER_KEY_DIR)."""
    folder = os.environ.get("LADDER_KEY_DIR") or Path.home() / ".cache" / "ladder"
    return ensure_private_key(Path(folder) / "memo.key")


def sign(key: bytes, body: dict) -> str:
    """HMAC-SHA256 of a JSON-able dict, canonically serialised."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
