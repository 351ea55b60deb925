"""The step watchdog: a step, save or collective that hangs is reported and ends the process.

    watchdog = Watchdog(cfg.trainer.step_timeout_s, on_hang)   # on_hang(what) dumps stacks and exits
    watchdog.touch("step 12")                                  # a new phase, a new deadline
    watchdog.touch("saving step 12", setup=True)               # set-up phases get at least SETUP_TIMEOUT_S
    watchdog.stop()                                            # the run is over, however it ended

Used by the trainer's watchdog callback (training/run/callbacks/watchdog.py: on_hang reports and
exits with status 124).
"""

from __future__ import annotations

import threading
import time

SETUP_TIMEOUT_S = 600.0  # the least a set-up phase gets: loading a large checkpoint is not a step


class Watchdog:
    """Reports a step (or a set-up phase) that runs past its time limit and ends the process.
    Steps get trainer.step_timeout_s; set-up phases at least SETUP_TIMEOUT_S, so a short step
    limit does not fire while a slow machine is still building the model."""

    def __init__(self, timeout_s: float, on_hang):
        self.timeout_s, self.on_hang = timeout_s, on_hang
        self._stopped = threading.Event()
        self.touch("start-up", setup=True)
        if timeout_s > 0:
            threading.Thread(target=self._watch, daemon=True, name="ladder-watchdog").start()

    def stop(self) -> None:
        """End the watch. A run's watchdog must not outlive it: in a process that goes on (a test
        suite, a notebook, sweep points run one after another) it would end that process once the
        run's last phase had aged past its limit."""
        self._stopped.set()

    def touch(self, what: str, setup: bool = False) -> None:
        self.limit = max(self.timeout_s, SETUP_TIMEOUT_S) if setup else self.timeout_s
        self.mark, self.what = time.monotonic(), what

    def _watch(self) -> None:
        while not self._stopped.wait(min(5.0, self.timeout_s / 4)):
            if time.monotonic() - self.mark > self.limit and not self._stopped.is_set():
                self.on_hang(self.what)
