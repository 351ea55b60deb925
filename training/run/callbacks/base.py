"""The trainer's hooks: a Callback subclass overrides the ones it needs, and Callbacks calls them.

    class Printer(Callback):
        def on_step_end(self, step: int, metrics: dict) -> None:
            print(step, metrics["loss"])

    Trainer(cfg, callbacks=[Printer()]).run()      # after the default ones (training/run/callbacks/__init__.py)

As in OLMo-core's train/callbacks/callback.py, the loop knows its callbacks only through these
hooks: metrics.jsonl, W&B, the heartbeat, the progress bar and the watchdog are callbacks in this
package, and evaluating each checkpoint as it is saved is one that launch/train.py hands in from
evals/on_save.py (training never imports evals). Hooks run in list order, except on_run_end, which
runs in reverse (the last one started ends first). A callback runs on the main process only, the
one that writes the run's files, unless it sets every_rank (the watchdog guards every process).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

EndState = Literal["completed", "preempted", "interrupted", "failed"]


class Callback:
    every_rank: ClassVar[bool] = False  # False: the main process only
    # The Trainer (training/run/trainer.py), set before the first hook; not imported, as the trainer
    # imports this module. Callbacks read its cfg, world, run_dir, start_step and store.
    trainer: Any = None

    def on_phase(self, what: str, setup: bool) -> None:
        """A phase begins with its own time limit: set-up ones (start-up, loading, saving,
        evaluating) get the larger one. `what` names it in a hang report ("step 12")."""

    def on_run_start(self) -> None:
        """Set-up is done and the run directory written; the first step is next."""

    def on_step_end(self, step: int, metrics: dict) -> None:
        """An optimizer step ended with these metrics (a row of metrics.jsonl), before any save."""

    def keep_steps(self) -> tuple[int, ...]:
        """Checkpoint steps that trainer.keep_last must not delete yet (evaluations still due)."""
        return ()

    def on_checkpoint_saved(self, step: int, ckpt: Path, url: str | None) -> None:
        """The checkpoint of `step` is committed at `ckpt` (and uploaded to `url`, when set)."""

    def on_average_saved(self, step: int, ckpt: Path) -> None:
        """trainer.average_last: the average of the last checkpoints is committed at `ckpt`
        (checkpoints/avg_lastK_step_N; `step` is the last averaged step). Not a saved step: it is
        neither resumed from nor pruned, and its scores come back to on_eval with this `ckpt`."""

    def on_eval(self, step: int, ckpt: Path, result: dict) -> None:
        """A checkpoint's evaluation came back (evals.runner's result: "scores" and more)."""

    def on_train_end(self, state: EndState, reason: str | None) -> None:
        """Training stopped: completed (before the last evaluations are waited for), preempted
        (checkpointed, to be resumed), interrupted (Ctrl-C: checkpointed unless pressed twice) or
        failed (an error, or a hang)."""

    def on_run_end(self, exit_code: int) -> None:
        """The last hook, however the run ended, also when set-up refused it or failed before
        on_run_start: release what the callback holds. exit_code is 0 for a completed,
        preempted or interrupted run."""


class Callbacks:
    """The trainer's callbacks in order, and each hook called over the ones this process runs."""

    def __init__(self, callbacks: Sequence[Callback], main: bool):
        self.all = list(callbacks)
        self.here = [c for c in self.all if main or c.every_rank]

    def attach(self, trainer: Any) -> None:
        for c in self.all:
            c.trainer = trainer

    def phase(self, what: str, setup: bool = False) -> None:
        for c in self.here:
            c.on_phase(what, setup)

    def run_start(self) -> None:
        for c in self.here:
            c.on_run_start()

    def step_end(self, step: int, metrics: dict) -> None:
        for c in self.here:
            c.on_step_end(step, metrics)

    def keep_steps(self) -> tuple[int, ...]:
        return tuple(s for c in self.here for s in c.keep_steps())

    def checkpoint_saved(self, step: int, ckpt: Path, url: str | None) -> None:
        for c in self.here:
            c.on_checkpoint_saved(step, ckpt, url)

    def average_saved(self, step: int, ckpt: Path) -> None:
        for c in self.here:
            c.on_average_saved(step, ckpt)

    def eval(self, step: int, ckpt: Path, result: dict) -> None:
        for c in self.here:
            c.on_eval(step, ckpt, result)

    def train_end(self, state: EndState, reason: str | None = None) -> None:
        for c in self.here:
            c.on_train_end(state, reason)

    def run_end(self, exit_code: int) -> None:
        # Every callback ends, even after one failed to: a watchdog left running would end the
        # process that goes on (a test suite, a sweep) once the run's last phase aged past its limit.
        error = None
        for c in reversed(self.here):
            try:
                c.on_run_end(exit_code)
            except BaseException as e:
                error = error or e
        if error is not None:
            raise error
