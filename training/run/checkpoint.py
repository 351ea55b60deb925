"""Atomic checkpoints in Hugging Face format, with the trainer state beside the weights, and a
COMPLETE marker that says what is complete (every file's size and SHA-256).

    ckpt = save_checkpoint(run_dir, step, model, tokenizer, state, cfg)   # -> runs/x/checkpoints/step_000100
    last = latest_checkpoint(run_dir)                  # newest complete one whose files have their sizes
    good = latest_checkpoint(run_dir, hashes=True)     # ... and their hashes (resume: the files are read anyway)
    check_checkpoint(path)                             # sizes; raises CheckpointError naming the bad file
    check_checkpoint(path, hashes=True)                # sizes and SHA-256 of every listed file
    check_checkpoint(path, hashes=("*.safetensors", "tokenizer*"))   # hash only what a reader loads

Layout of one checkpoint directory:
  model.safetensors, config.json, generation_config.json  (model.save_pretrained)
  tokenizer.json, tokenizer_config.json, chat_template.jinja (tokenizer.save_pretrained)
  trainer_state.pt     optimizer (full, by parameter name), scheduler, RNG, data position, step:
                       tensors, numbers, strings, lists and dicts only, loaded with
                       torch.load(weights_only=True), so loading it cannot run code (save_state_file)
  deepspeed/           DeepSpeed engines only: their own sharded optimizer and model state
  ladder_config.yaml   the resolved run config
  ladder_meta.json     step, run name, git commit, time
  COMPLETE             written last: JSON {"format", "token", "files": {path: {"size", "sha256"}}, "hmac"}
  eval/, deepspeed/universal, deepspeed/latest_universal   written after the commit (eval results,
                       DeepSpeed's conversion for another world size): not in COMPLETE, not checked
Everything is written under a temporary name, fsynced, COMPLETE is written (and fsynced), and only
then is the directory renamed into place, so a crash at any moment leaves the last good checkpoint
intact and never leaves a half-written directory under a checkpoint's name. The fsync pass reads
each file once and hashes it on the way (streamed in 16 MiB chunks, as checkpoints reach hundreds
of GB, and several files at a time). COMPLETE's `token` (time and a random id) is unique per save,
so a copy elsewhere (remote.py) can tell this save from another of the same step. With
trainer.checkpoint_url set, the committed directory is also uploaded there (remote.py).

A marker alone does not prove the files are whole (a disk that filled, a copy cut short, a file
deleted by hand), so readers check: every use checks that each listed file exists with its
recorded size (a stat per file); readers that are about to read the content anyway (resume,
evaluation) also check the hashes. Checkpoints written before the manifest (COMPLETE holds only
the token) still load, unverified, with a log line saying so. Ladder writes no symlink into a
checkpoint, so a checkpoint folder that is a link, or holds one, is refused (check_checkpoint).

Where a checkpoint came from. COMPLETE's hashes are written by whoever wrote the checkpoint, so they
prove it whole, not who wrote it. Nothing Ladder itself reads from a checkpoint is unpickled with
arbitrary globals, but DeepSpeed's loader is (engines.py): it may read only a checkpoint this run
wrote. Each run folder holds a random secret, <run>/.checkpoint_key (mode 0600, made by the run's
first save, written atomically, never copied into a checkpoint, uploaded or logged), and each COMPLETE
carries the HMAC-SHA256 of its manifest (the token and every file's size and SHA-256) under it.
origin_problem(ckpt, run_dir) says why a checkpoint is not this run's: no HMAC, no key (or a key
that is a link, not the user's own, or readable by others), or one that does not verify. Whoever
plants a checkpoint cannot compute the HMAC without reading the key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
import os
import pickle
import re
import subprocess
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from training.common.errors import CheckpointError
from training.common.private_key import ensure_private_key, private_key
from training.common.safe_files import (
    atomic_file,
    fresh_dir,
    open_nofollow,
    read_bytes,
    remove_path,
    symlinks_in,
    write_atomic,
)
from training.run import faults

log = logging.getLogger("ladder.checkpoint")
COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.pt"
KEY_FILE = ".checkpoint_key"  # in the run folder, beside checkpoints/: the run's HMAC key (hex)
MANIFEST_FORMAT = "ladder-checkpoint/1"
CHUNK = 1 << 24  # 16 MiB: large reads for throughput, a fixed buffer whatever the file's size
_NAME = re.compile(r"^step_(\d+)$")
_unverified_noted: set[str] = set()


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path, fsync: bool = False) -> tuple[int, str]:
    """(size, SHA-256) of a file, read in CHUNK-sized pieces into one buffer; fsync it too if asked
    (commit: one pass over the data does both)."""
    h, size = hashlib.sha256(), 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            size += n
        if fsync:
            os.fsync(fh.fileno())
    return size, h.hexdigest()


def hash_files(paths: list[Path], fsync: bool = False) -> list[tuple[int, str]]:
    """file_sha256 of each path, several files at once: reads and SHA-256 release the GIL, and a
    sharded checkpoint (DeepSpeed, large safetensors) hashes at disk speed instead of one core's."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda f: file_sha256(f, fsync), paths))


