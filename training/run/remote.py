"""Checkpoints at an fsspec URL (trainer.checkpoint_url): s3://, gs://, az://, file://, ...

    store = RemoteCheckpoints.for_run(cfg)         # None when trainer.checkpoint_url is null
    ckpt = resolve_resume(cfg, run_dir, store, world)   # trainer.resume -> a local directory, or None
    store.upload(local_ckpt, step)                  # every file, then COMPLETE: the commit point
    store.complete_steps()                          # steps whose COMPLETE exists, oldest first
    local = store.fetch(step, checkpoints_dir(run_dir))   # a verified local copy to load from
    store.prune(keep_last, protect)

Checkpoints of run NAME go to <checkpoint_url>/NAME/checkpoints/step_N/, the same layout as
<run_root>/NAME/checkpoints/ on the local disk. Object stores cannot rename a directory
atomically, so the remote protocol is different from the local one (checkpoint.py): a
checkpoint is written and committed on the local disk exactly as without a URL (fast, and what
evaluation reads), then its files are uploaded and COMPLETE goes last. Only directories whose
COMPLETE exists are ever listed, so an upload cut short at any moment is never resumed from.
Deleting runs the other way round, COMPLETE first, so a half-deleted directory is not complete
either. Nothing is loaded from the URL directly: resume downloads into the run's local
checkpoints directory first (torch and transformers read local files), and a local copy whose
COMPLETE token matches the remote one (the same save) is reused.

Rank 0 is the only writer: it uploads the staging directory every rank wrote into, so DeepSpeed
on several nodes needs trainer.run_root on storage all nodes see, as it does without a URL. The
upload is synchronous (the other ranks wait at the save's barrier); it is bounded by
trainer.step_timeout_s like any save.

Nothing is resumed from unverified: COMPLETE lists every file's size and SHA-256 (checkpoint.py),
a download is checked against it before it takes the checkpoint's name, and a local copy is
checked before it is reused. trainer.resume=auto skips a checkpoint that fails (with a warning
naming the file) and takes the one before it; a named checkpoint that fails is refused. Global
rank 0 makes that choice, hashing once; every rank gets it by broadcast, so all resume from the
same step and a refusal stops them all with the same message.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import fsspec
from omegaconf import DictConfig

from training.common.errors import CheckpointError
from training.common.safe_files import fresh_dir, remove_path, write_atomic
from training.engine import distributed
from training.run import faults
from training.run.checkpoint import (
    COMPLETE,
    check_checkpoint,
    checkpoints_dir,
    latest_checkpoint,
    manifest_problems,
    step_dir,
    step_of,
)

log = logging.getLogger("ladder.checkpoint")
# Protocols fsspec knows that cannot hold checkpoints, and why. fsspec has a class for each of
# them, so without this list they pass the "known protocol" check and fail later, far from the
# config key (ftp://host/x used to end in "x is not a checkpoint directory").
REFUSED = {
    "memory": "memory:// lives inside one process, so a resumed run would find nothing",
    "ftp": (
        "ftp:// is not supported for checkpoints: fsspec's FTP client uploads a large file as a "
        "series of restarted transfers (REST + STOR), which not every server accepts, and sends "
        "the password in clear text; use sftp:// to the same host"
    ),
    **{
        p: f"{p}:// is read-only in fsspec, so it cannot hold checkpoints"
        for p in (
            "http",
            "https",
            "github",
            "git",
            "gist",
            "zip",
            "tar",
            "libarchive",
            "data",
            "reference",
            "dvc",
        )
    },
}


def url_problem(url: str, key: str = "trainer.checkpoint_url") -> str | None:
    """Why `url` cannot hold checkpoints, or None. Checked by validate() before anything runs.
    For trainer.resume the URL names one checkpoint, so it must also end in step_N."""
    protocol, path = fsspec.core.split_protocol(url)
    if protocol is None:
        return (
            f"{key}={url!r} is not a URL: give a protocol, e.g. s3://bucket/ladder or file:///mnt/ckpts "
            "(checkpoints on a local path go under trainer.run_root)"
        )
    if protocol in REFUSED:
        return f"{key}={url!r}: {REFUSED[protocol]}"
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        return (
            f"{key}={url!r}: unknown protocol {protocol!r}; fsspec knows e.g. s3, gs, gcs, az, abfs, "
            "hdfs, sftp, file"
        )
    except ImportError as e:
        return (
            f"{key}={url!r}: the {protocol!r} protocol needs a package that is not installed ({e})"
        )
    if key == "trainer.resume" and not _is_step(path):
        return (
            f"{key}={url!r} does not name a checkpoint: the URL of one ends in step_N, e.g. "
            "s3://bucket/ladder/<run_name>/checkpoints/step_000100"
        )
    return None


def _is_step(path: str) -> bool:
    try:
        step_of(Path(path.rstrip("/")))
    except CheckpointError:
        return False
    return True


class RemoteCheckpoints:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    @classmethod
    def for_run(cls, cfg: DictConfig) -> RemoteCheckpoints | None:
        url = cfg.trainer.checkpoint_url
        return cls(f"{url.rstrip('/')}/{cfg.trainer.run_name}/checkpoints") if url else None

    def step_url(self, step: int) -> str:
        return f"{self.url}/step_{step:06d}"

    def _path(self, step: int) -> str:
        return f"{self.root}/step_{step:06d}"

    # ---- listing -----------------------------------------------------------------------
    def complete_steps(self) -> list[int]:
        """Steps whose COMPLETE marker exists: the only ones that count."""
        self.fs.invalidate_cache()  # listings of object stores are cached per process
        markers = self.fs.glob(f"{self.root}/step_*/{COMPLETE}")
        return sorted(step_of(Path(m).parent) for m in markers)

    def all_steps(self) -> list[int]:
        """Every step directory, complete or not (an upload or a prune that was cut short)."""
        self.fs.invalidate_cache()
        if not self.fs.exists(self.root):
            return []
        found = []
        for p in self.fs.ls(self.root, detail=False):
            try:
                found.append(step_of(Path(p.rstrip("/"))))
            except CheckpointError:
                continue
        return sorted(found)

    def latest_step(self) -> int | None:
        steps = self.complete_steps()
        return steps[-1] if steps else None

    # ---- writing -----------------------------------------------------------------------
    def upload(self, local: Path, step: int) -> str:
        """Upload a committed local checkpoint; COMPLETE goes last. Returns its URL."""
        dest, local = self._path(step), Path(local)
        if self.fs.exists(dest):  # a re-save of the step after a resume: uncommit, then replace
            self.delete(step)
        files = sorted(p for p in local.rglob("*") if p.is_file() and p != local / COMPLETE)
        for f in files:
            target = f"{dest}/{f.relative_to(local).as_posix()}"
            self.fs.makedirs(self.fs._parent(target), exist_ok=True)  # a no-op on object stores
            self.fs.put_file(str(f), target)
        faults.maybe("kill_in_upload", step)  # tests: die with every file uploaded but COMPLETE
        self.fs.put_file(str(local / COMPLETE), f"{dest}/{COMPLETE}")
        return self.step_url(step)

    def upload_dir(self, local: Path, step: int, sub: str) -> None:
        """Add a sub-directory (e.g. eval/ results written after the upload) to a complete checkpoint."""
        dest = self._path(step)
        if not self.fs.exists(f"{dest}/{COMPLETE}"):
            return
        for f in sorted(p for p in (Path(local) / sub).rglob("*") if p.is_file()):
            target = f"{dest}/{f.relative_to(local).as_posix()}"
            self.fs.makedirs(self.fs._parent(target), exist_ok=True)
            self.fs.put_file(str(f), target)

    def delete(self, step: int) -> None:
        path = self._path(step)
        if self.fs.exists(f"{path}/{COMPLETE}"):
            self.fs.rm_file(f"{path}/{COMPLETE}")  # first: from here on it is not a checkpoint
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def prune(
        self, keep_last: int, protect: tuple[int, ...] = (0,), newest: int | None = None
    ) -> None:
        """The local rule (checkpoint.prune): keep protected steps and the newest keep_last others;
        delete the rest and any incomplete directory (rank 0 is the only writer, so none is being
        written). Complete steps after `newest` (the step just uploaded) neither count nor go."""
        complete = self.complete_steps()
        later = {s for s in complete if newest is not None and s > newest}
        unprotected = [s for s in complete if s not in protect and s not in later]
        keep = set(protect) | set(unprotected[-keep_last:]) | later
        for step in self.all_steps():
            if step not in keep:
                self.delete(step)

    # ---- reading -----------------------------------------------------------------------
    def fetch(self, step: int, dest_root: Path, hashes: bool = True) -> Path:
        """A verified local copy of a complete remote checkpoint at dest_root/step_N. The copy there
        is reused if it is the same save (same COMPLETE token) and passes check_checkpoint (with
        `hashes`); otherwise the checkpoint is downloaded, and the download is checked against its
        COMPLETE (sizes and hashes) before it takes the name. Safe against another process fetching
        into the same place (ranks of other nodes on a shared file system)."""
        src = self._path(step)
        try:
            token = self.fs.cat_file(f"{src}/{COMPLETE}")
        except FileNotFoundError:
            raise CheckpointError(
                f"{self.step_url(step)} is not a complete checkpoint (no {COMPLETE} marker): "
                "its upload never finished"
            ) from None
        final = step_dir(dest_root, step)
        if _same(final, token):
            try:
                return check_checkpoint(final, hashes=hashes)
            except CheckpointError as e:  # the remote copy may be whole: download it again
                log.warning(
                    "the local copy of %s fails verification (%s); downloading it again",
                    self.step_url(step),
                    e,
                )
        tmp = fresh_dir(Path(dest_root) / f".tmp-fetch-step_{step:06d}-{os.getpid()}")
        log.info("downloading %s to %s", self.step_url(step), final)
        for f in self.fs.find(src):
            rel = f[len(src) :].lstrip("/")
            if rel != COMPLETE:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f, str(tmp / rel))
        write_atomic(tmp / COMPLETE, token)  # last, as everywhere
        try:
            problems = manifest_problems(tmp, hashes=True)  # what arrived, read back once
            if problems:
                raise CheckpointError(
                    f"corrupt checkpoint {self.step_url(step)}: " + "; ".join(problems)
                )
        except CheckpointError:
            remove_path(tmp)  # a bad download never takes the checkpoint's name
            raise
        if problems is None:
            log.info(
                "%s was saved before COMPLETE listed its files: its download is not verified",
                self.step_url(step),
            )
        old = Path(dest_root) / f".old-step_{step:06d}-{os.getpid()}"
        if (
            final.exists() or final.is_symlink()
        ):  # another save of the step, a bad copy, or a planted link
            os.rename(final, old)
        try:
            os.rename(tmp, final)
        except OSError:  # another process put the same checkpoint there first
            if not _same(final, token):
                raise
        remove_path(tmp)
        remove_path(old)
        return final


def _same(local: Path, token: bytes) -> bool:
    try:
        return (local / COMPLETE).read_bytes() == token
    except OSError:
        return False


def fetch_url(url: str, cache_root: Path, hashes: bool = True) -> Path:
    """trainer.resume=<URL of a checkpoint>: a verified local copy under cache_root (keyed by the URL)."""
    url = url.rstrip("/")
    parent, _, name = url.rpartition("/")
    step = step_of(Path(name))
    dest = Path(cache_root) / hashlib.sha256(parent.encode()).hexdigest()[:16]
    dest.mkdir(parents=True, exist_ok=True)
    return RemoteCheckpoints(parent).fetch(step, dest, hashes)


def _choose(
    cfg: DictConfig, run_dir: Path, store: RemoteCheckpoints | None
) -> tuple[str, str | None] | None:
    """(local path, URL it came from or None) of the checkpoint to resume from, verified with
    hashes (its files are about to be read anyway); None to start from scratch."""
    mode = cfg.trainer.resume
    if mode == "auto" and store is None:
        local = latest_checkpoint(run_dir, hashes=True)  # skips (and names) one that fails
        return (str(local), None) if local else None
    if mode == "auto":
        for step in reversed(store.complete_steps()):
            try:
                return str(store.fetch(step, checkpoints_dir(run_dir))), store.step_url(step)
            except CheckpointError as e:
                log.warning(
                    "skipping checkpoint %s, it fails verification: %s; trying the one before it",
                    store.step_url(step),
                    e,
                )
        return None
    if "://" not in mode:
        return str(check_checkpoint(mode, hashes=True)), None
    return str(fetch_url(mode, Path(cfg.trainer.run_root) / "cache" / "checkpoints")), mode


def resolve_resume(
    cfg: DictConfig,
    run_dir: Path,
    store: RemoteCheckpoints | None = None,
    world: distributed.World | None = None,
) -> Path | None:
    """trainer.resume as a verified local checkpoint directory (or None: start from scratch). auto
    is the newest complete local checkpoint that passes verification, or with
    trainer.checkpoint_url the newest such one at the URL (a local one may never have been
    uploaded); a named one (path or URL) that fails is refused with a CheckpointError.

    Global rank 0 chooses (downloading and hashing once) and broadcasts its choice, or its error,
    so every rank resumes from the same step or stops with the same message. On the other nodes
    local rank 0 makes sure of the node's copy of a remote checkpoint (the one rank 0 fetched, on
    a shared disk, else a download of its own, verified) while the node's other ranks wait; the
    other ranks check sizes only."""
    if cfg.trainer.resume == "none":
        return None
    world = world or distributed.env_world()
    choice: tuple[str, str | None] | str | None = None
    error = None
    if world.main:
        try:
            choice = _choose(cfg, run_dir, store)
        except (
            Exception
        ) as e:  # every rank must reach the broadcast, or the others wait for the timeout
            error = e
            choice = (
                str(e)
                if isinstance(e, CheckpointError)
                else f"rank 0 could not resolve trainer.resume: {e!r}"
            )
    choice = distributed.broadcast(choice)
    if error is not None:
        raise error
    if isinstance(choice, str):
        raise CheckpointError(choice)
    if choice is None:
        return None
    path, url = Path(choice[0]), choice[1]
    failure = None
    if url and world.local_rank == 0 and not world.main:
        try:  # into the directory rank 0 fetched into: the same path on every node
            RemoteCheckpoints(url.rstrip("/").rpartition("/")[0]).fetch(
                step_of(path), path.parent, hashes=False
            )
        except CheckpointError as e:
            failure = str(e)
    if distributed.any_rank(
        failure is not None, cfg.rung.device
    ):  # also the barrier: the copy is in place
        raise CheckpointError(
            failure or "another node could not get its copy of the checkpoint: see its log"
        )
    return path if world.main else check_checkpoint(path)
