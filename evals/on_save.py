"""Evaluate each checkpoint as it is saved (trainer.eval_on_save): the trainer's eval callback.

    ladder train rung=tiny trainer.eval_on_save=true           # launch/train.py hands it in
    Trainer(cfg, callbacks=[EvalOnSave()]).run()               # the same, in process

training/ never imports evals/, so launch/train.py, the entry point every launcher runs, adds
this callback to the trainer's defaults. With trainer.eval_async (the default) each checkpoint
goes to a background job (evals/async_eval.py) and the scores are recorded between steps, in step
order; at the end the run waits for the rest, or with trainer.eval_handoff leaves them to eval
jobs of their own. Otherwise each checkpoint is scored in the training process before the next
step. A checkpoint still to be evaluated is kept from trainer.keep_last.
"""

from __future__ import annotations

import logging
from pathlib import Path

from evals.async_eval import AsyncEvaluator
from training.rl.generator import eval_beside_training
from training.run.callbacks.base import Callback, EndState

log = logging.getLogger("ladder.train")


class EvalOnSave(Callback):
    def __init__(self) -> None:
        self.enabled = False
        self.evaluator: AsyncEvaluator | None = None

    def on_run_start(self) -> None:
        cfg = self.trainer.cfg
        t, r = cfg.trainer, cfg.rung
        self.enabled = r.eval_on_save if t.eval_on_save is None else t.eval_on_save
        if self.enabled and t.eval_async:
            self.evaluator = AsyncEvaluator(
                eval_beside_training(cfg.eval),
                registry_url=cfg.registry.url,
                log_dir=self.trainer.run_dir / "eval_logs",
            )

    def keep_steps(self) -> tuple[int, ...]:
        return self.evaluator.pending_steps if self.evaluator is not None else ()

    def on_step_end(self, step: int, metrics: dict) -> None:
        self.collect()

    def on_checkpoint_saved(self, step: int, ckpt: Path, url: str | None) -> None:
        self.evaluate(step, ckpt)

    def on_average_saved(self, step: int, ckpt: Path) -> None:
        self.evaluate(step, ckpt)  # trainer.average_last: scored and registered like the others

    def evaluate(self, step: int, ckpt: Path) -> None:
        if self.evaluator is not None:
            self.evaluator.submit(ckpt, step)
        elif self.enabled:
            from evals.runner import evaluate_checkpoint  # loads the model: only when it scores

            self.trainer.callbacks.phase(f"evaluating step {step}", setup=True)
            result = evaluate_checkpoint(ckpt, eval_beside_training(self.trainer.cfg.eval))
            self.trainer.record_eval(step, ckpt, result)

    def on_train_end(self, state: EndState, reason: str | None) -> None:
        if self.evaluator is None:
            return
        if state == "interrupted":  # Ctrl-C: nobody waits; `ladder eval --pending` runs them
            self.collect_done(self.evaluator.hand_off(self.trainer.run_dir))
        elif state == "completed":
            self.say_what_is_awaited()
            self.trainer.callbacks.phase("waiting for the last evaluations", setup=True)
            try:
                self.collect(wait=True)
            except KeyboardInterrupt:  # training is complete: leave the rest to an eval job
                from training.common.errors import Interrupted

                run_dir = self.trainer.run_dir
                self.collect_done(self.evaluator.hand_off(run_dir))
                raise Interrupted(
                    f"training completed; stopped waiting for its evaluations, which "
                    f"`ladder eval --pending {run_dir}` runs",
                    resumable=False,
                ) from None

    def say_what_is_awaited(self) -> None:
        """The end of a run can wait minutes on evaluations: say which, where their logs are, and
        how not to wait."""
        steps = self.evaluator.pending_steps
        if not steps or self.trainer.cfg.trainer.eval_handoff:
            return
        log.info(
            "training done; waiting for the background evaluation of step(s) %s (logs: %s); "
            "Ctrl-C stops waiting and leaves them to `ladder eval --pending %s`",
            ", ".join(map(str, sorted(steps))),
            self.trainer.run_dir / "eval_logs",
            self.trainer.run_dir,
        )

    def on_run_end(self, exit_code: int) -> None:
        if self.evaluator is not None:  # a failed run must not leave evaluations behind
            self.evaluator.close()

    def collect(self, wait: bool = False) -> None:
        """Record the background evaluations that have finished (all of them, with wait)."""
        if self.evaluator is None:
            return
        if wait and self.trainer.cfg.trainer.eval_handoff:
            dones = self.evaluator.hand_off(self.trainer.run_dir)  # the launcher runs eval jobs
        else:
            dones = self.evaluator.drain() if wait else self.evaluator.poll()
        self.collect_done(dones)

    def collect_done(self, dones) -> None:
        for done in dones:
            if done.ok:
                self.trainer.record_eval(done.step, done.checkpoint, done.result)
            else:
                log.warning(
                    "eval of step %d failed: %s (log: %s)", done.step, done.error, done.log_path
                )
