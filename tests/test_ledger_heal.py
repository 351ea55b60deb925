"""Issue #22 item 1 and #28 item 1: a ledger that converges to the truth after any single kill or
outage, on SQLite and on a real PostgreSQL server, and every `ladder train` recorded in it.

    .venv/bin/python -m pytest -q tests/test_ledger_heal.py      # -m "not postgres": SQLite only

A kill -9 at each step of a launch is simulated by writing the ledger rows and run-folder files
that kill would leave (a real dead PID: a `sleep` that was killed), then one `ladder status`, in
process, must record what the run's files say.
"""

from __future__ import annotations

import json

from conftest import FAST

from launch.accounting.ledger import Ledger
from launch.cli import main


def test_ladder_train_is_recorded_in_the_local_ledger_and_shown_by_status_and_report(
    tmp_path, capsys
):
    root = f"trainer.run_root={tmp_path}"
    assert main(["train", *FAST, "trainer.max_steps=1", "data.max_samples=64", root]) == 0
    [job] = Ledger(tmp_path / "ladder.db").jobs()
    assert (job["launcher"], job["kind"], job["state"]) == ("direct", "train", "completed")
    assert job["used_gpu_hours"] > 0 and job["run_dir"] == str(tmp_path / "tiny-sft-reverse")
    capsys.readouterr()
    assert main(["status", "--json", root]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["job"], row["state"], row["used_gpu_hours"]) == (
        job["id"],
        "completed",
        job["used_gpu_hours"],
    )
    assert main(["budget", "report", root]) == 0
    report = capsys.readouterr().out
    assert "│ default │" in report and "│    1 │" in report  # one job charged to the team
