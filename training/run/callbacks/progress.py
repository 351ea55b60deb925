"""The progress callback: a bar on a terminal, a log line every trainer.log_every steps otherwise.

ladder train rung=tiny                   # the bar (training/run/progress.py)
"""

from __future__ import annotations

import logging

from training.run.callbacks.base import Callback
from training.run.progress import StepProgress


class ProgressCallback(Callback):
    def __init__(self) -> None:
        self.progress: StepProgress | None = None

    def on_run_start(self) -> None:
        t = self.trainer
        self.progress = StepProgress(
            t.cfg.trainer.max_steps,
            t.start_step,
            t.cfg.trainer.log_every,
            logging.getLogger("ladder.train"),  # the step lines are the trainer's
            headline=t.recipe.headline,  # what the recipe's steps are judged by
        )

    def on_step_end(self, step: int, metrics: dict) -> None:
        self.progress.update(metrics)

    def on_run_end(self, exit_code: int) -> None:
        if self.progress is not None:
            self.progress.close()