def step_dir(root: Path, step: int) -> Path:
    """A committed checkpoint's directory under `root` (a run's checkpoints/, or where a
    download goes): step_000150. step_of reads the step back from such a name."""
    return Path(root) / f"step_{step:06d}"


def staging_dir(run_dir: Path, step: int) -> Path:
    """Where a checkpoint is written before it is committed. The same name on every rank, so
    engines that write per-rank shards (DeepSpeed) write into one directory."""
    return checkpoints_dir(run_dir) / f".tmp-step_{step:06d}"


def write_checkpoint(tmp: Path, step: int, tokenizer, state: dict, cfg: DictConfig) -> None:
    """Write the tokenizer and the trainer state into `tmp` (rank 0), after the weights (which
    the engine writes: EngineBackend.save_model, a collective for sharded engines)."""
    tmp.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(tmp)
    faults.maybe("kill_in_save", step)  # tests: die with the weights half-way to a checkpoint
    save_state_file(state, tmp / STATE_FILE)
    write_atomic(tmp / "ladder_config.yaml", OmegaConf.to_yaml(cfg))
    meta = {
        "step": step,
        "run_name": cfg.trainer.run_name,
        "git_commit": git_commit(),
        "engine": state.get("engine"),
        "world_size": state.get("world_size"),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_atomic(tmp / "ladder_meta.json", json.dumps(meta, indent=2) + "\n")


# torch loads only where a state file is written or read: checking a checkpoint's manifest, which
# `ladder leaderboard`, `compare` and `eval` do first, needs none of it.
PLAIN = (str, int, float, bool, type(None))


def plain_problem(obj, where: str = "") -> str | None:
    """Where `obj` holds something torch.load(weights_only=True) would not load without extra
    globals (a numpy array, an object), or None: only tensors, numbers, strings, None, and lists,
    tuples and dicts of them. Checked at save, so a checkpoint that could not be resumed is never written."""
    items = (
        obj.items()
        if isinstance(obj, dict)
        else enumerate(obj)
        if isinstance(obj, (list, tuple))
        else None
    )
    if items is None:
        import torch

        return (
            None
            if isinstance(obj, (*PLAIN, torch.Tensor))
            else f"{where or 'it'} is a {type(obj).__module__}.{type(obj).__qualname__}"
        )
    for k, v in items:
        if not isinstance(k, (str, int)):
            return f"{where}[{k!r}] has a key of type {type(k).__qualname__}"
        if bad := plain_problem(v, f"{where}[{k!r}]"):
            return bad
    return None


def save_state_file(state: dict, path: Path) -> None:
    """torch.save a state made only of plain values (plain_problem), under a temporary name."""
    bad = plain_problem(state)
    if bad:
        raise TypeError(
            f"{path.name} may hold only tensors, numbers, strings, lists and dicts: {bad}"
        )
    import torch

    with atomic_file(path) as f:
        torch.save(state, f)


def load_state_file(path: Path, hint: str = "") -> dict:
    """torch.load(weights_only=True) with no extra globals: tensors, numbers, strings, lists, dicts.
    A file holding anything else (an old format, or an object planted to run code when unpickled) is a
    CheckpointError naming the file; it is never unpickled. The file is opened with O_NOFOLLOW."""
    import torch

    try:
        with open_nofollow(path) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        named = re.search(r"GLOBAL (\S{1,120})", str(e))
        raise CheckpointError(
            f"{path} holds objects other than tensors, numbers, strings, lists and dicts"
            f"{f' (it names {named.group(1)})' if named else ''}; it will not be unpickled, as unpickling such a "
            f"file can run any code its writer put in it. {hint}".rstrip()
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(
            f"{path} cannot be read ({type(e).__name__}: {str(e)[:300]})"
        ) from None


def commit_checkpoint(
    tmp: Path,
    run_dir: Path,
    step: int,
    keep_last: int | None = None,
    protect: tuple[int, ...] = (0,),
) -> Path:
    """fsync and hash every file, write COMPLETE (the manifest), and rename the directory into
    place (rank 0, the only process that commits: the files are hashed once)."""
    root = checkpoints_dir(run_dir)
    final = step_dir(root, step)
    paths = [f for f in sorted(tmp.rglob("*")) if f.is_file() and f != tmp / COMPLETE]
    # the data must be on disk before COMPLETE claims it is: fsync, hashing in the same read
    files = {
        f.relative_to(tmp).as_posix(): {"size": size, "sha256": digest}
        for f, (size, digest) in zip(paths, hash_files(paths, fsync=True))
    }
    for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
        _fsync_dir(d)  # the files' names, too
    # The token is unique, so a copy elsewhere (remote.py) can tell this save from another of the same step.
    token = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {uuid.uuid4().hex}"
    manifest = {"format": MANIFEST_FORMAT, "token": token, "files": files}
    manifest["hmac"] = manifest_hmac(
        ensure_run_key(run_dir), manifest
    )  # this run wrote it (origin_problem)
    write_atomic(tmp / COMPLETE, json.dumps(manifest, indent=1) + "\n", fsync=True)
    if (
        final.exists() or final.is_symlink()
    ):  # a re-save of the same step after a resume: swap it atomically
        old = root / f".old-step_{step:06d}"
        remove_path(old)
        os.rename(
            final, old
        )  # a link planted as step_N is moved aside (and unlinked), never followed
        os.rename(tmp, final)
        remove_path(old)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)
    if keep_last:
        prune(run_dir, keep_last, protect, newest=step)
    return final


def save_checkpoint(
    run_dir: Path,
    step: int,
    model,
    tokenizer,
    state: dict,
    cfg: DictConfig,
    keep_last: int | None = None,
    protect: tuple[int, ...] = (0,),
    model_state: dict | None = None,
) -> Path:
    """Single-process save: stage, write, commit."""
    tmp = fresh_dir(staging_dir(run_dir, step))
    model.save_pretrained(tmp, state_dict=model_state, safe_serialization=True)
    write_checkpoint(tmp, step, tokenizer, state, cfg)
    return commit_checkpoint(tmp, run_dir, step, keep_last, protect)


def step_of(path: Path) -> int:
    m = _NAME.match(Path(path).name)
    if not m:
        raise CheckpointError(
            f"{path} is not a checkpoint directory (expected a name like step_000100)"
        )
    return int(m.group(1))


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint with a COMPLETE marker, oldest first (unverified: a listing)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / COMPLETE).is_file()]
    return sorted(found, key=step_of)


