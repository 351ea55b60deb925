"""`ladder status [--sweep NAME] [--json]` and `ladder cancel JOB... | --sweep NAME`.

    ladder status                      # the latest jobs: state, step, last loss, GPU-hours, W&B
    ladder status --sweep lr-sweep     # every job of a sweep
    ladder cancel 12 13                # ledger job ids (or SLURM ids)
    ladder cancel --sweep lr-sweep     # every job of the sweep still pending or running

Each reads the ledger and brings its active jobs up to date first (refresh): a SLURM job's state
comes from accounting (sacct), its progress from the run's heartbeat. A job SLURM has finished is
recorded with the hours it used, its final state and its waste; one that failed also with SLURM's
state and exit code and the tail of its log. A local job whose process is gone is recorded from
its heartbeat, so no job is left "running" after its process died, and one whose launcher died
before it started is released (launch/accounting/reconcile.py). A cancelled job's hours are all
waste.

A local job's PID is a process on the host that recorded it (jobs.host), and only while the
process that started then still holds it (jobs.process_start; the kernel reuses PIDs). On a
ledger shared by several hosts, a job of another host is neither finished nor signalled here:
status and cancel say where it runs and leave it alone (pid_here; cancel then exits with 1).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from launch.accounting.ledger import ACTIVE, Ledger
from launch.accounting.reconcile import HEARTBEAT_FINAL, LOCAL, pid_here, reconcile
from launch.console import make_console, num, safe_text
from training.common.errors import ConfigError
from training.run.heartbeat import read_heartbeat

LOG_TAIL_LINES = 15
CANCEL_WAIT_S = 120  # how long `cancel` waits for SLURM to stop a job (KillWait is usually 30 s)


def log_tail(job: dict, lines: int = LOG_TAIL_LINES) -> str:
    record = launch_record(job)
    path = Path(record["log"]) if record.get("log") else None
    if path is None or not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def launch_record(job: dict) -> dict:
    try:
        return json.loads((Path(job["run_dir"]) / "launch.json").read_text())
    except (OSError, TypeError, json.JSONDecodeError):
        return {}


def elsewhere_message(job: dict, verb: str) -> str:
    where = (
        f"on host {safe_text(job['host'], markup=False)}"
        if job.get("host")
        else "on a host the ledger did not record (it was launched before hosts were)"
    )
    return (
        f"job {job['id']} runs {where} (pid {safe_text(job['external_id'], markup=False)}); "
        f"run `ladder {verb}` there"
    )


def refresh(ledger: Ledger, jobs: list[dict]) -> list[dict]:
    """Bring the active jobs among `jobs` up to date; returns the jobs as now recorded."""
    from launch.cluster import slurm

    active = [j for j in jobs if j["state"] in ACTIVE]
    for j in active:  # submitted while the ledger was away: the id is in the run folder
        record = launch_record(j) if j["launcher"] == "slurm" and not j["external_id"] else {}
        if record.get("ledger_job") == j["id"] and str(record.get("external_id", "")).isdigit():
            ledger.update_job(j["id"], external_id=str(record["external_id"]))
            j["external_id"] = str(record["external_id"])
    slurm_jobs = [j for j in active if j["launcher"] == "slurm" and j["external_id"]]
    states = slurm.query([j["external_id"] for j in slurm_jobs]) if slurm_jobs else {}
    for j in slurm_jobs:
        s = states.get(j["external_id"])
        if s is None:
            hb = read_heartbeat(Path(j["run_dir"])) or {}
            if hb.get("state") in HEARTBEAT_FINAL or j["state"] == "running":
                ledger.finish_from_heartbeat(
                    j["id"]
                )  # SLURM has forgotten it: the heartbeat is all there is
            continue
        if (
            s.state in slurm.RUNNING and j["state"] == "pending"
        ):  # started when SLURM says, not when we looked
            ledger.update_job(j["id"], state="running", started_at=s.start or time.time())
        elif s.state in slurm.PENDING and j["state"] == "running":
            ledger.update_job(j["id"], state="pending")  # requeued: waiting to resume
        elif s.final:
            finish_slurm_job(ledger, j, s)
    reconcile(ledger, jobs)  # local and direct jobs: their processes and run folders
    return [ledger.job(j["id"]) for j in jobs]


def finish_slurm_job(ledger: Ledger, job: dict, s) -> dict:
    from launch.cluster import slurm

    if job.get("kind") == "eval":
        return finish_eval_job(ledger, job, s)
    cancelled = s.state in slurm.CANCELLED
    final = ledger.finish_from_heartbeat(
        job["id"], exit_code=s.exit_status, cancelled=cancelled, accounted=s
    )
    if s.state in slurm.FAILED or (final["state"] == "failed" and not cancelled):
        tail = log_tail(job)
        reason = f"SLURM {s.state}, exit code {s.exit_code or '?'}" + (
            f": {final['reason']}" if final["reason"] else ""
        )
        ledger.update_job(
            job["id"],
            state="failed" if final["state"] != "preempted" else "preempted",
            reason=reason + (f"\n--- last lines of the log ---\n{tail}" if tail else ""),
        )
    elif cancelled and not final.get("reason", "").startswith("cancelled"):
        ledger.update_job(
            job["id"],
            reason=f"cancelled ({s.state}"
            + (f", {s.reason}" if s.reason and s.reason != "None" else "")
            + ")",
        )
    return ledger.job(job["id"])


def finish_eval_job(ledger: Ledger, job: dict, s) -> dict:
    """An eval job has no heartbeat: its state is SLURM's, its hours the allocation's, and all of
    them are waste unless it completed (a failed eval's partial results are cached, but the
    scores the hours were for do not exist)."""
    from launch.cluster import slurm

    used = s.charged_hours(job["gpus"]) or 0.0
    state = (
        "completed"
        if s.state in slurm.DONE
        else "cancelled"
        if s.state in slurm.CANCELLED
        else "failed"
    )
    reason = None if state == "completed" else f"SLURM {s.state}, exit code {s.exit_code or '?'}"
    if state == "failed":
        tail = log_tail(job)
        reason += f"\n--- last lines of the log ---\n{tail}" if tail else ""
    ledger.update_job(
        job["id"],
        state=state,
        reason=reason,
        used_gpu_hours=used,
        waste_gpu_hours=0.0 if state == "completed" else used,
        started_at=s.start,
        finished_at=s.end or time.time(),
    )
    return ledger.job(job["id"])


def wait_for(
    ledger: Ledger, job_ids: list[int], timeout_s: float | None = None, poll_s: float = 2.0
) -> list[dict]:
    """Poll until every job is final; returns their records."""
    deadline = None if timeout_s is None else time.time() + timeout_s
    while True:
        jobs = refresh(ledger, [ledger.job(i) for i in job_ids])
        if all(j["state"] not in ACTIVE for j in jobs):
            return jobs
        if deadline is not None and time.time() > deadline:
            raise TimeoutError(
                f"jobs still active after {timeout_s} s: "
                + ", ".join(f"{j['id']} ({j['state']})" for j in jobs if j["state"] in ACTIVE)
            )
        time.sleep(poll_s)


def select(
    ledger: Ledger, sweep: str | None, ids: list[str] | None = None, limit: int = 20
) -> list[dict]:
    jobs = ledger.jobs()
    if sweep is not None:
        chosen = [j for j in jobs if j["sweep"] == sweep]
        if not chosen:
            sweeps = sorted({j["sweep"] for j in jobs if j["sweep"]})
            shown = ", ".join(
                safe_text(s, markup=False) for s in sweeps
            )  # rows other tools may have written
            raise ConfigError(
                f"no jobs of sweep {sweep!r} in {ledger.path}; sweeps: {shown or 'none'}"
            )
        return chosen
    if ids:
        by_id = {str(j["id"]): j for j in jobs}
        by_ext = {str(j["external_id"]): j for j in jobs if j["external_id"]}
        chosen = []
        for i in ids:
            j = by_id.get(i) or by_ext.get(i)
            if j is None:
                raise ConfigError(
                    f"no job {i} in {ledger.path} (give a ledger job id or a SLURM job id)"
                )
            chosen.append(j)
        return chosen
    return jobs[-limit:]


def rows(jobs: list[dict]) -> list[dict]:
    out = []
    for j in jobs:
        hb = (read_heartbeat(Path(j["run_dir"])) if j["run_dir"] else None) or {}
        live = j["state"] in ACTIVE
        used = (
            max(0.0, float(hb.get("device_hours", 0.0)) - j["hours_before"])
            if live
            else j["used_gpu_hours"]
        )
        out.append(
            {
                "job": j["id"],
                "slurm_id": j["external_id"] if j["launcher"] == "slurm" else None,
                "run": j["run_name"],
                "sweep": j["sweep"],
                "rung": j["rung"],
                "state": j["state"],
                "step": hb.get("step"),
                "max_steps": hb.get("max_steps"),
                "loss": hb.get("loss"),
                "used_gpu_hours": used,
                "planned_gpu_hours": j["planned_gpu_hours"],
                "waste_gpu_hours": j["waste_gpu_hours"],
                "reason": j["reason"],
                "wandb": hb.get("tracker_url") or "",
                "gen_share": hb.get("gen_share"),
                "host": j.get("host"),
            }
        )
    return out


def render(table_rows: list[dict], title: str) -> None:
    from rich.table import Table

    colour = {
        "completed": "green",
        "running": "cyan",
        "pending": "yellow",
        "failed": "red",
        "preempted": "magenta",
        "interrupted": "magenta",
        "cancelled": "dim",
    }
    t = Table(title=title, title_justify="left")
    for col in (
        "job",
        "SLURM id",
        "run",
        "state",
        "step",
        "loss",
        "GPU-h used/planned",
        "waste",
        "W&B",
    ):
        t.add_column(
            col,
            no_wrap=col not in ("run", "W&B"),
            justify="right" if col in ("job", "step", "loss", "waste") else "left",
        )
    for r in table_rows:
        step = f"{r['step']}/{r['max_steps']}" if r["step"] is not None else "-"
        loss = f"{r['loss']:.4f}" if isinstance(r["loss"], (int, float)) else "-"
        # ledger rows and heartbeats may have been written by other tools: safe_text
        t.add_row(
            str(r["job"]),
            safe_text(r["slurm_id"]),
            safe_text(r["run"]),
            f"[{colour.get(r['state'], 'white')}]{safe_text(r['state'])}[/]",
            safe_text(step),
            loss,
            f"{num(r['used_gpu_hours'], 3)}/{num(r['planned_gpu_hours'], 3)}",
            num(r["waste_gpu_hours"], 3),
            safe_text(r["wandb"] or None),
        )
    console = make_console()
    console.print(t)
    for r in (
        table_rows
    ):  # RL jobs: generation is where GPUs idle, so say how much of each step it takes
        if r.get("gen_share") is not None:
            console.print(
                f"job {r['job']} ({safe_text(r['run'])}): generation takes {r['gen_share']:.0%} of step "
                f"time at step {safe_text(r['step'])}"
            )
    for r in table_rows:
        if r["state"] in ("failed", "cancelled", "preempted", "interrupted") and r["reason"]:
            from rich.text import Text  # not markup; control characters still shown escaped

            console.print(
                Text.assemble(
                    (f"job {r['job']}", "bold"),
                    f" {safe_text(r['state'], markup=False)}: "
                    + safe_text(r["reason"], markup=False, lines=True),
                )
            )


def _ledger(overrides: list[str]) -> Ledger:
    from training.config.compose import compose

    ledger = Ledger.existing(compose(overrides))
    if ledger is None:
        raise ConfigError(
            "no ledger yet: nothing has been launched with this trainer.run_root / ledger.url"
        )
    return ledger


def cmd_status(args) -> int:
    ledger = _ledger(args.overrides)
    jobs = refresh(ledger, select(ledger, args.sweep, args.jobs))
    table_rows = rows(jobs)
    if args.json:
        print(json.dumps(table_rows, indent=2))
    else:
        render(
            table_rows,
            safe_text(f"Jobs in {ledger.path}" + (f", sweep {args.sweep}" if args.sweep else "")),
        )
        for j in jobs:
            if (
                j["state"] in ACTIVE
                and j["launcher"] in LOCAL
                and pid_here(ledger, j) == "elsewhere"
            ):
                print(elsewhere_message(j, "status"))
    return 0


def cancel_jobs(ledger: Ledger, jobs: list[dict], wait_s: float = CANCEL_WAIT_S) -> list[dict]:
    """Stop the active jobs among `jobs` and record them as cancelled, their hours as waste."""
    import signal as sig

    from launch.cluster import slurm

    jobs = refresh(ledger, jobs)
    # a local job of another host is left alone: its PID names nothing here (cmd_cancel says where it runs)
    active = [
        j
        for j in jobs
        if j["state"] in ACTIVE
        and not (j["launcher"] in LOCAL and pid_here(ledger, j) == "elsewhere")
    ]
    slurm_ids = [j["external_id"] for j in active if j["launcher"] == "slurm" and j["external_id"]]
    slurm.cancel(slurm_ids)
    for j in active:
        if j["launcher"] in LOCAL and j["state"] == "pending":
            # not started: its launcher (the PID it holds) skips it; nothing to stop or charge
            ledger.finish_from_heartbeat(j["id"], cancelled=True)
        elif j["launcher"] in LOCAL and pid_here(ledger, j) == "alive":
            os.kill(int(j["external_id"]), sig.SIGTERM)  # the trainer checkpoints and stops
    deadline = time.time() + wait_s
    pending = {
        j["id"]: j for j in active if not (j["launcher"] in LOCAL and j["state"] == "pending")
    }
    while pending and time.time() < deadline:
        queued = slurm.in_queue(
            [j["external_id"] for j in pending.values() if j["launcher"] == "slurm"]
        )
        for jid, j in list(pending.items()):
            if j["launcher"] == "slurm":
                if j["external_id"] not in queued:  # gone from the queue: its processes have ended
                    accounted = slurm.query([j["external_id"]]).get(j["external_id"])
                    ledger.finish_from_heartbeat(jid, cancelled=True, accounted=accounted)
                    del pending[jid]
            elif pid_here(ledger, j) != "alive":
                ledger.finish_from_heartbeat(jid, cancelled=True)
                del pending[jid]
        if pending:
            time.sleep(1.0)
    for jid in pending:  # still winding down: record it now; its hours so far are waste
        ledger.finish_from_heartbeat(jid, cancelled=True)
    for j in active:
        ledger.update_job(j["id"], reason="cancelled by hand (ladder cancel)")
    return [ledger.job(j["id"]) for j in jobs]


def cmd_cancel(args) -> int:
    if not args.jobs and args.sweep is None:
        raise ConfigError("name the jobs to cancel (ledger or SLURM ids) or --sweep NAME")
    ledger = _ledger(args.overrides)
    jobs = cancel_jobs(ledger, select(ledger, args.sweep, args.jobs))
    left = [
        j
        for j in jobs
        if j["state"] in ACTIVE and j["launcher"] in LOCAL and pid_here(ledger, j) == "elsewhere"
    ]
    for j in jobs:
        if j in left:
            print(f"ladder cancel: {elsewhere_message(j, 'cancel ' + str(j['id']))}; left as it is")
            continue
        print(
            f"ladder cancel: job {j['id']} ({safe_text(j['run_name'], markup=False)}) "
            f"{safe_text(j['state'], markup=False)}: used {num(j['used_gpu_hours'], 3)} "
            f"GPU-hours, recorded as waste {num(j['waste_gpu_hours'], 3)}"
        )
    return 1 if left else 0
