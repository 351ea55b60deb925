"""The `ladder` command line: one CLI, verbs that take Hydra overrides.

    ladder --help
    ladder train rung=tiny recipe=sft trainer.max_steps=200
    ladder eval runs/tiny-sft-reverse/checkpoints/step_000200 eval=synthetic

A user's mistake (a bad config, data row or checkpoint path) is printed as one clear
message with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap

# No run may reach a hub unless the user asks for it: set these before transformers loads.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from training.errors import LadderError  # noqa: E402

EXIT_USER_ERROR = 2

OVERRIDES_HELP = """\
overrides are Hydra overrides: group=option picks a config file, key.path=value sets a value.
Examples:
  rung=8b                      pick configs/rung/8b.yaml (it also picks model=llama3_8b)
  model.name_or_path=/models/Llama-3.1-8B-Instruct   load a real model from a local directory
  trainer.max_steps=200 optim.lr=1e-4 tracker.mode=disabled
"""


def groups_help() -> str:
    from training.compose import group_options
    lines = ["config groups (configs/<group>/<option>.yaml):"]
    for group, options in group_options().items():
        lines.append(f"  {group:<9} {', '.join(options)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="ladder", formatter_class=fmt,
        description="Ladder: a compute-efficient experiment harness for LLM post-training.",
        epilog=textwrap.dedent("""\
            verbs:
              train   train a model (SFT) from the composed config
              eval    evaluate a checkpoint on an eval suite
              config  print the composed, validated config and exit

            Run `ladder VERB --help` for a verb's options and the config groups.
            Quick start: `ladder train rung=tiny` trains the tiny model on a CPU in about a minute."""))
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    tr = sub.add_parser("train", formatter_class=fmt, help="train a model from the composed config",
                        description="Train a model. Validates the whole config first; resumes from the last "
                                    "complete checkpoint of the run (trainer.resume=auto).",
                        epilog=OVERRIDES_HELP + "\n" + _lazy_groups())
    tr.add_argument("overrides", nargs="*", help="Hydra overrides")

    ev = sub.add_parser("eval", formatter_class=fmt, help="evaluate a checkpoint",
                        description="Evaluate a checkpoint on an eval suite; writes <checkpoint>/eval/<suite>.json "
                                    "and logs the scores to the checkpoint's W&B run at its step.",
                        epilog=OVERRIDES_HELP + "\n" + _lazy_groups())
    ev.add_argument("checkpoint", help="a checkpoint directory (runs/<name>/checkpoints/step_NNNNNN)")
    ev.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. eval=synthetic eval.max_examples=100")

    cf = sub.add_parser("config", formatter_class=fmt, help="print the composed config",
                        epilog=OVERRIDES_HELP + "\n" + _lazy_groups())
    cf.add_argument("overrides", nargs="*", help="Hydra overrides")
    return p


def _lazy_groups() -> str:
    try:
        return groups_help()
    except Exception:  # help must print even if the config tree is broken
        return ""


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "wandb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Per-file progress bars from transformers and datasets drown the step log.
    import datasets
    import transformers
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_warning()


def cmd_train(args) -> int:
    from training.compose import compose
    from training.trainer import train
    result = train(compose(args.overrides))
    print(f"run directory: {result.run_dir}")
    if result.checkpoints:
        print(f"last checkpoint: {result.checkpoints[-1]}")
    return 0


def cmd_eval(args) -> int:
    from launch.eval_cmd import run_eval
    run_eval(args.checkpoint, args.overrides)
    return 0


def cmd_config(args) -> int:
    from omegaconf import OmegaConf
    from training.compose import compose
    from training.validate import validate
    cfg = compose(args.overrides)
    validate(cfg, for_training=False)
    print(OmegaConf.to_yaml(cfg), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return EXIT_USER_ERROR
    setup_logging()
    try:
        return {"train": cmd_train, "eval": cmd_eval, "config": cmd_config}[args.verb](args)
    except LadderError as e:
        print(f"ladder {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"ladder {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
