"""How long the `ladder` command takes to answer: help, config, a plan, and config mistakes.

    .venv/bin/python bench/cli_latency.py                    # 5 runs of each command, the median
    .venv/bin/python bench/cli_latency.py --runs 9 --json runs/cli_latency.json
    .venv/bin/python bench/cli_latency.py --repo /tmp/old    # another checkout's code (before/after)

Each command runs as a new process (`python -m launch.cli ...`, what the `ladder` script runs) in
an empty working directory, so no ledger or run of this tree is read, and is timed from start to
exit: the import of the libraries the verb needs is the figure. The goal (#28 item 5) is under
2 s on 2 cores for `ladder config`, `ladder plan rung=8b` and every config error. A command that
exits with another status than the one expected is reported, not timed as a success.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (what is timed, the arguments, the exit status it should give)
COMMANDS = [
    ("ladder --help", ["--help"], 0),
    ("ladder config", ["config"], 0),
    ("ladder plan rung=8b", ["plan", "rung=8b"], 0),
    ("ladder config recipe=ppo", ["config", "recipe=ppo"], 2),
    ("ladder train optim.lr=abc", ["train", "optim.lr=abc"], 2),
    ("ladder train data.train_files=/x.jsonl", ["train", "data.train_files=/x.jsonl"], 2),
    ("ladder plan optim.learning_rate=1e-4", ["plan", "optim.learning_rate=1e-4"], 2),
    (
        "ladder train trainer.global_batch_tokens=1500",
        ["train", "trainer.global_batch_tokens=1500"],
        2,
    ),
    ("ladder launch trainer.max_stpes=3", ["launch", "trainer.max_stpes=3"], 2),
    ("ladder leaderboard optim.lr=abc", ["leaderboard", "optim.lr=abc"], 2),
]


def time_command(args: list[str], repo: Path, cwd: Path) -> tuple[float, int, str]:
    env = {**os.environ, "PYTHONPATH": str(repo)}  # that checkout's launch/ and training/
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "launch.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return time.perf_counter() - start, proc.returncode, proc.stderr.strip()[-300:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=5, help="runs of each command (the median is shown)")
    p.add_argument("--repo", type=Path, default=REPO, help="the checkout whose code runs")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    a = p.parse_args(argv)
    rows = []
    print(f"{a.runs} runs each, {os.cpu_count()} CPUs, code from {a.repo.resolve()}")
    print(f"{'command':<50} {'median s':>9} {'min s':>7} {'max s':>7}  status")
    with tempfile.TemporaryDirectory() as cwd:
        for label, args, expected in COMMANDS:
            times, code, err = [], None, ""
            for _ in range(a.runs):
                t, code, err = time_command(args, a.repo.resolve(), Path(cwd))
                times.append(t)
            ok = code == expected
            status = "ok" if ok else f"exit {code}, expected {expected}: {err.splitlines()[-1:]}"
            print(
                f"{label:<50} {statistics.median(times):>9.2f} {min(times):>7.2f} "
                f"{max(times):>7.2f}  {status}"
            )
            rows.append(
                {
                    "command": label,
                    "median_s": round(statistics.median(times), 3),
                    "min_s": round(min(times), 3),
                    "max_s": round(max(times), 3),
                    "runs": a.runs,
                    "exit": code,
                    "expected_exit": expected,
                }
            )
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(r["exit"] == r["expected_exit"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
