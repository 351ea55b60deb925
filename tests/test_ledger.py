"""The SQLite ledger: concurrent writer processes lose nothing; used hours, final state and waste
come from the trainer's heartbeat file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch.accounting.ledger import Ledger, path_from_url
from training.common.errors import ConfigError
from training.run.heartbeat import FILE as HEARTBEAT

REPO = Path(__file__).resolve().parent.parent

WRITER = """
import sys, time
from launch.accounting.ledger import Ledger
db, writer, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
time.sleep(max(0.0, start - time.time()))  # all writers start together, on a ledger none has created
ledger = Ledger(db, busy_timeout_s=60)
for i in range(n):
    job = ledger.add_job(team=f"w{writer}", period="2026-01", rung="tiny", gpus=1, planned_gpu_hours=1.0,
                         run_name=f"{writer}-{i}")
    ledger.update_job(job, state="completed", used_gpu_hours=0.5)
"""


def test_concurrent_writer_processes_lose_no_record(tmp_path):
    db, writers, per_writer = tmp_path / "ledger.db", 8, 50
    start = time.time() + 3.0  # after every interpreter has started
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), str(w), str(per_writer), str(start)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    jobs = Ledger(db).jobs()
    assert len(jobs) == writers * per_writer
    assert sorted(j["run_name"] for j in jobs) == sorted(
        f"{w}-{i}" for w in range(writers) for i in range(per_writer)
    )
    assert len({j["id"] for j in jobs}) == len(jobs)
    assert all(
        j["state"] == "completed" and j["used_gpu_hours"] == 0.5 for j in jobs
    )  # no update lost either
    order = [j["team"] for j in sorted(jobs, key=lambda j: j["id"])]
    assert sum(a != b for a, b in zip(order, order[1:])) > writers  # the writers really interleaved
    mode = Ledger(db).query("PRAGMA journal_mode")[0]["journal_mode"]
    assert mode == "wal"


def write_heartbeat(run_dir: Path, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / HEARTBEAT).write_text(json.dumps(fields) + "\n")


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.db")


def started_job(ledger, run_dir: Path, t0: float, gpus: int = 4, hours_before: float = 0.0) -> int:
    job = ledger.add_job(
        team="t",
        period="2026-01",
        rung="8b",
        gpus=gpus,
        planned_gpu_hours=10.0,
        run_dir=str(run_dir),
        state="running",
    )
    ledger.update_job(job, started_at=t0, hours_before=hours_before)
    return job


def test_failed_run_wastes_the_hours_since_its_last_checkpoint(ledger, tmp_path):
    t0 = time.time() - 3 * 3600
    run = tmp_path / "failed"
    job = started_job(ledger, run, t0)
    write_heartbeat(
        run,
        state="failed",
        devices=4,
        device_hours=8.0,
        updated_at=t0 + 2 * 3600,
        last_checkpoint_at=t0 + 1.5 * 3600,
        reason="RuntimeError: NCCL timeout",
    )
    rec = ledger.finish_from_heartbeat(job, exit_code=1)
    assert rec["state"] == "failed" and rec["reason"] == "RuntimeError: NCCL timeout"
    assert rec["used_gpu_hours"] == pytest.approx(8.0)
    assert rec["waste_gpu_hours"] == pytest.approx(
        4 * 0.5
    )  # 4 GPUs x the half hour since the checkpoint


def test_preempted_resumed_run_counts_only_its_own_hours(ledger, tmp_path):
    t0 = time.time() - 3600
    run = tmp_path / "resumed"
    job = started_job(ledger, run, t0, hours_before=6.0)  # an earlier job of this run used 6 hours
    write_heartbeat(
        run,
        state="preempted",
        devices=4,
        device_hours=9.0,
        updated_at=t0 + 1800,
        last_checkpoint_at=t0 - 600,
    )  # its only checkpoint predates this job
    rec = ledger.finish_from_heartbeat(job, exit_code=75)
    assert rec["used_gpu_hours"] == pytest.approx(3.0)
    assert rec["waste_gpu_hours"] == pytest.approx(3.0)  # nothing this job did was saved


def test_completed_cancelled_and_killed_runs(ledger, tmp_path):
    t0 = time.time() - 3600
    for name, hb_state, kwargs, state, waste in [
        ("done", "completed", {}, "completed", 0.0),
        ("cancelled", "failed", {"cancelled": True}, "cancelled", 2.0),
        (
            "killed",
            "running",
            {"exit_code": -9},
            "failed",
            2.0,
        ),  # SIGKILL: the heartbeat still says running
    ]:
        run = tmp_path / name
        job = started_job(ledger, run, t0)
        write_heartbeat(
            run,
            state=hb_state,
            devices=4,
            device_hours=2.0,
            updated_at=t0 + 1800,
            last_checkpoint_at=None,
        )
        rec = ledger.finish_from_heartbeat(job, **kwargs)
        assert (rec["state"], rec["used_gpu_hours"], rec["waste_gpu_hours"]) == (
            state,
            2.0,
            waste,
        ), name
    assert "without a final heartbeat" in ledger.jobs()[-1]["reason"]


def test_measured_mfu_comes_from_the_runs_metrics(ledger, tmp_path):
    t0 = time.time() - 60
    run = tmp_path / "measured"
    job = started_job(ledger, run, t0)
    write_heartbeat(run, state="completed", devices=4, device_hours=0.1, updated_at=t0 + 30)
    (run / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": i, "mfu": m, "tokens_per_s": 1000.0 * i}) + "\n"
            for i, m in enumerate([0.1, 0.4, 0.3], 1)
        )
    )
    rec = ledger.finish_from_heartbeat(job)
    assert rec["mfu"] == pytest.approx(0.3) and rec["tokens_per_s"] == pytest.approx(2000.0)
    assert ledger.median_rate("8b", "mfu") == (pytest.approx(0.3), 1)


def test_ledger_urls():
    assert path_from_url("sqlite:///runs/ladder.db") == Path("runs/ladder.db")
    assert path_from_url("sqlite:////data/ladder.db") == Path("/data/ladder.db")
    assert path_from_url("runs/ladder.db") == Path("runs/ladder.db")
    with pytest.raises(ConfigError, match="is a server, not a SQLite file"):
        path_from_url("postgresql://ladder@host/ladder")
