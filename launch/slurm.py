"""Talking to SLURM: submit a script, read job states, cancel. Plain sbatch/sacct/scancel.

    job_id = submit(script_path)                # "1234"; an array's task i is then "1234_i"
    states = query(["1234_0", "1234_1"])        # {"1234_0": SlurmState("COMPLETED", "0:0"), ...}
    cancel(["1234_0"])

Why not submitit: it pickles a Python function into the job, so the job is opaque to a cluster
admin and cannot be shown by `--dry-run`; our jobs are a readable sbatch script that runs the
same `python -m training.trainer <overrides>` as every other launcher, and the CLI tools below
are all we need from SLURM. States come from accounting (sacct), which remembers finished and
requeued jobs; squeue answers while accounting is missing or lagging.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from training.errors import LadderError

# SLURM states, as the ledger sees them.
PENDING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESIZING", "SUSPENDED"}
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

    @property
    def final(self) -> bool:
        return self.state in DONE | FAILED | CANCELLED

    @property
    def exit_status(self) -> int | None:
        m = re.match(r"^(\d+):", self.exit_code)
        return int(m.group(1)) if m else None


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise SlurmError(f"`{cmd[0]}` is not on PATH: launcher=slurm needs the SLURM client tools "
                         "(sbatch, sacct, squeue, scancel) on the machine you launch from")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _base_ids(job_ids: list[str]) -> str:
    """The jobs to ask SLURM about: an array task "1234_5" is listed under its array, 1234."""
    return ",".join(sorted({j.split("_")[0] for j in job_ids}))


def submit(script_path: str, what: str = "") -> str:
    """Submit with sbatch; returns the job id, or raises with sbatch's own words and `what` was asked."""
    proc = _run(["sbatch", "--parsable", str(script_path)])
    if proc.returncode != 0:
        msg = proc.stderr.strip().removeprefix("sbatch: error: ").removeprefix("Batch job submission failed: ")
        raise SlurmError(f"SLURM refused the job: {msg}" + (f" ({what}; see `sinfo` for what the cluster has)"
                                                            if what else ""))
    return proc.stdout.strip().split(";")[0]


def query(job_ids: list[str]) -> dict[str, SlurmState]:
    """The current state of each job (array tasks as "<array>_<index>"); unknown ids are absent."""
    if not job_ids:
        return {}
    states: dict[str, SlurmState] = {}
    proc = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Reason", "-j", _base_ids(job_ids)])
    if proc.returncode == 0:
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            if len(parts) >= 3 and parts[0] in job_ids:
                states[parts[0]] = SlurmState(parts[1].split()[0], parts[2], parts[3] if len(parts) > 3 else "")
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
