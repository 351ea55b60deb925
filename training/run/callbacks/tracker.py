"""The W&B callback: steps, checkpoints (as artifact references) and eval scores go to the tracker.

    ladder train rung=tiny tracker.mode=online     # offline by default (training/run/tracking.py)

It also says where to look at the run (link): its W&B page, or the offline run's folder until
`wandb sync`; the heartbeat callback shows that link to `ladder status`.
"""

from __future__ import annotations

from pathlib import Path

from training.run.callbacks.base import Callback
from training.run.tracking import Tracker


class TrackerCallback(Callback):
    def __init__(self) -> None:
        self.tracker: Tracker | None = None

    @property
    def link(self) -> str | None:
        t = self.tracker
        if t is None:
            return None
        return t.url or (str(Path(t.run_path).parent) if t.run_path else None)

    def on_run_start(self) -> None:
        self.tracker = Tracker(self.trainer.cfg, self.trainer.run_dir)
        self.trainer.result.wandb_dir = self.tracker.run_path

    def on_step_end(self, step: int, metrics: dict) -> None:
        self.tracker.log_step(step, metrics)

    def on_checkpoint_saved(self, step: int, ckpt: Path, url: str | None) -> None:
        self.tracker.log_checkpoint(ckpt, step, url=url)

    def on_eval(self, step: int, ckpt: Path, result: dict) -> None:
        if Path(ckpt).resolve() == self.trainer.result.average:  # trainer.average_last's
            self.tracker.log_eval(step, result["scores"], prefix="eval_average")
            return  # not step `step`'s checkpoint: neither its curve point nor its artifact
        self.tracker.log_eval(step, result["scores"])
        self.tracker.link_eval(ckpt, step, result)

    def on_run_end(self, exit_code: int) -> None:
        if self.tracker is not None:  # after the last evaluations were logged to it
            self.tracker.finish(exit_code)