def latest_checkpoint(run_dir: Path, hashes: bool = False) -> Path | None:
    """The newest complete checkpoint that passes check_checkpoint (sizes; with hashes=True, the
    SHA-256 of every file too). One that fails is skipped with a warning naming the bad file."""
    for p in reversed(complete_checkpoints(run_dir)):
        try:
            return check_checkpoint(p, hashes=hashes)
        except CheckpointError as e:
            log.warning(
                "skipping checkpoint %s, it fails verification: %s; trying the one before it",
                p.name,
                e,
            )
    return None


def prune(
    run_dir: Path, keep_last: int, protect: tuple[int, ...] = (0,), newest: int | None = None
) -> None:
    """Keep the newest keep_last complete checkpoints (and protected steps); clear stale temporaries.
    Checkpoints after `newest` (the step just saved) are from before a resume from an older one
    (e.g. one that failed verification): they neither count nor go; the run overwrites them."""
    found = [
        p
        for p in complete_checkpoints(run_dir)
        if step_of(p) not in protect and (newest is None or step_of(p) <= newest)
    ]
    for p in found[:-keep_last]:
        remove_path(p)
    for p in [*checkpoints_dir(run_dir).glob(".tmp-*"), *checkpoints_dir(run_dir).glob(".old-*")]:
        remove_path(p)  # left by a save (or a download) that was killed


