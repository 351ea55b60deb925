"""#28 item 3: a plan adds a job's fixed cost (start-up and wrap-up) to its time and GPU-hours: the
median measured on completed jobs of the rung in a real SQLite ledger, else the rung's default.
The ledger measures it when a job finishes, from the run's heartbeat and metrics.jsonl."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from launch.accounting.ledger import SCHEMA_VERSION, Ledger
from launch.planning.plan import make_plan, render
from training.common.errors import ConfigError
from training.config.compose import compose

ROOT = Path(__file__).resolve().parents[1]


def tiny(tmp_path, *extra):
    return compose(["rung=tiny", "trainer.max_steps=2", f"trainer.run_root={tmp_path}", *extra])


def rendered(plan) -> str:
    out = io.StringIO()
    render(plan, Console(file=out, width=200))
    return out.getvalue()


def steps_seconds(plan) -> float:  # the tiny rung plans by tokens/s (no peak FLOP/s on a CPU)
    return plan.tokens / (plan.gpus * plan.rate)


def test_without_history_the_plan_adds_the_rungs_default_on_its_own_line(tmp_path):
    cfg = tiny(tmp_path)
    plan = make_plan(cfg, Ledger.existing(cfg))  # no ledger file yet
    ov = plan.overhead
    assert ov.seconds == cfg.rung.assumed_overhead_s == 6.0 and ov.jobs == 0
    assert plan.wall_clock_h * 3600 == pytest.approx(steps_seconds(plan) + 6.0)
    assert plan.gpu_hours == pytest.approx(plan.wall_clock_h) and ov.gpu_hours == 6.0 / 3600
    out = json.loads(json.dumps(plan.to_json()))["overhead"]
    assert out["seconds"] == 6.0 and out["jobs"] == 0 and "rung default" in out["source"]
    [line] = [x for x in rendered(plan).splitlines() if "start-up and wrap-up" in x[:30]]
    assert "~6 s" in line and "rung default (rung.assumed_overhead_s)" in line
    # a GPU rung's default counts for every GPU of the job
    big = make_plan(compose(["rung=70b", f"trainer.run_root={tmp_path}"]))
    assert big.overhead.gpu_hours == pytest.approx(64 * big.overhead.seconds / 3600)
    with pytest.raises(ConfigError, match=r"rung.assumed_overhead_s=-1.0 must be in \[0, inf\)"):
        make_plan(tiny(tmp_path, "rung.assumed_overhead_s=-1"))


def test_every_rung_says_its_own_default():
    for path in sorted((ROOT / "configs" / "rung").glob("*.yaml")):
        assert isinstance(yaml.safe_load(path.read_text()).get("assumed_overhead_s"), float), path


def test_the_plan_uses_the_median_over_completed_jobs_of_the_rung(tmp_path):
    cfg = tiny(tmp_path)
    ledger = Ledger.from_config(cfg)  # runs/ladder.db under tmp_path: a real SQLite file
    common = dict(team="t", period="2026-12", gpus=1, planned_gpu_hours=0.001)
    for seconds in (4.0, 10.0, 30.0):
        ledger.add_job(**common, rung="tiny", state="completed", overhead_s=seconds)
    ledger.add_job(**common, rung="tiny", state="completed")  # not measured: not counted
    ledger.add_job(**common, rung="tiny", state="failed", overhead_s=500.0)
    ledger.add_job(**common, rung="tiny", state="completed", overhead_s=700.0, kind="eval")
    ledger.add_job(**common, rung="tiny_wide", state="completed", overhead_s=900.0)
    plan = make_plan(cfg, Ledger.existing(cfg))
    assert (plan.overhead.seconds, plan.overhead.jobs) == (10.0, 3)
    assert plan.wall_clock_h * 3600 == pytest.approx(steps_seconds(plan) + 10.0)
    [line] = [x for x in rendered(plan).splitlines() if "start-up and wrap-up" in x[:30]]
    assert "~10 s" in line and "median of 3 past tiny jobs in the ledger" in line
    assert plan.to_json()["overhead"]["source"] == "median of 3 past tiny jobs in the ledger"


def plant_run(run_dir: Path, rows: list[tuple[float, float]], hb: dict) -> None:
    """metrics.jsonl with (tokens/s, step seconds) per step, and a final heartbeat."""
    run_dir.mkdir(parents=True)
    lines = [
        json.dumps({"step": i, "tokens_per_s": tok_s, "step_time_s": s, "mfu": None})
        for i, (tok_s, s) in enumerate(rows, start=1)
    ]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    now = time.time()
    hb = {"state": "completed", "devices": 1, "updated_at": now, "segment_started_at": now, **hb}
    (run_dir / "heartbeat.json").write_text(json.dumps(hb))


def finished(ledger: Ledger, run_dir: Path, hours_before: float = 0.0) -> dict:
    job = ledger.add_job(
        team="t",
        period="2026-12",
        rung="tiny",
        gpus=1,
        planned_gpu_hours=0.001,
        run_dir=str(run_dir),
        state="running",
        started_at=time.time() - 60,
        hours_before=hours_before,
    )
    return ledger.finish_from_heartbeat(job, exit_code=0)


def test_a_completed_job_records_what_it_was_charged_beyond_its_steps(tmp_path):
    ledger = Ledger(tmp_path / "ladder.db")
    # a slow first step (2,000 tokens in 10 s), then 2,000 tokens in 2 s twice: the median rate is
    # 1,000 tokens/s, at which its 6,000 tokens take 6 s; it was charged 20 s: 14 s beyond its steps
    slow_start = [(200.0, 10.0), (1000.0, 2.0), (1000.0, 2.0)]
    one = {"device_hours": 20 / 3600, "segment_hours_before": 0.0, "segment_start_step": 0}
    plant_run(tmp_path / "a", slow_start, one)
    job = finished(ledger, tmp_path / "a")
    assert job["state"] == "completed" and job["overhead_s"] == pytest.approx(14.0)
    # a resumed run: only this segment's steps (2 and 3: 4 s) against this job's 10 s
    resumed = {"device_hours": 0.01 + 10 / 3600, "segment_hours_before": 0.01}
    plant_run(tmp_path / "b", slow_start, {**resumed, "segment_start_step": 1})
    assert finished(ledger, tmp_path / "b", hours_before=0.01)["overhead_s"] == pytest.approx(6.0)
    # not measured: a requeued job (charged for a segment before this heartbeat's), a failed
    # job, and a heartbeat written before the trainer recorded its segment
    plant_run(tmp_path / "c", slow_start, {**resumed, "segment_start_step": 1})
    assert finished(ledger, tmp_path / "c", hours_before=0.0)["overhead_s"] is None
    plant_run(tmp_path / "d", slow_start, {**one, "state": "failed"})
    assert finished(ledger, tmp_path / "d")["overhead_s"] is None
    plant_run(tmp_path / "e", slow_start, {"device_hours": 20 / 3600})
    assert finished(ledger, tmp_path / "e")["overhead_s"] is None
    # and the next plan of the rung uses them: the median of 14 and 6
    cfg = tiny(tmp_path, f"ledger.url=sqlite:///{tmp_path / 'ladder.db'}")
    assert make_plan(cfg, Ledger.existing(cfg)).overhead.seconds == pytest.approx(10.0)


def test_a_version_12_ledger_gains_the_column_and_keeps_its_jobs(tmp_path):
    path = tmp_path / "ladder.db"
    ledger = Ledger(path)
    old = ledger.add_job(
        team="t", period="2026-12", rung="tiny", gpus=1, planned_gpu_hours=0.5, state="completed"
    )
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE jobs DROP COLUMN overhead_s")
        db.execute("UPDATE ladder_schema SET version = 12 WHERE component = 'ledger'")
    ledger = Ledger(path)
    assert ledger.schema_version() == SCHEMA_VERSION == 13
    assert ledger.job(old)["overhead_s"] is None and ledger.job(old)["planned_gpu_hours"] == 0.5
