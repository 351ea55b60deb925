"""The `ladder` command line: one CLI, verbs that take Hydra overrides.

    ladder --help
    ladder train rung=tiny recipe=sft trainer.max_steps=200
    ladder eval runs/tiny-sft-reverse/checkpoints/step_000200 eval=synthetic

A user's mistake (a bad config, data row or checkpoint path) is printed as one clear
message with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

# No run may reach a hub unless the user asks for it: set these before transformers loads.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from launch.cli_args import add_ledger_overrides  # noqa: E402
from training.common.errors import (  # noqa: E402
    EXIT_INTERRUPTED,
    EXIT_REQUEUE,
    EXIT_USER_ERROR,
    ConfigError,
    Interrupted,
    LadderError,
    Preempted,
)

OVERRIDES_HELP = """\
overrides are Hydra overrides: group=option picks a config file, key.path=value sets a value.
Examples:
  rung=8b                      pick configs/rung/8b.yaml (it also picks model=llama3_8b)
  model.name_or_path=/models/Llama-3.1-8B-Instruct   load a real model from a local directory
  trainer.max_steps=200 optim.lr=1e-4 tracker.mode=disabled
"""


def groups_help() -> str:
    from training.config.compose import group_options

    lines = ["config groups (configs/<group>/<option>.yaml):"]
    for group, options in group_options().items():
        lines.append(f"  {group:<9} {', '.join(options)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    overrides_help = OVERRIDES_HELP + "\n" + _lazy_groups()  # scans configs/ once, not per verb
    p = argparse.ArgumentParser(
        prog="ladder",
        formatter_class=fmt,
        description="Ladder: a compute-efficient experiment harness for LLM post-training.",
        epilog=textwrap.dedent("""\
            verbs:
              train   train a model (SFT, DPO or GRPO, by recipe=) from the composed config
              eval    evaluate a checkpoint on an eval suite (cached by checkpoint content)
              compare compare checkpoints, runs or sweeps task by task, with bootstrap CIs; --html report
              leaderboard  rank registered checkpoints across runs, with metadata filters
              config  print the composed, validated config and exit
              plan    print the compute plan: parameters, FLOPs, memory per GPU, fit, GPU-hours, cost
              launch  plan, check the team's budget, record the job (or -m sweep) and run or submit it
              status  each job's state, step, loss, GPU-hours and W&B link (SLURM accounting + heartbeats)
              cancel  stop jobs or a sweep; their GPU-hours are recorded as waste
              budget  `ladder budget set|report`: teams' GPU-hour allocations (in the ledger), and their use
              ledger  `ladder ledger migrate --to postgresql://...`: move a SQLite ledger and registry to a server
              promote launch a finished sweep's best K configurations at another rung, recording lineage
              promotion-report  did the lower rung's ranking predict the higher one's? (Spearman)
              data    `ladder data inspect`: rows, tokens, shares and epochs per source; `data decontaminate`

            Run `ladder VERB --help` for a verb's options and the config groups.
            Quick start: `ladder train rung=tiny` trains the tiny model on a CPU in about a minute."""),
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show third-party libraries' notices (DeepSpeed, lm-eval, matplotlib, ...)",
    )
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    tr = sub.add_parser(
        "train",
        formatter_class=fmt,
        help="train a model from the composed config",
        description="Train a model. Validates the whole config first; resumes from the last "
        "complete checkpoint of the run (trainer.resume=auto).",
        epilog=overrides_help,
    )
    tr.add_argument("overrides", nargs="*", help="Hydra overrides")

    ev = sub.add_parser(
        "eval",
        formatter_class=fmt,
        help="evaluate a checkpoint",
        description="Evaluate a checkpoint on an eval suite; writes <checkpoint>/eval/<suite>.json "
        "and logs the scores to the checkpoint's W&B run at its step.",
        epilog=overrides_help,
    )
    ev.add_argument(
        "args",
        nargs="*",
        metavar="CHECKPOINT|OVERRIDE",
        help="checkpoint directories (runs/<name>/checkpoints/step_NNNNNN), and Hydra overrides, "
        "e.g. eval=synthetic eval.max_examples=100; launcher=slurm submits one SLURM job per "
        "checkpoint instead of evaluating here",
    )
    ev.add_argument(
        "--wait", action="store_true", help="with launcher=slurm: wait until the eval jobs finish"
    )
    ev.add_argument(
        "--pending",
        metavar="RUN_DIR",
        default=None,
        help="evaluate what a finished run handed off (RUN_DIR/pending_evals.json, written when "
        "trainer.eval_handoff=true, as `ladder launch` sets it) as eval jobs recorded in the ledger",
    )

    co = sub.add_parser(
        "compare",
        formatter_class=fmt,
        help="compare checkpoints with confidence intervals",
        description="Score each target on the eval suite (from the eval cache where it can) and\n"
        "print per task the score, the delta vs the baseline and its 95% CI from a\n"
        "paired bootstrap over examples; significant deltas are marked. A target is a\n"
        "checkpoint, a run directory (its latest checkpoint) or sweep:NAME (the latest\n"
        "registered checkpoint of each of the sweep's runs). Options go before or after the\n"
        "targets and overrides, not between them.",
        epilog=overrides_help,
    )
    co.add_argument(
        "items",
        nargs="+",
        metavar="TARGET_OR_OVERRIDE",
        help="checkpoints, runs or sweep:NAME, then Hydra overrides (eval=cpu registry.url=...)",
    )
    co.add_argument(
        "--baseline",
        default=None,
        help="the target the deltas are taken against (default: the first)",
    )
    co.add_argument(
        "--html",
        metavar="FILE",
        default=None,
        help="also write an offline HTML report: plots vs step, GPU-hours and time, config diffs",
    )
    co.add_argument(
        "--json", metavar="FILE", default=None, help="also write the comparison as JSON"
    )

    lb = sub.add_parser(
        "leaderboard",
        formatter_class=fmt,
        help="rank registered checkpoints by eval score",
        description="Rank the checkpoints in the registry by their scores on the eval suite "
        "(results with the suite's current settings only), optionally filtered: each run's best "
        "checkpoint, without the untrained step-0 copies (--all shows every checkpoint). "
        "Nothing is evaluated: checkpoints are scored as they are saved (trainer.eval_on_save) "
        "or by `ladder eval`.",
        epilog="examples:\n"
        "  ladder train rung=tiny trainer.max_steps=200      # scores each checkpoint as it saves\n"
        "  ladder launch -m optim.lr=1e-3,3e-3 sweep.name=lr # a sweep of two runs\n"
        "  ladder leaderboard                                # each run's best checkpoint\n"
        "  ladder leaderboard --sweep lr --all               # every checkpoint of the sweep\n"
        "  ladder leaderboard --recipe dpo --task reverse --top 5 eval=synthetic\n"
        "  ladder eval runs/tiny-sft-reverse/checkpoints/step_000200 eval=cpu  # another suite\n"
        "  ladder leaderboard eval=cpu                       # ranked on it\n\n" + overrides_help,
    )
    lb.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides: eval=SUITE, trainer.run_root=..., registry.url=...",
    )
    lb.add_argument("--sweep", default=None, help="only checkpoints of runs with this sweep.name")
    lb.add_argument("--rung", default=None, help="only this rung, e.g. tiny or 8b")
    lb.add_argument("--recipe", default=None, help="only this recipe, e.g. sft or dpo")
    lb.add_argument("--data", default=None, help="only this data mix (data.name)")
    lb.add_argument(
        "--lr", type=float, default=None, help="only this learning rate (the effective one)"
    )
    lb.add_argument("--run", default=None, help="only this run name")
    lb.add_argument(
        "--task", default=None, help="rank by this task instead of the average over tasks"
    )
    lb.add_argument("--top", type=int, default=None, help="show the best N")
    lb.add_argument(
        "--all",
        action="store_true",
        help="every checkpoint of every run, the untrained step-0 copies included (default: each "
        "run's best)",
    )
    lb.add_argument("--json", metavar="FILE", default=None, help="also write the ranking as JSON")

    cf = sub.add_parser(
        "config", formatter_class=fmt, help="print the composed config", epilog=overrides_help
    )
    cf.add_argument("overrides", nargs="*", help="Hydra overrides")

    pl = sub.add_parser(
        "plan",
        formatter_class=fmt,
        help="print the compute plan of a job",
        description="Plan a job without running it: parameters (from the model's shape), training "
        "FLOPs, memory per GPU by engine, whether it fits and what to change if not, "
        "GPU-hours, wall-clock and cost. Exit status 1 when it does not fit.",
        epilog=overrides_help,
    )
    pl.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. rung=405b rung.nodes=16")
    pl.add_argument("--json", action="store_true", help="print the plan as one JSON object")

    la = sub.add_parser(
        "launch",
        formatter_class=fmt,
        help="plan, check the budget, record and run a job or sweep",
        description="Validate and plan the job (every point of a sweep), check the planned GPU-hours "
        "against the team's allocation in the ledger (budget.team) as a whole, record the jobs in the "
        "ledger and run them with the launcher: launcher=local runs them here and records "
        "the hours used, final state and waste; launcher=slurm submits an sbatch script "
        "(a job array for a sweep) and `ladder status` follows it.",
        epilog=overrides_help + "\n\nexamples:\n  ladder launch rung=tiny trainer.max_steps=200\n"
        "  ladder launch -m optim.lr=1e-5,2e-5,5e-6 trainer.seed=1,2\n"
        "  ladder launch rung=70b launcher=slurm launcher.account=llm --dry-run",
    )
    la.add_argument("overrides", nargs="*", help="Hydra overrides, passed unchanged to the trainer")
    la.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="a sweep: expand comma lists and range() in the overrides into one job per point",
    )
    la.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and the command or sbatch script; submit and record nothing",
    )
    la.add_argument(
        "--wait", action="store_true", help="with launcher=slurm: wait until every job has finished"
    )
    la.add_argument(
        "--override-budget",
        metavar="REASON",
        default=None,
        help="launch even if the job exceeds the team's budget; the reason is recorded in the ledger",
    )
    la.add_argument(
        "--allow-contamination",
        action="store_true",
        help="launch even if the data overlaps the prompts of the job's eval suite (`ladder data "
        "decontaminate`); recorded in the ledger",
    )
    la.add_argument(
        "--allow-unchecked",
        action="store_true",
        help="launch even if some of the eval suite's tasks (or the data's hub sources) could not be "
        "read here to check for contamination; recorded in the ledger",
    )

    for verb, text in (
        ("status", "show each job's state, step, loss, GPU-hours and W&B link"),
        ("cancel", "stop jobs or a sweep and record their GPU-hours as waste"),
    ):
        sp = sub.add_parser(
            verb,
            formatter_class=fmt,
            help=text,
            description=text[0].upper() + text[1:] + ". Jobs are ledger ids or SLURM ids; "
            "SLURM jobs are read from accounting (sacct) and the runs' heartbeats.",
            epilog=overrides_help,
        )
        sp.add_argument(
            "args",
            nargs="*",
            metavar="JOB|OVERRIDE",
            help="job ids, and Hydra overrides that locate the ledger (trainer.run_root=...)",
        )
        sp.add_argument("--sweep", default=None, help="every job of this sweep")
        if verb == "status":
            sp.add_argument("--json", action="store_true", help="print the rows as JSON")

    # ---- promotion up the ladder (launch/promotion/promote.py, launch/promotion/promotion_report.py) ----
    pr = sub.add_parser(
        "promote",
        formatter_class=fmt,
        help="launch a sweep's best K configurations at another rung",
        description="Rank the finished points of a sweep by their eval score in the registry, and "
        "launch the best K at another rung with transferred hyperparameters (the "
        "learning rate keeps its ratio to the rung's rate), as a new sweep, recording "
        "in the ledger which run each promoted job came from. The K jobs are "
        "planned and budget-checked together; nothing is launched if they do not fit.",
        epilog=overrides_help
        + "\nThe overrides locate the ledger and registry, pick the eval suite "
        "the sweep was scored with, and are passed on to every promoted job (last, so "
        "they win).\n\nexamples:\n  ladder promote --sweep lr --to 70b --top 3 --metric reverse "
        "launcher=slurm --dry-run\n  ladder promote --sweep lr --to tiny_wide --top 2 "
        "--metric ladder_reverse_mc eval=cpu eval.max_examples=100",
    )
    pr.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides (trainer.run_root=..., eval=..., launcher=...)",
    )
    pr.add_argument(
        "--sweep", required=True, help="the finished sweep (sweep.name) to promote from"
    )
    pr.add_argument("--to", required=True, metavar="RUNG", help="the rung to promote to, e.g. 70b")
    pr.add_argument(
        "--top", required=True, type=int, metavar="K", help="how many of the best configurations"
    )
    pr.add_argument(
        "--metric",
        default="average",
        metavar="EVAL",
        help="rank by this task of the eval suite (reverse, or task/metric), or `average` over its "
        "tasks (default)",
    )
    pr.add_argument(
        "--as",
        dest="as_name",
        default=None,
        metavar="NAME",
        help="the promoted sweep's name (default: SWEEP@RUNG)",
    )
    pr.add_argument(
        "--dry-run",
        action="store_true",
        help="print the ranking, each promoted job's overrides and "
        "the budget check; launch and record nothing (exit "
        "status 1 if the budget would refuse them)",
    )
    pr.add_argument(
        "--strict",
        action="store_true",
        help="refuse to promote when the K-th and (K+1)-th points are not separable (seed and "
        "example noise: launch/promotion/noise.py)",
    )
    pr.add_argument(
        "--allow-running",
        action="store_true",
        help="rank the finished points even though some of the sweep's jobs are still running",
    )
    pr.add_argument(
        "--override-budget",
        metavar="REASON",
        default=None,
        help="launch even if the jobs exceed the team's budget; the reason is recorded in the ledger",
    )
    rr = sub.add_parser(
        "promotion-report",
        formatter_class=fmt,
        help="how well a lower rung's ranking predicted the higher rung's (Spearman)",
        description="For each promotion from or to a sweep: every promoted configuration's score "
        "and rank at the lower rung and at the higher rung, Spearman's rank "
        "correlation with n and a permutation p-value, and a verdict on the lower "
        "rung as a proxy. Reads the ledger and the registry; evaluates nothing.",
        epilog=overrides_help,
    )
    add_ledger_overrides(rr)
    rr.add_argument(
        "--sweep", default=None, help="the lower- or higher-rung sweep (default: every promotion)"
    )
    rr.add_argument("--json", action="store_true", help="print the report as JSON")
    from launch.commands import (
        average_cmd,
        bench_cmd,
        budget_cmd,
        data_cmd,
        ledger_cmd,
    )  # verbs that declare their own arguments and handler (DESIGN.md)

    data_cmd.register(sub, overrides_help)
    budget_cmd.register(sub, overrides_help)
    ledger_cmd.register(sub, overrides_help)
    bench_cmd.register(sub, overrides_help)
    average_cmd.register(sub, overrides_help)
    return p


def _lazy_groups() -> str:
    try:
        return groups_help()
    except Exception:  # help must print even if the config tree is broken
        return ""


from training.run.log_setup import QUIET, setup_logging  # noqa: E402,F401  (shared with training/run/entry.py)


def cmd_train(args) -> int:
    from training.config.compose import compose
    from training.config.validate import validate

    # A mistake in the config is said in a second, before torch and the trainer load (the
    # trainer validates again, with this machine's process count and devices).
    validate(compose(args.overrides))
    from launch.accounting.train_record import recording  # a shared ledger records direct runs too
    from launch.train import train  # the trainer with its eval-on-save callback
    from training.run.entry import run_train

    return run_train(recording(train, args.overrides), args.overrides)


def cmd_eval(args) -> int:
    from launch.commands.eval_cmd import run_eval, run_pending, submit_evals
    from training.config.compose import compose

    _split_jobs(args)
    if args.pending is not None:
        if args.jobs:
            raise ConfigError(
                "--pending RUN_DIR evaluates that run's pending checkpoints: name no others"
            )
        return run_pending(args.pending, args.overrides, wait=args.wait)
    if not args.jobs:
        raise ConfigError("name at least one checkpoint directory to evaluate")
    if compose(args.overrides).launcher.name == "slurm":
        return submit_evals(args.jobs, args.overrides, wait=args.wait)
    for ckpt in args.jobs:
        run_eval(ckpt, args.overrides)
    return 0


def cmd_compare(args) -> int:
    from launch.commands.compare_cmd import cmd_compare as run

    return run(args)


def cmd_leaderboard(args) -> int:
    from launch.commands.compare_cmd import cmd_leaderboard as run

    return run(args)


def cmd_config(args) -> int:
    from omegaconf import OmegaConf

    from training.config.compose import compose
    from training.config.validate import lr_rule, validate

    cfg = compose(args.overrides)
    validate(cfg)
    print(OmegaConf.to_yaml(cfg), end="")
    print(f"# learning rate used: {lr_rule(cfg)}")  # numbers and key names only
    return 0


def cmd_plan(args) -> int:
    from launch.planning.plan import cmd_plan as run

    return run(args)


def cmd_launch(args) -> int:
    from launch.commands.launch_cmd import cmd_launch as run

    return run(args)


def _split_jobs(args) -> None:
    args.overrides = [a for a in args.args if "=" in a]
    args.jobs = [a for a in args.args if "=" not in a]


def cmd_status(args) -> int:
    from launch.commands.status_cmd import cmd_status as run

    _split_jobs(args)
    return run(args)


def cmd_cancel(args) -> int:
    from launch.commands.status_cmd import cmd_cancel as run

    _split_jobs(args)
    return run(args)


def cmd_promote(args) -> int:
    from launch.promotion.promote import cmd_promote as run

    return run(args)


def cmd_promotion_report(args) -> int:
    from launch.promotion.promotion_report import cmd_promotion_report as run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    """The entry point. Output piped into `head` (which closes the pipe early) ends quietly:
    the reader has all it wanted, so a BrokenPipeError is not an error worth a traceback."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows up here for output still buffered
        return code
    except BrokenPipeError:
        # Python flushes stdout again at exit and would print the error there: point it at
        # /dev/null first (the recipe in Python's documentation of SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # what a shell reports for a process ended by SIGPIPE (128 + 13)


