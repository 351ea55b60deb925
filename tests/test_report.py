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


def row(run: str, step: int, point: str | None = None, averaged: int = 0) -> dict:
    """A registry checkpoint row as `ladder compare` reads it (evals/store/registry.py)."""
    cfg = {"sweep": {"point": point}, "trainer": {"seed": 0}}
    lineage = {"run_name": run, "averaged_from": [{"step": step}] * averaged} if averaged else None
    return {
        "run_name": run,
        "step": step,
        "config_json": json.dumps(cfg),
        "lineage": json.dumps(lineage) if lineage else None,
    }


def test_a_point_with_several_seeds_is_drawn_as_a_band_of_one_seed_sd(tmp_path):
    """Three seeds of lr-0 scoring 40, 50, 60 at step 10 give a band from 40 to 60 (mean 50, seed
    sd 10) around their mean; a point of one seed is a plain line; an average is a star (#26)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from evals.analysis.report import seed_band, step_curves

    seeds = [
        [(row(f"lr-0-s{i}", 5, "lr-0"), 20.0 + i), (row(f"lr-0-s{i}", 10, "lr-0"), 40.0 + 10 * i)]
        for i in range(3)
    ]
    assert seed_band(seeds) == [(5, 21.0, 1.0, 3), (10, 50.0, 10.0, 3)]
    single = [(row("lr-1", 5), 30.0), (row("lr-1", 10), 35.0)]
    fig, ax = plt.subplots()
    step_curves(ax, [*seeds, single], [(row("lr-1", 10, averaged=2), 37.0)])
    [band] = [c for c in ax.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    assert (ys.min(), ys.max()) == (20.0, 60.0) and band.get_label() == "± 1 seed sd"
    labels = [h.get_label() for h in ax.get_legend_handles_labels()[0]]
    assert labels[:3] == ["lr-0: mean of 3 seeds", "± 1 seed sd", "lr-1"]
    assert "lr-1: average of 2 checkpoints" in labels
    assert not [ln for ln in ax.lines if ln.get_label() == "lr-1" and 37.0 in ln.get_ydata()]
    plt.close(fig)
