"""The trainer's own entry point, what every launcher runs on every node.

    python -m training.run.trainer rung=tiny trainer.max_steps=200       # the same as `ladder train ...`
    torchrun --nproc-per-node 2 -m training.run.trainer rung.engine=fsdp2 rung.gpus_per_node=2

It does what `ladder train` does (launch/cli.py calls run_train too) without importing the ladder
command line: training/ never imports launch/, so the two packages form no import circle. A
user's mistake exits with status 2 and one line, a preemption with 75 (requeue).
"""

from __future__ import annotations

import os
import sys

# No run may reach a hub unless the user asks for it (the CLI sets the same before it starts us).
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_train(train, overrides: list[str]) -> int:
    """Compose, train (training.run.trainer.train, passed in: this module does not import the trainer,
    whose __main__ imports this one), and say where the run is."""
    from training.config.compose import compose

    result = train(compose(overrides))
    if (
        result.finished_before is not None
    ):  # the run had already reached max_steps: nothing was trained
        print(
            f"run directory: {result.run_dir} (already finished at step {result.finished_before}; nothing trained)"
        )
        return 0
    print(f"run directory: {result.run_dir}")
    if result.checkpoints:
        print(f"last checkpoint: {result.checkpoints[-1]}")
    return 0


def main(train, argv: list[str] | None = None) -> int:
    from training.common.errors import EXIT_REQUEUE, EXIT_USER_ERROR, LadderError, Preempted
    from training.run.log_setup import setup_logging

    argv = sys.argv[1:] if argv is None else argv
    setup_logging()  # -v reaches us as LADDER_VERBOSE=1
    try:
        return run_train(train, argv)
    except LadderError as e:
        print(f"ladder train: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Preempted as e:
        print(f"ladder train: {e}", file=sys.stderr)
        return EXIT_REQUEUE
    except KeyboardInterrupt:
        print("ladder train: interrupted", file=sys.stderr)
        return 130
