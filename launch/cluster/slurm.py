"""Talking to SLURM: submit a script, read job states, cancel. Plain sbatch/sacct/scancel.

    job_id = submit(script_path)                # "1234"; an array's task i is then "1234_i"
    states = query(["1234_0", "1234_1"])        # {"1234_0": SlurmState("COMPLETED", "0:0"), ...}
    cancel(["1234_0"])

Why not submitit: it pickles a Python function into the job, so the job is opaque to a cluster
admin and cannot be shown by `--dry-run`; our jobs are a readable sbatch script that runs the
same `python -m launch.train <overrides>` as every other launcher, and the CLI tools below
are all we need from SLURM. States come from accounting (sacct), which remembers finished and
requeued jobs; squeue answers while accounting is missing or lagging.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from training.common.errors import LadderError

# SLURM states, as the ledger sees them.
PENDING = {
    "PENDING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "CONFIGURING",
    "RESIZING",
    "SUSPENDED",
}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
FAILED = {"FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
DONE = {"COMPLETED"}
CANCELLED = {"CANCELLED", "REVOKED"}


class SlurmError(LadderError):
    pass


@dataclass
class SlurmState:
    state: str  # e.g. COMPLETED; "CANCELLED by 0" is read as CANCELLED
    exit_code: str = ""  # "status:signal"
    reason: str = ""
    # From accounting (sacct), summed over the job's segments when it was requeued; None where
    # only squeue answered. What the allocation held is what the job is charged: never the time
    # someone happened to look.
    start: float | None = None  # unix seconds the first segment started; None: it never ran
    end: float | None = None  # unix seconds the last segment ended; None: still running
    elapsed_s: float | None = None  # seconds of allocation over all segments (ElapsedRaw)
    gpus: int | None = None  # GPUs allocated (AllocTRES gres/gpu); None on a cluster without GPUs

    def charged_hours(self, default_gpus: int) -> float | None:
        """Allocated GPUs x elapsed hours, as SLURM accounts them; a pending job costs nothing."""
        if self.elapsed_s is None:
            return None
        return (self.gpus if self.gpus is not None else default_gpus) * self.elapsed_s / 3600

    @property
    def final(self) -> bool:
        return self.state in DONE | FAILED | CANCELLED

    @property
    def exit_status(self) -> int | None:
        m = re.match(r"^(\d+):", self.exit_code)
        return int(m.group(1)) if m else None


def _run(
    cmd: list[str], timeout: float = 60, env: dict | None = None
) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise SlurmError(
            f"`{cmd[0]}` is not on PATH: launcher=slurm needs the SLURM client tools "
            "(sbatch, sacct, squeue, scancel) on the machine you launch from"
        )
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def _epoch(text: str) -> float | None:
    """sacct's Start/End under SLURM_TIME_FORMAT=%s: unix seconds, or Unknown/None when not yet."""
    return float(text) if text.strip().isdigit() else None


def _alloc_gpus(tres: str) -> int | None:
    m = re.search(r"(?:^|,)gres/gpu=(\d+)", tres)
    return int(m.group(1)) if m else None


def _base_ids(job_ids: list[str]) -> str:
    """The jobs to ask SLURM about: an array task "1234_5" is listed under its array, 1234."""
    return ",".join(sorted({j.split("_")[0] for j in job_ids}))


def submit(script_path: str, what: str = "") -> str:
    """Submit with sbatch; returns the job id, or raises with sbatch's own words and `what` was asked."""
    proc = _run(["sbatch", "--parsable", str(script_path)])
    if proc.returncode != 0:
        msg = (
            proc.stderr.strip()
            .removeprefix("sbatch: error: ")
            .removeprefix("Batch job submission failed: ")
        )
        raise SlurmError(
            f"SLURM refused the job: {msg}"
            + (f" ({what}; see `sinfo` for what the cluster has)" if what else "")
        )
    return proc.stdout.strip().split(";")[0]


def query(job_ids: list[str]) -> dict[str, SlurmState]:
    """The current state of each job (array tasks as "<array>_<index>"); unknown ids are absent."""
    if not job_ids:
        return {}
    states: dict[str, SlurmState] = {}
    # -D: every segment of a requeued job (otherwise only the last), times as unix seconds
    proc = _run(
        [
            "sacct",
            "-X",
            "-D",
            "-n",
            "-P",
            "-o",
            "JobID,State,ExitCode,Reason,Start,End,ElapsedRaw,AllocTRES",
            "-j",
            _base_ids(job_ids),
        ],
        env={"SLURM_TIME_FORMAT": "%s"},
    )
    if proc.returncode == 0:
        for line in proc.stdout.splitlines():  # oldest segment first
            parts = line.split("|")
            if len(parts) < 8 or parts[0] not in job_ids:
                continue
            start, end = _epoch(parts[4]), _epoch(parts[5])
            elapsed = float(parts[6]) if parts[6].strip().isdigit() else 0.0
            prev = states.get(parts[0])
            states[parts[0]] = SlurmState(
                parts[1].split()[0],
                parts[2],
                parts[3],
                start=prev.start if prev is not None and prev.start is not None else start,
                end=end,
                elapsed_s=(prev.elapsed_s if prev is not None else 0.0) + elapsed,
                gpus=_alloc_gpus(parts[7]),
            )
    missing = [j for j in job_ids if j not in states]
    if missing:  # not yet in accounting (or no accounting): ask the controller
        proc = _run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", _base_ids(missing)])
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            parts = line.split("|")
            if len(parts) == 3 and parts[0] in missing:
                states[parts[0]] = SlurmState(parts[1], "", parts[2])
    return states


def in_queue(job_ids: list[str]) -> set[str]:
    """The jobs the controller still holds, pending, running or completing (a cancelled job's
    processes may still be writing their last checkpoint while it is COMPLETING)."""
    if not job_ids:
        return set()
    proc = _run(["squeue", "-h", "-r", "-o", "%i", "-j", _base_ids(job_ids)])
    listed = set(proc.stdout.split()) if proc.returncode == 0 else set()
    return {j for j in job_ids if j in listed}


def cancel(job_ids: list[str]) -> None:
    if not job_ids:
        return
    proc = _run(["scancel", *job_ids])
    if proc.returncode != 0:
        raise SlurmError(f"scancel failed: {proc.stderr.strip()}")
