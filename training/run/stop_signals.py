"""What stops a run between two steps: a scheduler's signal, or Ctrl-C.

    signals = StopSignals(main=True); signals.install()    # the trainer, once set-up is done
    signals.name          # None, or "SIGTERM" / "SIGUSR1" (preempted) / "SIGINT" (Ctrl-C)
    signals.allow_ctrl_c()                                 # training is over: Ctrl-C acts at once
    signals.restore()                                      # the handlers from before install()

SIGTERM and SIGUSR1 (SLURM's notice before the time limit, a preemption, `kill`) and the first
Ctrl-C only set `name`: the trainer finishes the step, checkpoints and stops, as preempted (exit
75, requeued) or as interrupted (exit 130, said how to resume). A second Ctrl-C, or a Ctrl-C after
another stop signal, raises KeyboardInterrupt at once: whoever presses it twice means now, and
loses the steps since the last checkpoint. Handlers are Python's, so they run in the main thread
between bytecodes; the note on the first Ctrl-C is an os.write, which a handler may call while the
interrupted code is itself printing.
"""

from __future__ import annotations

import os
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopSignals:
    def __init__(self, main: bool = True):
        self.name: str | None = None
        self.main = main  # the process that speaks for the run (rank 0)
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal works only there (an in-process run from a worker thread)
        for sig in SIGNALS:
            if sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
                continue  # started to ignore Ctrl-C (a shell's background job): it still does
            self.previous[sig] = signal.signal(sig, self.on_signal)

    def on_signal(self, signum, _frame) -> None:
        if signum == signal.SIGINT and self.name is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without a checkpoint
        self.name = signal.Signals(signum).name  # acted on after the current step
        if signum == signal.SIGINT and self.main:
            os.write(
                2,
                b"\nCtrl-C: finishing this step, then checkpointing and stopping "
                b"(Ctrl-C again stops at once, losing the steps since the last checkpoint)\n",
            )

    @property
    def interrupted(self) -> bool:
        return self.name == "SIGINT"

    def allow_ctrl_c(self) -> None:
        """Training is over (what is left is waiting for evaluations): Ctrl-C acts at once again."""
        self._put_back(signal.SIGINT)

    def restore(self) -> None:
        for sig in list(self.previous):
            self._put_back(sig)

    def _put_back(self, sig) -> None:
        handler = self.previous.pop(sig, None)
        if handler is not None:  # None: set from C, which Python cannot put back
            signal.signal(sig, handler)
