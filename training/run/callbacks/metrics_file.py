"""The metrics.jsonl callback: one line per optimizer step (training/run/metrics.py has the fields).

    Trainer(cfg).run()      # on by default (training/run/callbacks/__init__.py)

A resumed run redoes the steps after its checkpoint, so their lines are dropped at run start.
"""

from __future__ import annotations

from training.run.callbacks.base import Callback
from training.run.metrics import MetricsFile


class MetricsFileCallback(Callback):
    def __init__(self) -> None:
        self.metrics: MetricsFile | None = None

    def on_run_start(self) -> None:
        self.metrics = MetricsFile(self.trainer.run_dir / "metrics.jsonl")
        self.metrics.truncate_after(
            self.trainer.start_step
        )  # steps after the checkpoint are redone

    def on_step_end(self, step: int, metrics: dict) -> None:
        self.metrics.append(metrics)
