"""Bring local and direct jobs to the truth of their processes and run folders, after any kill.

    ladder status                     # launch/commands/status_cmd.py: refresh -> reconcile
    ladder launch ...                 # the budget check reconciles the team's jobs first (budget.py)
    from launch.accounting.reconcile import reconcile; reconcile(ledger, ledger.jobs())

A launcher (`ladder launch`, or `ladder train` itself) may die at any step: before its record,
after it, before or after the trainer starts, inside its final update; a ledger server may be
down when the end is written. Nothing then finishes the job by hand: every reader that needs the
numbers (status, budget report, the admission check) calls reconcile, and one call converges.

Evidence, strongest first:
  1. the run folder's heartbeat, when it is this job's (its segment started after the job was
     recorded): a final state (completed, failed, preempted) is recorded with its hours, even
     if the ledger said the job failed; a running one whose process (heartbeat.host, pid,
     process_start) is gone on this host is recorded failed, charged to its last heartbeat; a
     live one makes the job running with that process, whatever the launcher managed to record.
  2. the process the ledger holds for the job (jobs.external_id, host, process_start): the
     launcher's own while the job is pending (ledger.claim), the trainer's once it runs. Gone
     on this host: a pending job is released (failed, nothing charged: its planned hours no
     longer count against the budget); a running one is recorded failed, charged until its run
     folder's last write (ledger.last_write).
A job of another host whose run folder says nothing is left alone: its PID names nothing here
(status says where it runs). A job recorded without any process (an older Ladder) is released
once UNCLAIMED_LEASE_S has passed with no heartbeat of its own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from launch.accounting.ledger import ACTIVE, Ledger, process_start, this_host
from training.run.heartbeat import read_heartbeat

LOCAL = ("local", "direct")  # jobs whose process runs on the host that recorded it
HEARTBEAT_FINAL = ("completed", "failed", "preempted", "interrupted")
UNCLAIMED_LEASE_S = 3600.0  # a pending local job recorded with no process (an older Ladder)
REOPEN_S = 7 * 86400.0  # a failed job is looked at again this long, in case its run went on
RELEASED = "released: no live process"  # the reasons reconcile writes start with this


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def process_here(host: str | None, pid, started: str | None) -> str:
    """ "alive" (that very process runs here), "gone" (ended, or its PID now names a later
    process) or "elsewhere" (another host's)."""
    if host is not None and host != this_host():
        return "elsewhere"
    if not _pid_alive(pid):
        return "gone"
    if started and process_start(pid) != started:
        return "gone"  # the PID was reused: the process it names started after the job's
    return "alive"


def pid_here(ledger: Ledger, job: dict) -> str:
    """What a local job's recorded PID is on this host: "alive", "gone" or "elsewhere" (recorded
    on another host, or, on a server, before hosts were recorded: left alone)."""
    if job.get("host") is None and job["external_id"] is not None and ledger.backend != "sqlite":
        return "elsewhere"  # a SQLite ledger is on one host's disk (WAL); a server's row may be anyone's
    return process_here(job.get("host"), job["external_id"], job.get("process_start"))


def own_heartbeat(job: dict) -> dict | None:
    """The run folder's heartbeat if this job's process wrote it: its segment started after the
    job was recorded (the same host's clock wrote both). A heartbeat from before segments were
    recorded counts if written after the job started."""
    hb = read_heartbeat(Path(job["run_dir"])) if job.get("run_dir") else None
    if hb is None:
        return None
    since = hb.get("segment_started_at")
    if since is not None:
        return hb if float(since) >= job["created_at"] else None
    return (
        hb if float(hb.get("updated_at", 0)) >= (job["started_at"] or job["created_at"]) else None
    )


def candidates(ledger: Ledger, jobs: list[dict], now: float) -> list[dict]:
    """Active local and direct jobs, and failed ones that may have been failed too early: the
    latest job of its run folder, failed in the last REOPEN_S."""
    local = [j for j in jobs if j.get("launcher") in LOCAL]
    failed = [
        j
        for j in local
        if j["state"] == "failed" and j["run_dir"] and (j["finished_at"] or 0) > now - REOPEN_S
    ]
    latest = {}
    if failed:  # one query: the last job of each run folder
        rows = ledger.query(
            "SELECT run_dir, MAX(id) AS last FROM jobs WHERE run_dir IS NOT NULL GROUP BY run_dir"
        )
        latest = {r["run_dir"]: r["last"] for r in rows}
    return [
        j
        for j in local
        if j["state"] in ACTIVE or (j in failed and latest.get(j["run_dir"]) == j["id"])
    ]


def reconcile(ledger: Ledger, jobs: list[dict], now: float | None = None) -> list[int]:
    """Settle each local and direct job among `jobs` (module doc); returns the ids it changed."""
    now = time.time() if now is None else now
    return [j["id"] for j in candidates(ledger, jobs, now) if settle(ledger, j, now)]


def settle(ledger: Ledger, job: dict, now: float) -> bool:
    hb = own_heartbeat(job)
    if job["state"] not in ACTIVE and (
        hb is None or float(hb.get("updated_at", 0)) <= (job["finished_at"] or 0)
    ):
        return False  # failed, and its run folder has said nothing since
    if hb is not None and hb.get("state") in HEARTBEAT_FINAL:
        ledger.finish_from_heartbeat(job["id"])
        return True
    if hb is not None and hb.get("pid") is not None:
        where = process_here(hb.get("host"), hb["pid"], hb.get("process_start"))
        if where == "alive":
            if job["state"] == "running" and job["external_id"] == str(hb["pid"]):
                return False
            ledger.update_job(  # the trainer runs, whatever its launcher managed to record
                job["id"],
                state="running",
                reason=None,
                finished_at=None,
                started_at=job["started_at"] or float(hb["segment_started_at"]),
                external_id=str(hb["pid"]),
                host=hb.get("host"),
                process_start=hb.get("process_start"),
            )
            return True
        if where == "gone":
            ledger.finish_from_heartbeat(job["id"])  # charged to its last heartbeat
            return True
        return False  # another host's run, still running: its own host settles it
    if job["state"] not in ACTIVE:
        return False
    if job["external_id"] is None and job.get("host") is None:  # recorded with no process
        if now - job["created_at"] < UNCLAIMED_LEASE_S:
            return False
    elif pid_here(ledger, job) != "gone":
        return False
    if job["state"] == "pending":
        ledger.update_job(
            job["id"],
            state="failed",
            reason=f"{RELEASED}: its launcher ended before the run started; nothing was charged",
            used_gpu_hours=0.0,
            waste_gpu_hours=0.0,
            finished_at=now,
        )
        return True
    final = ledger.finish_from_heartbeat(
        job["id"]
    )  # no heartbeat: charged to the folder's last write
    ledger.update_job(job["id"], reason=f"{RELEASED}: {final['reason']}")
    return True


def end_not_recorded(job_id: int, run_dir, error: Exception) -> str:
    """One line for a run whose end the ledger could not take: what its run folder says it did,
    that the ledger does not hold it yet, and who will write it."""
    hb = read_heartbeat(Path(run_dir)) or {}
    did = (
        f"ended {hb.get('state', 'without a heartbeat')}"
        + (f" at step {hb['step']}" if hb.get("step") is not None else "")
        + (
            f", {float(hb['device_hours']):.4g} GPU-hours by its heartbeat"
            if "device_hours" in hb
            else ""
        )
    )
    return (
        f"job {job_id} {did}, but its end is not recorded: {error}. The next `ladder status` "
        f"records it from {run_dir}"
    )
