"""What share of a training job's charged hours are not training steps (issue #13 item 3).

    .venv/bin/python bench/eval_handoff.py                        # this working tree
    git archive HEAD~1 | tar -x -C /tmp/before && .venv/bin/python bench/eval_handoff.py --tree /tmp/before

Runs one `ladder launch` (launcher=local, the tiny rung with its own defaults: a step-0 checkpoint
and every checkpoint evaluated in the background) from the code in --tree, in a fresh run root,
then reads the ledger and metrics.jsonl:
  charged     the training job's used device-hours, as `ladder budget report` charges them
  steps       the sum of its steps' step_time_s (data, forward/backward, optimizer)
  not steps   1 - steps / charged: set-up after the heartbeat starts, checkpoint saves, and (before the
              hand-off) the wait for the last background evaluations
  eval jobs   the hours of the eval jobs the run handed off (kind eval), charged apart
Prints one JSON object; RESULTS.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def measure(tree: Path, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="ladder-bench-handoff-") as tmp:
        runs = Path(tmp) / "runs"
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "HF_HUB_OFFLINE": "1",
            "WANDB_MODE": "disabled",
        }
        cmd = [
            sys.executable,
            "-m",
            "launch.cli",
            "launch",
            "rung=tiny",
            "tracker.mode=disabled",
            f"trainer.run_root={runs}",
            "trainer.run_name=bench",
            *overrides,
        ]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode != 0:
            raise SystemExit(
                f"launch failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            )
        db = sqlite3.connect(runs / "ladder.db")
        db.row_factory = sqlite3.Row
        jobs = [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY id")]
        train = [j for j in jobs if j.get("kind", "train") == "train"]
        evals = [j for j in jobs if j.get("kind") == "eval"]
        [job] = train
        rows = [
            json.loads(line)
            for line in (runs / "bench" / "metrics.jsonl").read_text().splitlines()
            if line
        ]
        charged_s = job["used_gpu_hours"] * 3600 / job["gpus"]
        steps_s = sum(r["step_time_s"] for r in rows)
        return {
            "tree": str(tree),
            "steps": len(rows),
            "train_job_charged_s": round(charged_s, 1),
            "train_job_wall_s": round(job["finished_at"] - job["started_at"], 1),
            "step_time_s": round(steps_s, 1),
            "not_steps_share": round(1 - steps_s / charged_s, 3),
            "eval_jobs": len(evals),
            "eval_jobs_charged_s": round(sum(e["used_gpu_hours"] for e in evals) * 3600, 1),
            "launch_wall_s": round(wall, 1),
        }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--tree", type=Path, default=REPO, help="the ladder source tree to run (default: this one)"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        default=[
            "trainer.max_steps=60",
            "trainer.save_every=20",
            "eval.max_examples=100",
            "data.max_samples=2000",
        ],
        help="overrides for the launch (default: 60 steps, 4 checkpoints, 100 eval examples)",
    )
    args = p.parse_args()
    print(json.dumps(measure(args.tree.resolve(), args.overrides), indent=1))


if __name__ == "__main__":
    main()