def read_manifest(path: str | Path) -> dict | None:
    """COMPLETE's manifest: {"format", "token", "files": {relative path: {"size", "sha256"}}}, or
    None for a checkpoint written before manifests (COMPLETE is a one-line token)."""
    marker = Path(path) / COMPLETE
    try:
        raw = read_bytes(marker)
    except OSError as e:
        raise CheckpointError(f"{marker} cannot be read ({e.strerror})") from None
    if not raw.lstrip().startswith(b"{"):
        return None
    try:
        manifest = json.loads(raw)
        files = manifest["files"]
        for rel, rec in files.items():
            parts = Path(rel).parts
            if Path(rel).is_absolute() or ".." in parts or not parts:
                raise ValueError(f"a path outside the checkpoint: {rel!r}")
            if not isinstance(rec["size"], int) or not isinstance(rec["sha256"], str):
                raise ValueError(f"a bad entry for {rel!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(
            f"{marker} is unreadable ({e}): the checkpoint cannot be verified"
        ) from None
    return manifest


def check_checkpoint(path: str | Path, hashes: bool | Iterable[str] = False) -> Path:
    """Return the path if it is a complete checkpoint whose files match COMPLETE; else raise a
    CheckpointError naming each bad file (missing, its size, its hash). Every listed file's size
    is checked; its SHA-256 too with hashes=True, or for the files matching `hashes` when it is a
    tuple of glob patterns (a reader that loads only the weights hashes only those). Files not in
    COMPLETE (eval/ results, DeepSpeed's universal conversion) are not looked at."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}: the path does not exist")
    if not p.is_dir():
        raise CheckpointError(f"no checkpoint at {p}: not a directory")
    if not (p / COMPLETE).is_file():
        if complete_checkpoints(p):
            raise CheckpointError(
                f"{p} is a run directory; name a checkpoint, e.g. {latest_checkpoint(p)}"
            )
        raise CheckpointError(
            f"{p} is not a complete checkpoint (no {COMPLETE} marker): it was never "
            "finished, or it is not a Ladder checkpoint"
        )
    links = symlinks_in(p)
    if links:  # Ladder writes none: a link here was planted, and could point anywhere
        what = (
            f"{p} is a symlink (to {os.readlink(p)})"
            if links == ["."]
            else f"{p} holds symlinks ({', '.join(links)})"
        )
        raise CheckpointError(
            f"{what}; Ladder writes checkpoints as plain folders and files and does not "
            "follow links in them. Name the folder the link points to if you trust it"
        )
    problems = manifest_problems(p, hashes)
    if problems is None:
        if str(p) not in _unverified_noted:  # once per checkpoint, not at every listing
            _unverified_noted.add(str(p))
            log.info("%s was saved before COMPLETE listed its files: its files are not verified", p)
    elif problems:
        raise CheckpointError(f"corrupt checkpoint {p}: " + "; ".join(problems))
    return p


def manifest_problems(path: Path, hashes: bool | Iterable[str] = False) -> list[str] | None:
    """What is wrong with the files COMPLETE lists (each naming its file; [] when nothing is), or
    None when COMPLETE lists none (a checkpoint from before manifests). Sizes first, a stat per
    file; hashes (all, or the files matching the patterns) only when every size is right."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        return None
    files, problems = manifest["files"], []
    for rel, rec in files.items():
        try:
            size = (path / rel).stat().st_size
        except FileNotFoundError:
            problems.append(f"{rel} is missing")
            continue
        if size != rec["size"]:
            problems.append(
                f"{rel} is {size} bytes, COMPLETE records {rec['size']} (truncated or overwritten)"
            )
    if not problems and hashes:
        patterns = (
            None if hashes is True else (hashes,) if isinstance(hashes, str) else tuple(hashes)
        )
        wanted = [
            rel
            for rel in files
            if patterns is None or any(fnmatch.fnmatch(rel, pat) for pat in patterns)
        ]
        for rel, (_, digest) in zip(wanted, hash_files([path / rel for rel in wanted])):
            if digest != files[rel]["sha256"]:
                problems.append(
                    f"{rel} does not match its SHA-256 in COMPLETE (its content changed after the save)"
                )
    if len(problems) > 5:  # e.g. a DeepSpeed state directory deleted: hundreds of shards
        problems = [*problems[:5], f"and {len(problems) - 5} more"]
    return problems


