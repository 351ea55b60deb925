"""The trainer as every launcher runs it: training, with evaluation of each checkpoint it saves.

    python -m launch.train rung=tiny trainer.max_steps=200        # the same as `ladder train ...`
    torchrun --nproc-per-node 2 -m launch.train rung.engine=fsdp2 rung.gpus_per_node=2
    train(cfg)                                                    # in process (ladder train, tests)

training/ never imports evals/: the trainer (training/run/trainer.py) is extended by callbacks,
and this module, in launch/ (which depends on both), hands it the eval-on-save callback
(evals/on_save.py), which acts when trainer.eval_on_save (or the rung's default) asks for it.
`ladder train`, `ladder launch` (local and SLURM) and `python -m training.run.trainer` (older
scripts; it forwards here) all train through train() below. A user's mistake exits with status 2
and one line, a preemption with 75 (requeue): training/run/entry.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# First: it sets the offline defaults (HF_HUB_OFFLINE, ...) before anything loads transformers.
from training.run import entry


def train(cfg, callbacks: Sequence = ()):
    """training.run.trainer.train with the eval-on-save callback after `callbacks`."""
    from evals.on_save import EvalOnSave
    from training.run.trainer import train as train_only

    return train_only(cfg, callbacks=[*callbacks, EvalOnSave()])


if __name__ == "__main__":
    sys.exit(entry.main(train))
