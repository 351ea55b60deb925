"""Step time with 2 processes on the CPU: this tree against a git revision, in one run (issue #14).

    .venv/bin/python bench/step_syncs.py [--baseline HEAD~1] [--steps 30] [--rounds 2]

The trainer's step once made five all-reduces and a host sync per micro-batch (.item() on each
loss and statistic); it now makes two all-reduces and one transfer. On a GPU every sync stalls
the device; on a CPU the point is only that the step does not get slower. Both trees train the
tiny model with rung.engine=ddp on 2 processes (torchrun, one thread each), alternating
baseline and current for --rounds rounds so load on the machine hits both alike; the median
step time after the first 5 steps is compared.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tree: Path, out: Path, name: str, steps: int) -> list[float]:
    over = [
        "rung=tiny",
        "tracker.mode=disabled",
        "trainer.eval_on_save=false",
        "trainer.save_initial=false",
        f"trainer.run_root={out}",
        f"trainer.run_name={name}",
        f"trainer.max_steps={steps}",
        f"trainer.save_every={steps}",
        "rung.engine=ddp",
        "rung.gpus_per_node=2",
        "trainer.log_every=1000",
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port()),
        "-m",
        "launch.train",
        *over,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(tree), WANDB_MODE="disabled")
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode:
        sys.exit(f"{tree}: training failed\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in open(out / name / "metrics.jsonl")]
    return [r["step_time_s"] for r in rows if "step_time_s" in r][5:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--baseline",
        default="HEAD",
        help="the git revision to compare with (default: the last commit)",
    )
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        base = Path(d) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), a.baseline],
            check=True,
            capture_output=True,
        )
        try:
            times: dict[str, list[float]] = {"baseline": [], "current": []}
            for r in range(a.rounds):
                for label, tree in (("baseline", base), ("current", ROOT)):
                    times[label] += run(tree, Path(d) / "runs", f"{label}{r}", a.steps)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                capture_output=True,
            )
    med = {k: statistics.median(v) for k, v in times.items()}
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", a.baseline], capture_output=True, text=True
    ).stdout.strip()
    print(f"tiny model, ddp on 2 CPU processes, {a.rounds} x {a.steps - 5} timed steps each")
    print(
        f"median step time: baseline ({rev}) {med['baseline'] * 1000:.1f} ms, current {med['current'] * 1000:.1f} ms,"
        f" ratio current/baseline {med['current'] / med['baseline']:.3f}"
    )


if __name__ == "__main__":
    main()
