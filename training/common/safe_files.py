"""Writing and reading files in run, cache and checkpoint folders without following a planted symlink.

    write_atomic(run_dir / "heartbeat.json", text)        # a temporary name, then renamed over the name
    with atomic_file(ckpt / "trainer_state.pt") as f:     # the same, for writers that want a file object
        torch.save(state, f)
    with open_append(run_dir / "metrics.jsonl") as f:     # O_NOFOLLOW | O_APPEND | O_CREAT
        f.write(line)
    text = read_text(run_dir / "wandb_id")                # O_NOFOLLOW: OSError for a link
    remove_path(path)                                     # a link is unlinked, never followed; a folder removed
    fresh_dir(path)                                       # remove_path, then mkdir

The rule: a symlink inside a folder Ladder writes (runs/<name>, runs/cache/..., a checkpoint) is never
followed. A link planted as runs/<name>/wandb_id -> ../../outside.txt would otherwise make the run
create or overwrite outside.txt. A rename replaces the link itself, and O_NOFOLLOW refuses to open
one. The temporary name is random and created with O_EXCL, so it cannot be planted in advance either.
The folders themselves (runs/, runs/<name>, runs/cache) may be links, e.g. to a bigger disk: only
the last part of each path is protected.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
from pathlib import Path

log = logging.getLogger("ladder.files")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def atomic_file(path: str | Path, text: bool = False, fsync: bool = False, mode: int = 0o666):
    """A new file at a random temporary name beside `path`, renamed over `path` when the block ends
    without an error (removed otherwise). mode: the permission bits (less the umask), e.g. 0o600."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, _CREATE, mode)
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)  # a link at `path` is replaced, not followed
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(
    path: str | Path, data: str | bytes, fsync: bool = False, mode: int = 0o666
) -> None:
    with atomic_file(path, text=isinstance(data, str), fsync=fsync, mode=mode) as f:
        f.write(data)


def open_append(path: str | Path):
    """A text file opened for appending, created if missing. A symlink there (Ladder never makes one)
    is removed and replaced by a new file, with a warning: its target is never written."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        log.warning(
            "%s is a symlink (to %s); Ladder does not follow links in a run folder: replacing it",
            path,
            os.readlink(path),
        )
        os.unlink(path)
        fd = os.open(path, flags | os.O_EXCL, 0o666)
    return os.fdopen(fd, "a", encoding="utf-8")


def open_nofollow(path: str | Path, text: bool = False):
    """`path` opened for reading; OSError (ELOOP) when it is a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return os.fdopen(fd, "r" if text else "rb", **({"encoding": "utf-8"} if text else {}))


def read_text(path: str | Path) -> str:
    with open_nofollow(path, text=True) as f:
        return f.read()


def read_bytes(path: str | Path) -> bytes:
    with open_nofollow(path) as f:
        return f.read()


def remove_path(path: str | Path) -> None:
    """Remove a folder, a file or a link, whichever is there (a link is unlinked, never followed:
    shutil.rmtree refuses a link); nothing there is fine."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def fresh_dir(path: str | Path) -> Path:
    """An empty new folder at `path`: whatever was there (a leftover, a planted link) goes first."""
    path = Path(path)
    remove_path(path)
    path.mkdir(parents=True)
    return path


def symlinks_in(root: str | Path, limit: int = 5) -> list[str]:
    """Links at or under `root` (its relative paths; "." for root itself), at most `limit`. Ladder
    writes none into a checkpoint, so any is planted. os.walk does not descend into linked folders."""
    root = Path(root)
    if root.is_symlink():
        return ["."]
    found = []
    for here, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            p = Path(here) / name
            if p.is_symlink():
                found.append(p.relative_to(root).as_posix())
                if len(found) >= limit:
                    return found
    return found
