"""The built-in eval tasks, in one table: each task's data file (a key of the eval config), where
its version lives (bumped when its scores change for the same checkpoint) and its scorer.

    from evals.tasks.builtin import BUILTIN_TASKS, builtin_task
    task = builtin_task("reverse")
    task.version                                  # keys the eval cache
    task.score(model, tokenizer, eval_cfg, generator)   # {"score": ..., "n": ..., ...}

A new built-in task is one entry here plus its scorer module in evals/tasks/: the config check
and cache keys (evals/store/cache.py) and the runner (evals/runner.py) read this table. Scorers
and versions are imported when they are needed, so composing and checking a suite stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


def _resolve(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class BuiltinTask:
    name: str
    file_key: str  # the eval config key that names its data file
    scorer: str  # "module:function"; called as (model, tokenizer, path, max_examples, ...)
    version_ref: str  # "module:VERSION"

    @property
    def version(self) -> str:
        return str(_resolve(self.version_ref))

    def score(self, model, tokenizer, eval_cfg, generator=None) -> dict:
        return _resolve(self.scorer)(
            model,
            tokenizer,
            eval_cfg[self.file_key],
            eval_cfg.max_examples,
            eval_cfg.max_new_tokens,
            eval_cfg.batch_size,
            generator,
        )


BUILTIN_TASKS: dict[str, BuiltinTask] = {
    t.name: t
    for t in (
        # held-out reversals of the shipped synthetic task, exact match by greedy generation
        BuiltinTask(
            "reverse",
            "heldout_file",
            "evals.tasks.synthetic:score_heldout",
            "training.data.synthetic:VERSION",
        ),
        # IFEval-style verifiable instructions (the same checks GRPO rewards with)
        BuiltinTask(
            "ifeval_lite",
            "instructions_file",
            "evals.tasks.instructions:score_instructions",
            "evals.tasks.instructions:VERSION",
        ),
    )
}


def builtin_task(name: str) -> BuiltinTask:
    return BUILTIN_TASKS[name]
