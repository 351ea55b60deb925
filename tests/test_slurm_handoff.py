"""On SLURM, a training job's allocation ends with training: its unfinished evaluations become
SLURM eval jobs of their own, submitted by the batch script (issue #13 item 3).

    .venv/bin/python -m pytest -q tests/test_slurm_handoff.py      # starts the test cluster (tests/cluster/)
"""

from __future__ import annotations

import json

import pytest
from test_slurm import TINY, launch

pytestmark = pytest.mark.slurm


def test_a_slurm_training_job_hands_its_evaluations_to_slurm_eval_jobs(slurm_cluster, tmp_path):
    from launch.accounting.ledger import Ledger
    from launch.commands.status_cmd import wait_for

    overrides = [o for o in TINY if not o.startswith("trainer.eval_on_save=")]
    proc = launch(
        tmp_path,
        *overrides,
        "--wait",
        "trainer.eval_on_save=true",
        "trainer.run_name=handoff",
        "trainer.max_steps=4",
        "trainer.save_every=2",
        "eval.max_examples=8",
        "data.max_samples=256",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = tmp_path / "runs" / "handoff"
    ledger = Ledger(tmp_path / "runs" / "ladder.db")
    [train] = [j for j in ledger.jobs() if j["kind"] == "train"]
    assert train["state"] == "completed"
    evals = [j for j in ledger.jobs() if j["kind"] == "eval"]
    assert evals, (
        run_dir / "pending_evals.json"
    ).exists()  # submitted by the training job's script
    finals = wait_for(ledger, [e["id"] for e in evals], timeout_s=300)
    assert all(
        f["state"] == "completed" and f["launcher"] == "slurm" and f["external_id"] for f in finals
    ), finals
    # the training allocation did not wait for them: it ended before any of them did
    assert all(f["finished_at"] > train["finished_at"] for f in finals)
    assert not (run_dir / "pending_evals.json").exists()
    last = run_dir / "checkpoints" / "step_000004"
    assert json.loads((last / "eval" / "synthetic.json").read_text())["tasks"]["reverse"]["n"] == 8
