"""The plan's start-up and wrap-up term: what a job is charged beyond its steps, once per job.

    ov = planning_overhead(cfg, ledger)   # launch/planning/plan.py adds ov.seconds to the wall-clock
    ladder plan rung=tiny                 # "start-up and wrap-up  ~6 s  (median of 3 past tiny jobs)"

The median over completed jobs of the rung in the ledger (each job's jobs.overhead_s, measured when
it finished: launch/accounting/overhead.py), else rung.assumed_overhead_s, shown as the rung's
default. Steps alone plan a short job far too low: a 2-step tiny run's steps are about 3 s of the
9 s it is charged.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass
class Overhead:
    seconds: float  # wall-clock, once per job
    gpu_hours: float  # the job's GPUs x seconds
    jobs: int  # completed jobs of the rung it is the median of; 0: the rung's default
    source: str


def planning_overhead(cfg, ledger, gpus: int) -> Overhead:
    r = cfg.rung
    if ledger is not None:
        rows = ledger.query(
            "SELECT overhead_s AS v FROM jobs WHERE rung = ? AND kind = 'train' "
            "AND state = 'completed' AND overhead_s IS NOT NULL",
            (r.name,),
        )
        if rows:
            n, seconds = len(rows), statistics.median(row["v"] for row in rows)
            return Overhead(
                seconds,
                gpus * seconds / 3600,
                n,
                f"median of {n} past {r.name} job{'s' if n != 1 else ''} in the ledger",
            )
    seconds = r.assumed_overhead_s  # in [0, inf): validate's RANGES refused anything else
    return Overhead(
        seconds, gpus * seconds / 3600, 0, "rung default (rung.assumed_overhead_s), an estimate"
    )


def duration(seconds: float) -> str:
    """~6 s, ~4.5 min, ~1.2 h: the term is an estimate, shown as one."""
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.1f} min"
    return f"~{seconds / 3600:.1f} h"
