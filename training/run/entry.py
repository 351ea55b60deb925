"""The training command's main: compose the overrides, train, say where the run is, exit.

    python -m launch.train rung=tiny trainer.max_steps=200        # launch/train.py: main(train)
    torchrun --nproc-per-node 2 -m launch.train rung.engine=fsdp2 rung.gpus_per_node=2

launch/train.py, what every launcher runs on every node, and `ladder train` (launch/cli.py calls
run_train) share it; the train function is passed in, with its callbacks (launch.train.train adds
the eval one). Importing it sets the offline defaults below, so it is imported first. A user's
mistake exits with status 2 and one line, a preemption with 75 (requeue).
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
    """Compose, train (`train`, passed in: launch.train.train, the trainer with its eval callback),
    and say where the run is."""
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
    from training.common.errors import (
        EXIT_INTERRUPTED,
        EXIT_REQUEUE,
        EXIT_USER_ERROR,
        Interrupted,
        LadderError,
        Preempted,
    )
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
    except Interrupted as e:
        print(f"ladder train: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("ladder train: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
