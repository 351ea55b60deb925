"""Training jobs do not hold their devices for evaluations (issue #13 item 3): the run hands its
unfinished evaluations to eval jobs of their own, recorded in the ledger as kind `eval`.

    .venv/bin/python -m pytest -q tests/test_eval_handoff.py
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import FAST


def test_a_local_launch_records_training_until_training_ends_and_evaluates_in_eval_jobs(
    tmp_path, monkeypatch
):
    from launch.accounting.ledger import Ledger
    from launch.commands.launch_cmd import launch
    from training.run.heartbeat import read_heartbeat

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    code, _ = launch(
        [
            *FAST,
            f"trainer.run_root={runs}",
            "trainer.run_name=h",
            "trainer.eval_on_save=true",
            "trainer.max_steps=4",
            "trainer.save_every=2",
            "eval.max_examples=16",
            "data.max_samples=256",
        ]
    )
    assert code == 0
    run_dir = runs / "h"
    jobs = Ledger(runs / "ladder.db").jobs()
    [train] = [j for j in jobs if j["kind"] == "train"]
    evals = [j for j in jobs if j["kind"] == "eval"]
    assert train["state"] == "completed"
    # The training job is charged until its last heartbeat, which is written when training ends:
    # no eval ran inside it (the step-4 checkpoint was saved at the very end, so it was left over).
    hb = read_heartbeat(run_dir)
    assert hb["state"] == "completed" and train["used_gpu_hours"] == hb["device_hours"]
    assert evals and all(
        e["state"] == "completed"
        and e["launcher"] == "local"
        and e["used_gpu_hours"] > 0
        and e["team"] == train["team"]
        for e in evals
    )
    assert all(e["started_at"] >= train["finished_at"] for e in evals)
    assert any(e["run_name"].endswith("h@4") for e in evals)
    assert not (run_dir / "pending_evals.json").exists()  # handed on and done
    for e in evals:  # each eval job scored its checkpoint
        result = json.loads((Path(e["run_dir"]) / "eval" / "synthetic.json").read_text())
        assert result["tasks"]["reverse"]["n"] == 16


def test_the_slurm_script_hands_the_evaluations_to_slurm_eval_jobs(tmp_path):
    from launch.cluster.slurm_script import EVAL, Point, render
    from training.config.compose import compose

    cfg = compose(["rung=tiny", "launcher=slurm", f"trainer.run_root={tmp_path / 'runs'}"])
    point = [Point(tmp_path / "runs" / "r", ["launcher=slurm"])]
    script = render(cfg, point, name="r", log_dir=tmp_path / "logs", submit_dir=tmp_path)
    srun = next(line for line in script.splitlines() if '"${overrides[@]}"' in line and "&" in line)
    assert srun.endswith('"${overrides[@]}" trainer.eval_handoff=true &')
    assert '-m launch.cli eval --pending "$run_dir" "${overrides[@]}"' in script
    assert script.index("eval --pending") < script.index('exit "$status"')
    assert (
        subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    )  # the script parses
    # an eval job's own script hands nothing off
    ev = render(cfg, point, name="e", log_dir=tmp_path / "logs", submit_dir=tmp_path, entry=EVAL)
    assert "--pending" not in ev and "eval_handoff" not in ev
