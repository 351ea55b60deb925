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
        if self.evaluator is not None:
            self.evaluator.submit(ckpt, step)
        elif self.enabled:
            from evals.runner import evaluate_checkpoint  # loads the model: only when it scores

            self.trainer.callbacks.phase(f"evaluating step {step}", setup=True)
            result = evaluate_checkpoint(ckpt, eval_beside_training(self.trainer.cfg.eval))
            self.trainer.record_eval(step, ckpt, result)

    def on_train_end(self, state: EndState, reason: str | None) -> None:
        if state == "completed" and self.evaluator is not None:
            self.trainer.callbacks.phase("waiting for the last evaluations", setup=True)
            self.collect(wait=True)

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
        for done in dones:
            if done.ok:
                self.trainer.record_eval(done.step, done.checkpoint, done.result)
            else:
                log.warning(
                    "eval of step %d failed: %s (log: %s)", done.step, done.error, done.log_path
                )