def check_argv(argv: list[str]) -> None:
    """Every argument of every verb, checked for secrets before the verb runs: argv is recorded
    (run_meta.json, W&B, the ledger, launch.json, job scripts), options and ignored overrides too.
    compose() checks the overrides again, for `python -m launch.train` and in-process callers."""
    from training.config.secret_guard import argv_problems

    problems = argv_problems(argv)
    if problems:
        raise ConfigError("invalid command line:\n  - " + "\n  - ".join(problems))


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before and after options (`ladder launch -m a=1,2 --wait b=3`): argparse
    # stops a positional list at the first option, so the rest is collected here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        field = next(
            (f for f in ("overrides", "args") if isinstance(getattr(args, f, None), list)), None
        )
        stray = [e for e in extra if e.startswith("-")]
        if field is None or stray:
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        getattr(args, field).extend(extra)
    if args.verb is None:
        parser.print_help()
        return EXIT_USER_ERROR
    if args.verbose:
        os.environ["LADDER_VERBOSE"] = "1"  # for the trainer and eval processes this verb starts
    setup_logging(args.verbose)
    try:
        check_argv(sys.argv[1:] if argv is None else argv)
        if getattr(args, "handler", None):  # a verb module's handler (register(subparsers))
            return args.handler(args)
        return {
            "train": cmd_train,
            "eval": cmd_eval,
            "config": cmd_config,
            "plan": cmd_plan,
            "launch": cmd_launch,
            "status": cmd_status,
            "cancel": cmd_cancel,
            "compare": cmd_compare,
            "leaderboard": cmd_leaderboard,
            "promote": cmd_promote,
            "promotion-report": cmd_promotion_report,
        }[args.verb](args)
    except LadderError as e:
        print(f"ladder {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Preempted as e:
        print(f"ladder {args.verb}: {e}", file=sys.stderr)
        return EXIT_REQUEUE
    except Interrupted as e:  # Ctrl-C in a training run: checkpointed (once) and resumable
        import shlex

        again = shlex.join(["ladder", *(sys.argv[1:] if argv is None else argv)])
        hint = f"\nresume with: {again}" if e.resumable else ""
        print(f"ladder {args.verb}: {e}{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"ladder {args.verb}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
