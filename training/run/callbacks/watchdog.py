"""The watchdog callback: a step, save or collective that hangs is reported and ends the process.

    ladder train rung=tiny trainer.step_timeout_s=600     # 0 disables it (training/run/watchdog.py)

Every process runs it. Each phase the trainer announces gets a new deadline; past it, every
thread's stack is dumped, the run is marked failed (the heartbeat) and the process exits with
status 124 instead of waiting forever. It stops when the run ends, however it ended.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys

from training.common.errors import EXIT_HUNG
from training.run.callbacks.base import Callback
from training.run.watchdog import SETUP_TIMEOUT_S, Watchdog

log = logging.getLogger("ladder.train")


class WatchdogCallback(Callback):
    every_rank = True  # a hung collective hangs every rank: each must report and exit

    def __init__(self) -> None:
        self.watchdog: Watchdog | None = None

    def on_phase(self, what: str, setup: bool) -> None:
        if self.watchdog is None:  # the first phase, start-up: before the process group exists
            self.watchdog = Watchdog(self.trainer.cfg.trainer.step_timeout_s, self.on_hang)
        self.watchdog.touch(what, setup=setup)

    def on_run_end(self, exit_code: int) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()

    def on_hang(self, what: str) -> None:
        step_limit = self.trainer.cfg.trainer.step_timeout_s
        limit = (
            f"trainer.step_timeout_s={step_limit:g} s"
            if self.watchdog.limit == step_limit
            else f"{self.watchdog.limit:g} s (a set-up phase's limit: the larger of trainer.step_timeout_s "
            f"and {SETUP_TIMEOUT_S:g} s)"
        )
        msg = f"{what} has run for more than {limit}; every thread's stack follows. Exiting instead of waiting forever."
        log.error(msg)
        faulthandler.dump_traceback(all_threads=True)
        self.trainer.callbacks.train_end("failed", msg)  # the heartbeat says so
        sys.stderr.flush()
        os._exit(EXIT_HUNG)
