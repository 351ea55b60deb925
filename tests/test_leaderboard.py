"""`ladder leaderboard` and `ladder compare` defaults (#28 item 9), in process on a real SQLite
registry holding scores (no model is built or evaluated: a leaderboard only reads the registry).

    .venv/bin/python -m pytest -q tests/test_leaderboard.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.store.cache import task_specs
from evals.store.registry import Registry
from launch.cli import main as ladder_main
from training.config.compose import compose

# A newcomer's registry after `make pipeline`: an SFT run scored at steps 0, 100 and 200, and a DPO
# run started from it, whose untrained step 0 (the SFT model) scores as well as the SFT run's end.
SCORES = {
    ("tiny-sft", 0): 5.0,
    ("tiny-sft", 100): 60.0,
    ("tiny-sft", 200): 70.0,
    ("tiny-dpo", 0): 70.0,
    ("tiny-dpo", 50): 65.0,
}


def scored_registry(root: Path, *overrides: str) -> None:
    """Checkpoint folders as runs leave them (meta and COMPLETE), registered with their scores."""
    cfg = compose([f"trainer.run_root={root}", *overrides])
    registry = Registry.from_config(cfg)
    for (run, step), score in SCORES.items():
        ckpt = root / run / "checkpoints" / f"step_{step:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "ladder_meta.json").write_text(json.dumps({"step": step, "run_name": run}))
        (ckpt / "COMPLETE").write_text("done\n")
        registry.register_checkpoint(ckpt, f"hash-{run}-{step}")
        for i, spec in enumerate(task_specs(cfg.eval)):
            registry.record_result(
                f"key-{run}-{step}-{spec.name}",
                f"hash-{run}-{step}",
                spec,
                {"metric": "exact_match", "score": score - i, "n": 100},
                root / "examples.json",
                cfg.eval.name,
            )


def leaderboard_rows(root: Path, capsys, *args: str) -> tuple[list[tuple[str, int]], str]:
    out = root / "lb.json"
    assert ladder_main(["leaderboard", f"trainer.run_root={root}", "--json", str(out), *args]) == 0
    rows = json.loads(out.read_text())["rows"]
    return [(r["run_name"], r["step"]) for r in rows], capsys.readouterr().out


def test_leaderboard_shows_each_runs_best_without_step_0_and_all_with_all(tmp_path, capsys):
    scored_registry(tmp_path)
    shown, printed = leaderboard_rows(tmp_path, capsys)
    assert shown == [("tiny-sft", 200), ("tiny-dpo", 50)]  # not tiny-dpo@0, the SFT model
    text = " ".join(printed.split())
    assert "not shown: 2 untrained step-0 checkpoint(s) and 1 other checkpoint(s)" in text
    assert "--all shows every checkpoint" in text
    shown, _ = leaderboard_rows(tmp_path, capsys, "--all")
    assert shown == [("tiny-dpo", 0), ("tiny-sft", 200), ("tiny-dpo", 50), ("tiny-sft", 100)] + [
        ("tiny-sft", 0)
    ]
    shown, _ = leaderboard_rows(tmp_path, capsys, "--top", "1")
    assert shown == [("tiny-sft", 200)]


def test_one_task_has_no_average_column_and_two_tasks_do(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    scored_registry(one)  # eval=synthetic: the reverse task only
    _, printed = leaderboard_rows(one, capsys)
    header = next(line for line in printed.splitlines() if "checkpoint" in line)
    assert "reverse" in header and "average" not in header
    assert "ranked by reverse" in printed
    both = ["eval=cpu", "eval.lm_eval.tasks=[]"]  # reverse and ifeval_lite
    scored_registry(two, *both)
    _, printed = leaderboard_rows(two, capsys, *both)
    header = next(line for line in printed.splitlines() if "checkpoint" in line)
    assert "average" in header and "ranked by the average over tasks" in printed


def test_leaderboard_help_shows_how_checkpoints_get_there(capsys):
    with pytest.raises(SystemExit) as e:
        ladder_main(["leaderboard", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "ladder train rung=tiny" in out and "--all" in out


def test_compare_with_one_checkpoint_says_it_needs_two(tmp_path, capsys):
    scored_registry(tmp_path)
    assert ladder_main(["compare", str(tmp_path / "tiny-sft"), f"trainer.run_root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "compare needs two checkpoints" in err and "step_000200" in err
