"""The run's heartbeat: <run_dir>/heartbeat.json, rewritten atomically after every step.

Launchers and the ledger read it to learn a job's progress and the device-hours it used; the
trainer knows nothing about them. Fields:
  state            running | completed | failed | preempted | interrupted (Ctrl-C)
  step, max_steps, loss, mfu
  started_at, updated_at   unix seconds
  devices          processes x devices in the job (world size)
  device_hours     devices x wall-clock hours since this process started, summed over restarts
  last_checkpoint_step, last_checkpoint_at
  reason           why the run failed or stopped, when it did
  segment_started_at   when this process (this segment of a resumed run) started
  segment_hours_before, segment_start_step   device_hours and the step when it started: the
                   ledger tells a job's one segment from a requeued job's last, and which steps
                   were this segment's (launch/accounting/overhead.py)
  host, pid, process_start   which process writes it: `ladder status` tells a live run from a dead
                   one by these, even when its launcher died before it could record the PID
                   (launch/accounting/reconcile.py); process_start is <boot id>:<ticks since boot>
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from training.common.safe_files import read_text, write_atomic

FILE = "heartbeat.json"


class Heartbeat:
    def __init__(self, run_dir: Path, devices: int, max_steps: int, enabled: bool = True):
        self.path = Path(run_dir) / FILE
        self.enabled = enabled
        prev = read_heartbeat(run_dir) or {}
        self.carried_hours = float(
            prev.get("device_hours", 0.0)
        )  # from earlier segments of a resumed run
        self.started = time.time()
        self.state = {
            "state": "running",
            "step": prev.get("step", 0),
            "max_steps": max_steps,
            "loss": None,
            "mfu": None,
            "started_at": prev.get("started_at", self.started),
            "devices": devices,
            "device_hours": self.carried_hours,
            "last_checkpoint_step": prev.get("last_checkpoint_step"),
            "last_checkpoint_at": prev.get("last_checkpoint_at"),
            "reason": None,
            "segment_started_at": self.started,
            "segment_hours_before": self.carried_hours,
            "segment_start_step": prev.get("step", 0),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": process_start(os.getpid()),
        }

    def update(self, **fields) -> None:
        self.state.update(fields)
        now = time.time()
        self.state["updated_at"] = now
        self.state["device_hours"] = (
            self.carried_hours + self.state["devices"] * (now - self.started) / 3600
        )
        if not self.enabled:
            return
        write_atomic(
            self.path, json.dumps(self.state) + "\n"
        )  # a link planted there is replaced, not followed


def process_start(pid: int | str | None) -> str | None:
    """<boot id>:<start time in clock ticks since boot> of a live process (Linux /proc), or None
    (no such process, or no /proc). A PID is reused once its process ends; this pair is not."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except (OSError, TypeError, ValueError):
        return None
    fields = stat.rpartition(")")[
        2
    ].split()  # after the command name, which may hold spaces and ')'
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None  # field 22 of proc(5): starttime


def read_heartbeat(run_dir: Path) -> dict | None:
    path = Path(run_dir) / FILE
    try:
        return json.loads(read_text(path))  # O_NOFOLLOW: a link there reads as no heartbeat
    except (OSError, json.JSONDecodeError):
        return None


if __name__ == "__main__":  # `python -m training.run.heartbeat RUN_DIR FIELD`: for launcher scripts
    import sys

    hb = read_heartbeat(Path(sys.argv[1])) or {}
    print(hb.get(sys.argv[2], "") if len(sys.argv) > 2 else json.dumps(hb))
