"""The trainer's callbacks (training/run/callbacks/base.py has the hooks), and its default list.

    Trainer(cfg, callbacks=[EvalOnSave()])     # the defaults below, then these (launch/train.py)

The defaults are ordered: metrics.jsonl gets a step before W&B and the heartbeat, and the
tracker starts before the heartbeat, which shows its link.
"""

from __future__ import annotations

from training.run.callbacks.base import Callback, Callbacks, EndState
from training.run.callbacks.heartbeat import HeartbeatCallback
from training.run.callbacks.metrics_file import MetricsFileCallback
from training.run.callbacks.progress import ProgressCallback
from training.run.callbacks.tracker import TrackerCallback
from training.run.callbacks.watchdog import WatchdogCallback

__all__ = ["Callback", "Callbacks", "EndState", "default_callbacks"]


def default_callbacks() -> list[Callback]:
    tracker = TrackerCallback()
    return [
        WatchdogCallback(),
        MetricsFileCallback(),
        tracker,
        HeartbeatCallback(tracker),
        ProgressCallback(),
    ]
