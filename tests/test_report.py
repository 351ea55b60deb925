"""The compare report's training figures: one per recipe, each with the headline metrics its
recipe declares, so a DPO or GRPO loss never shares an axis with SFT's (issue #28 item 11)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import yaml

from evals.analysis.report import training_figures


def fake_run(root: Path, name: str, loss: str, rows: list[dict], recipe: str = "sft") -> Path:
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"recipe": {"name": recipe, "loss": loss}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_each_recipe_gets_its_own_figure_with_its_headline_metrics(tmp_path):
    steps = range(1, 6)
    runs = [
        fake_run(tmp_path, "sft-a", "sft", [{"step": s, "loss": 2.0 / s} for s in steps]),
        fake_run(tmp_path, "sft-b", "sft", [{"step": s, "loss": 3.0 / s} for s in steps]),
        fake_run(
            tmp_path,
            "dpo",
            "dpo_sigmoid",
            [
                {
                    "step": s,
                    "loss": 0.69 - s / 100,
                    "rewards/margin": s / 10,
                    "rewards/accuracy": 0.5,
                }
                for s in steps
            ],
            recipe="dpo",
        ),
        fake_run(
            tmp_path,
            "grpo",
            "dr_grpo",
            [
                {
                    "step": s,
                    "loss": 0.0,
                    "reward_mean": 0.15 + s / 10,
                    "response_len_mean": 12.0,
                    "gen_time_s": 0.9,
                    "step_time_s": 1.0,
                }
                for s in steps
            ],
            recipe="grpo",
        ),
    ]
    figures = dict(training_figures(runs))
    assert list(figures) == [
        "SFT runs: loss",
        "DPO runs: loss, margin, acc",
        "GRPO runs: reward, len, gen",  # no kl: these runs had kl_beta = 0
    ]
    for png in figures.values():
        assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_without_a_readable_config_is_drawn_as_sft(tmp_path):
    run = fake_run(tmp_path, "odd", "sft", [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}])
    (run / "config.yaml").write_text("recipe: [unclosed\n")
    assert [t for t, _ in training_figures([run])] == ["SFT runs: loss"]


def test_a_run_folder_named_with_dollars_is_drawn_not_read_as_mathtext(tmp_path):
    run = fake_run(tmp_path, "x$^$y", "sft", [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}])
    assert [t for t, _ in training_figures([run])] == ["SFT runs: loss"]
