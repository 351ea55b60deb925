"""Team budgets: a launch over budget is refused with what is left and by how much; an override is
recorded with its reason; `ladder budget report` shows the right numbers. Allocations are set in
the ledger (`ladder budget set`), never by a job's config."""

from __future__ import annotations

import re
import time

import pytest
from conftest import FAST, ladder_cli

from launch.accounting.budget import check_and_record, period_key, report_rows
from launch.accounting.ledger import Ledger
from launch.cli import main as ladder_main
from training.common.errors import BudgetError
from training.config.compose import compose

JOB = dict(rung="8b", gpus=8, project="p", sweep=None)


def test_check_refuses_over_budget_and_records_an_override(tmp_path):
    cfg = compose([f"trainer.run_root={tmp_path}"])
    ledger = Ledger.from_config(cfg)
    allocate(ledger, 100.0)
    check_and_record(ledger, cfg.budget, 60.0, JOB)
    with pytest.raises(BudgetError) as e:
        check_and_record(ledger, cfg.budget, 50.0, JOB)
    msg = str(e.value)
    assert "plans 50.0 GPU-hours" in msg and "40.0 of its 100.0 GPU-hours left" in msg
    assert "over by 10.0" in msg and "--override-budget" in msg
    assert len(ledger.jobs()) == 1  # nothing recorded for the refused job
    with pytest.raises(BudgetError, match="needs a reason"):
        check_and_record(ledger, cfg.budget, 50.0, JOB, override_reason="  ")
    job = check_and_record(
        ledger, cfg.budget, 50.0, JOB, override_reason="paper deadline, approved by J."
    )
    assert ledger.job(job)["override_reason"] == "paper deadline, approved by J."
    assert ledger.job(job)["period"] == period_key("month")


def test_launch_over_budget_is_refused_then_runs_with_an_override(tmp_path, monkeypatch, capsys):
    args = ["launch", *FAST, "trainer.max_steps=2", "trainer.save_every=2"]
    allocate(Ledger(tmp_path / "runs" / "ladder.db"), 0.00001)
    proc = ladder_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert (
        "over budget" in proc.stderr
        and "it is over by" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    assert not (tmp_path / "runs" / "tiny-sft-reverse").exists()  # nothing ran

    proc = ladder_cli(*args, "--override-budget", "CI smoke test", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [job] = Ledger(tmp_path / "runs" / "ladder.db").jobs()
    assert job["override_reason"] == "CI smoke test"
    assert job["state"] == "completed" and job["waste_gpu_hours"] == 0.0
    assert job["used_gpu_hours"] > 0 and job["planned_gpu_hours"] > 0 and job["gpus"] == 1
    assert job["team"] == "default" and job["rung"] == "tiny" and len(job["config_hash"]) == 16
    assert job["run_dir"] == str(tmp_path / "runs" / "tiny-sft-reverse")
    assert job["tokens_per_s"] > 0  # measured, for the next plan of this rung
    assert job["overhead_s"] > 0  # and what it was charged beyond its steps (#28 item 3)
    assert f"job {job['id']} completed" in proc.stdout

    # a dry run says what the budget check would say, against the ledger as it is, recording
    # nothing; in this process (the CLI's main, from the same directory): two more CLI processes
    # would cost ~7 s of CPU each for what the refused and the real launch above already start
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert ladder_main([*args, "trainer.run_name=dry", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "budget: would be REFUSED: over budget" in dry and "over by" in dry
    allocate(Ledger(tmp_path / "runs" / "ladder.db"), 10000.0)
    roomy = ["launch", *FAST, "trainer.max_steps=2", "trainer.run_name=dry", "--dry-run"]
    assert ladder_main(roomy) == 0
    out, err = capsys.readouterr()
    assert "budget: would pass: team 'default' has" in out, out + err
    assert len(Ledger(tmp_path / "runs" / "ladder.db").jobs()) == 1


def allocate(ledger: Ledger, gpu_hours: float, team: str = "default") -> None:
    with ledger.transaction() as db:
        ledger.set_budget(db, team, "month", gpu_hours)


def fill(ledger: Ledger, now: float) -> None:
    this = period_key("month", now)
    rows = [  # team, period, state, planned, used, waste, mfu
        ("default", this, "completed", 10.0, 8.0, 0.0, 0.4),
        ("default", this, "failed", 20.0, 6.0, 1.5, 0.2),
        ("default", this, "cancelled", 5.0, 2.0, 2.0, None),
        ("default", this, "running", 30.0, 4.0, 0.0, None),
        ("default", "2020-01", "completed", 7.0, 7.0, 0.0, None),
        ("other", this, "completed", 3.0, 3.0, 0.0, 0.5),
    ]
    for team, period, state, planned, used, waste, mfu in rows:
        ledger.add_job(
            team=team,
            period=period,
            rung="8b",
            gpus=8,
            planned_gpu_hours=planned,
            state=state,
            used_gpu_hours=used,
            waste_gpu_hours=waste,
            mfu=mfu,
        )


def test_budget_report_numbers(tmp_path):
    now = time.time()
    ledger = Ledger(tmp_path / "runs" / "ladder.db")
    fill(ledger, now)
    allocate(ledger, 100.0)
    rows = {(r.team, r.period): r for r in report_rows(ledger, 2.0)}
    r = rows[("default", period_key("month", now))]
    assert (r.allocated, r.jobs, r.used, r.running, r.wasted) == (100.0, 4, 20.0, 30.0, 3.5)
    assert r.useful == pytest.approx(8 * 0.4 + 6 * 0.2)
    assert r.left == pytest.approx(100 - (8 + 6 + 2) - 30)  # the running job holds its whole plan
    assert (
        rows[("other", period_key("month", now))].allocated is None
    )  # a team without an allocation

    plot = tmp_path / "budget.png"
    proc = ladder_cli("budget", "report", "--plot", str(plot), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next(
        row
        for row in proc.stdout.splitlines()
        if re.search(rf"default\s.*{period_key('month', now)}", row)
    )
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    assert cells == [
        "default",
        period_key("month", now),
        "4",
        "100.0",
        "20.0",
        "0.0",
        "30.0",
        "3.5",
        "4.4",
        "54.0",
        "46%",
        "$40.0",
    ]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the legend says what the hours are: eval jobs on any launcher, CPU rungs' hours not GPUs'
    legend = " ".join(proc.stdout.split())
    assert "SLURM eval jobs" not in legend and "--pending` on any launcher" in legend
    assert "process-hours for the CPU rungs" in legend
