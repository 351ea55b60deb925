"""The heartbeat callback: <run_dir>/heartbeat.json (training/run/heartbeat.py) kept current.

    ladder status                   # reads it: state, step, loss, MFU, device-hours, W&B link

It writes the step, loss, MFU and RL's generation share after every step, the last checkpoint,
and the run's end state: completed as soon as training is (before the last evaluations, so the
job's hours end with training), preempted, or failed with its reason (a hang included).
"""

from __future__ import annotations

import time
from pathlib import Path

from training.recipes.headline import generation_share
from training.run.callbacks.base import Callback, EndState
from training.run.callbacks.tracker import TrackerCallback
from training.run.heartbeat import Heartbeat


class HeartbeatCallback(Callback):
    def __init__(self, tracker: TrackerCallback | None = None):
        self.tracker = tracker  # started before this one: its link goes into the heartbeat
        self.heartbeat: Heartbeat | None = None

    def on_run_start(self) -> None:
        t = self.trainer
        self.heartbeat = Heartbeat(t.run_dir, t.world.size, t.cfg.trainer.max_steps)
        link = self.tracker.link if self.tracker is not None else None
        self.heartbeat.update(step=t.start_step, segment_start_step=t.start_step, tracker_url=link)

    def on_step_end(self, step: int, metrics: dict) -> None:
        m = metrics
        # RL: the share of the step spent generating, shown by `ladder status`
        share = generation_share(m)
        self.heartbeat.update(step=step, loss=m["loss"], mfu=m["mfu"], gen_share=share)

    def on_checkpoint_saved(self, step: int, ckpt: Path, url: str | None) -> None:
        self.heartbeat.update(last_checkpoint_step=step, last_checkpoint_at=time.time())

    def on_train_end(self, state: EndState, reason: str | None) -> None:
        if self.heartbeat is not None:  # None: the run failed (or hung) in set-up
            self.heartbeat.update(state=state, **({"reason": reason} if reason else {}))