def load_trainer_state(path: Path) -> dict:
    f = Path(path) / STATE_FILE
    if not f.is_file():  # a checkpoint from before manifests is not verified: say what is missing
        raise CheckpointError(
            f"corrupt checkpoint {path}: {STATE_FILE} is missing, so it cannot be resumed"
        )
    return load_state_file(
        f,
        "A checkpoint saved by an older Ladder (its RNG state held numpy arrays) cannot "
        f"be resumed; start a new run from its weights instead (model.name_or_path={path})",
    )


# ---- where a checkpoint came from ------------------------------------------------------------
def _key_file(run_dir: Path) -> Path:
    return Path(run_dir) / KEY_FILE


def run_key(run_dir: Path) -> bytes | None:
    """The run's secret key, or None when there is none that can be trusted: missing, a link, not owned
    by this user, or readable by others (whoever could read it could sign a checkpoint)."""
    return private_key(_key_file(run_dir))


def ensure_run_key(run_dir: Path) -> bytes:
    """The run's key, made (32 random bytes, mode 0600, written atomically) if there is no trusted one."""
    return ensure_private_key(_key_file(run_dir))


def manifest_hmac(key: bytes, manifest: dict) -> str:
    body = json.dumps(
        {k: manifest[k] for k in ("format", "token", "files")},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def origin_problem(ckpt: Path, run_dir: Path) -> str | None:
    """None if the checkpoint was written by the run in run_dir (its COMPLETE's HMAC verifies under the
    run's key), else why not. The files' hashes are the caller's to check (resume checks them)."""
    manifest = read_manifest(ckpt)
    if manifest is None or not isinstance(manifest.get("hmac"), str):
        return (
            f"its {COMPLETE} carries no HMAC (it was saved by an older Ladder, or written by hand)"
        )
    key = run_key(run_dir)
    if key is None:
        return (
            f"the run folder {run_dir} holds no key of its own ({KEY_FILE}), so no checkpoint can be shown "
            "to be its own"
        )
    if not hmac.compare_digest(manifest_hmac(key, manifest), manifest["hmac"]):
        return (
            f"its {COMPLETE} was not signed with the key of run {Path(run_dir).name}: another run, or someone "
            "else, wrote it"
        )
    return None
