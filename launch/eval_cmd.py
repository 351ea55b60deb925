"""`ladder eval CHECKPOINT [overrides]`: score a checkpoint and log it where the run logs.

The scores go to <checkpoint>/eval/<suite>.json, to the terminal as a table, and to the
checkpoint's own W&B run (same run id) against the checkpoint's step.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from evals.runner import evaluate_checkpoint
from training.checkpoint import check_checkpoint, step_of
from training.compose import compose
from training.tracking import Tracker


def run_eval(checkpoint: str, overrides: list[str]) -> dict:
    ckpt = check_checkpoint(checkpoint)
    cfg = compose(overrides)
    result = evaluate_checkpoint(ckpt, cfg.eval)
    run_cfg_file = ckpt / "ladder_config.yaml"
    run_dir = ckpt.parent.parent
    if run_cfg_file.exists() and cfg.tracker.mode.value != "disabled":
        run_cfg = compose_from_file(run_cfg_file, cfg)
        tracker = Tracker(run_cfg, run_dir, job_type="eval")
        tracker.log_eval(step_of(ckpt), result["scores"])
        tracker.finish()
    table = Table(title=f"eval suite {cfg.eval.name!r}, checkpoint step {step_of(ckpt)}")
    table.add_column("task")
    table.add_column("score", justify="right")
    for k, v in result["scores"].items():
        table.add_row(k, f"{v:.1f}")
    console = Console()
    console.print(table)
    console.print(f"results: {result['path']}")
    return result


def compose_from_file(path: Path, current):
    """The run's own saved config, with this command's tracker settings."""
    from training.schema import LadderConfig
    saved = OmegaConf.load(path)
    merged = OmegaConf.merge(OmegaConf.structured(LadderConfig), saved)
    merged.tracker = current.tracker
    return merged
