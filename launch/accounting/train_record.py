"""`ladder train` run directly, recorded in the ledger like a launched job, on every backend.

    ladder train rung=tiny                                                 # runs/ladder.db: recorded
    ladder train rung=tiny ledger.url=postgresql://ladder@db-host/ladder   # checked, recorded, charged

Every run started by hand is charged to its team (issue #28: after `make pipeline`, `ladder status`
and `ladder budget report` show what was run): it is planned and checked against the team's
allocation (refused over budget, nothing trained), recorded as a job of kind `train` with launcher
`direct` before it starts, and finished from its heartbeat when it ends, however it ends. A run
killed before it could record its end is finished by the next `ladder status` from its run folder
(launch/accounting/reconcile.py). `ladder launch` runs `python -m launch.train`, not this, so a
launched job is never recorded twice. Only the first process of a torchrun job (RANK 0) records.
"""

from __future__ import annotations

import os
import sys

from training.common.store import StoreUnavailable


def records_direct_runs(cfg) -> bool:
    return os.environ.get("RANK", "0") == "0"


def recording(train, overrides: list[str]):
    """`train` (cfg -> result), wrapped to record its run in the ledger."""

    def run(cfg):
        if not records_direct_runs(cfg):
            return train(cfg)
        from launch.accounting.budget import check_and_record_many
        from launch.accounting.ledger import Ledger, claim
        from launch.commands.launch_cmd import ledger_fields, prepare

        _, [job] = prepare(overrides, direct=True)
        if job.finished_at is not None:  # nothing to train: nothing to charge
            return train(cfg)
        ledger = Ledger.from_config(job.cfg)
        [job_id] = check_and_record_many(
            ledger,
            job.cfg.budget,
            [(job.plan.gpu_hours, {**ledger_fields(job), "launcher": "direct", **claim()})],
        )
        print(
            f"ladder train: recorded in {ledger.where} as job {job_id} (team {job.cfg.budget.team}, "
            f"{job.plan.gpu_hours:.3g} GPU-hours planned)",
            flush=True,
        )
        try:
            ledger.mark_started(job_id, external_id=str(os.getpid()))
        except StoreUnavailable as e:
            raise StoreUnavailable(
                f"{e}; job {job_id} is recorded as pending but not as started, so nothing was "
                "trained (the next `ladder status` releases its planned hours)"
            ) from None
        code = 1
        try:
            result = train(cfg)
            code = 0
            return result
        finally:  # a failure or an interrupt is recorded too, from the heartbeat
            record_end(ledger, job_id, job.run_dir, code)

    return run


def record_end(ledger, job_id: int, run_dir, code: int) -> None:
    """The run's end from its heartbeat; if the ledger stayed unreachable, one line that says
    what the run did and that `ladder status` records it (an error for a run that succeeded; a
    failure's own exception, a preemption's requeue status included, goes on)."""
    from launch.accounting.reconcile import end_not_recorded

    try:
        final = ledger.finish_from_heartbeat(job_id, exit_code=code)
    except StoreUnavailable as e:
        message = end_not_recorded(job_id, run_dir, e)
        if code == 0:
            raise StoreUnavailable(message) from None
        print(f"ladder train: error: {message}", file=sys.stderr, flush=True)
        return
    print(
        f"ladder train: job {job_id} {final['state']}, {final['used_gpu_hours']:.3g} GPU-hours used",
        flush=True,
    )
