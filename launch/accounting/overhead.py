"""What a finished job was charged beyond its steps: the plan's start-up and wrap-up term.

    job_overhead_s(job, state, hb, used, charged_by_slurm)  # launch/accounting/ledger.py, at a job's end
    ladder plan rung=tiny        # "start-up and wrap-up": the median over completed tiny jobs

A plan times a job's steps at the rung's measured rate (launch/planning/rates.py: the median of
each job's median step rate). What the ledger charges besides is the fixed cost: the process start,
imports and model build where the charge covers them (SLURM's allocation does; a local job's
heartbeat hours start once set-up is done), the initial and periodic saves, in-process evals,
slow first steps (warm-up, torch.compile) and the wrap-up. Measured as the job's charged wall
seconds less its own steps timed at its own median rate, it is exactly what a plan at that rate
would have missed, whichever way the launcher charges. DPO's reference pass is left out where the
charge covers it: the plan counts it on its own (launch/planning/plan_dpo.py).

Only a completed job with one segment is measured: a failed job stopped early, and a requeued
SLURM job was charged for earlier segments whose steps the heartbeat no longer names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from training.common.safe_files import read_text

# heartbeat hours and the ledger's hours_before are the same float, written and read back
SAME_HOURS = 1e-9


def job_overhead_s(
    job: dict, state: str, hb: dict | None, used_gpu_hours: float, charged_by_slurm: bool
) -> float | None:
    """Wall seconds of the job outside its steps at its median rate; None where not measurable."""
    if state != "completed" or hb is None or not job["run_dir"] or not job["gpus"]:
        return None
    before = hb.get("segment_hours_before")
    first = hb.get("segment_start_step")
    if not isinstance(before, (int, float)) or not isinstance(first, int):
        return None  # a heartbeat from before these fields
    if abs(before - job["hours_before"]) > SAME_HOURS:
        return None  # a requeued job: charged for segments before this one
    run_dir = Path(job["run_dir"])
    steps = step_seconds(run_dir, first)
    if steps is None:
        return None
    wall = used_gpu_hours * 3600 / job["gpus"]
    if charged_by_slurm:
        wall -= reference_seconds(run_dir)
    overhead = wall - steps
    return max(0.0, overhead) if math.isfinite(overhead) else None  # files it did not write


def step_seconds(run_dir: Path, after_step: int) -> float | None:
    """The steps after `after_step`, timed at the run's median rate (MFU where measured, as the
    plan does on a GPU, else tokens/s): sum of (rate x seconds) over the steps / the median."""
    from launch.accounting.ledger import measured_rates
    from training.run.metrics import read_metrics

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    mfu, tok_s = measured_rates(run_dir)
    key, median = ("mfu", mfu) if mfu else ("tokens_per_s", tok_s)
    rows = [
        r
        for r in read_metrics(path)
        if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] > after_step
    ]
    work = [(r.get(key), r.get("step_time_s")) for r in rows]
    if (
        not median
        or not rows
        or any(not isinstance(v, (int, float)) for pair in work for v in pair)
    ):
        return None
    return sum(rate * seconds for rate, seconds in work) / median


def reference_seconds(run_dir: Path) -> float:
    """The DPO reference pass this run timed (training/recipes/reference.py), else 0."""
    try:
        seconds = json.loads(read_text(run_dir / "reference_pass.json")).get("seconds")
    except (OSError, ValueError, AttributeError):
        return 0.0
    return float(seconds) if isinstance(seconds, (int, float)) else 0.0
