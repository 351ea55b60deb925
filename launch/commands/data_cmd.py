"""`ladder data`: look at a run's data before training on it.

    ladder data inspect [overrides] [--json]                       # rows, tokens, shares, epochs per source
    ladder data inspect recipe=grpo [overrides]                    # RLVR: prompt lengths, verifiers per source
    ladder data decontaminate [overrides] [--json] [--write DIR]   # n-gram overlap with the eval suite's prompts

The verb declares its arguments and handlers here (register); launch/cli.py only collects it.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

# `ladder data decontaminate`'s exit status, for CI gates: contaminated wins over unchecked
EXIT_STATUS = {"clean": 0, "contaminated": 1, "unchecked": 3}


def register(subparsers, epilog: str = "") -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    data = subparsers.add_parser(
        "data",
        formatter_class=fmt,
        help="inspect or decontaminate a run's data",
        description="Look at the data a config trains on, without training.",
    )
    sub = data.add_subparsers(dest="data_verb", metavar="SUBVERB", required=True)
    ins = sub.add_parser(
        "inspect",
        formatter_class=fmt,
        help="rows, tokens and shares of each source of the data",
        description=_wrap(
            "Print the data of the composed config per source: rows, tokens after the chat template, "
            "trained tokens, documents truncated at data.max_seq_len, documents per mixture round, each "
            "source's share of a step's documents and tokens over the run, and the epochs of each source "
            "the run sees. Tokenised documents come from (and go to) the token cache. For RLVR prompts "
            "(recipe=grpo): rows, prompts in the set, prompt tokens against data.max_seq_len - "
            "generator.max_new_tokens, and prompts per verifier, per source."
        ),
        epilog=epilog + "\nexamples:\n  ladder data inspect data=reverse_mix\n"
        "  ladder data inspect data=reverse_mix data.sources.arith.weight=0.5 --json\n"
        "  ladder data inspect recipe=grpo",
    )
    ins.add_argument("overrides", nargs="*", help="Hydra overrides, as for `ladder train`")
    ins.add_argument("--json", action="store_true", help="print the report as one JSON object")
    ins.set_defaults(handler=cmd_inspect)
    dec = sub.add_parser(
        "decontaminate",
        formatter_class=fmt,
        help="check the training data against the eval suite's prompts",
        description=_wrap(
            "Check every training source against the prompts of the config's eval suite (eval=): the "
            "built-in tasks' held-out and instruction files and the documents of local lm-eval tasks. "
            "A training row matches a prompt when data.decontamination.threshold of the prompt's word "
            "n-grams (n = data.decontamination.ngram) occur in it; a prompt shorter than n words "
            "matches a message equal to it; scripts written without spaces (Chinese, Japanese, Thai, "
            "...) are compared by characters. `ladder launch` refuses a job whose data matches its own "
            "eval suite unless --allow-contamination is given, and one whose suite could not all be "
            "read unless --allow-unchecked is given. Exit status: 0 clean, 1 rows match, 3 nothing "
            "matches but some eval task or source could not be read here (listed as unchecked)."
        ),
        epilog=epilog + "\nexamples:\n  ladder data decontaminate data=reverse_mix eval=cpu\n"
        "  ladder data decontaminate data=reverse_mix --write clean/ --json",
    )
    dec.add_argument("overrides", nargs="*", help="Hydra overrides, as for `ladder train`")
    dec.add_argument(
        "--json",
        action="store_true",
        help="print, per source, the rows checked and each matching row with the eval tasks it matches",
    )
    dec.add_argument(
        "--write",
        metavar="DIR",
        default=None,
        help="write a copy of each source without its matching rows to DIR/<source>.jsonl",
    )
    dec.set_defaults(handler=cmd_decontaminate)


def _wrap(text: str) -> str:
    return textwrap.fill(text, 100)


def cmd_inspect(args) -> int:
    from launch.inspection.data_inspect import inspect_data, print_report
    from launch.planning.doc_lengths import save_lengths
    from training.config.compose import compose

    cfg = compose(args.overrides)
    report = inspect_data(cfg)
    path = save_lengths(cfg, report["doc_lengths"])  # `ladder plan` with these overrides reads it
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    print(
        f"document lengths for `ladder plan`: {path}", file=sys.stderr if args.json else sys.stdout
    )
    return 0


def cmd_decontaminate(args) -> int:
    from evals.tasks.contamination_report import print_report, unchecked_line
    from evals.tasks.decontaminate import decontaminate, write_filtered
    from launch.console import make_console
    from training.common.errors import ConfigError
    from training.config.compose import compose
    from training.config.paths import output_problem
    from training.config.validate import validate

    if args.write and (problem := output_problem("--write", args.write, directory=True)):
        raise ConfigError(problem)  # before any row is read, not after the whole check
    cfg = compose(args.overrides)
    # a missing file or a bad setting is a config error before any row is read
    validate(cfg, trains=False)
    report = decontaminate(cfg)
    if args.write:
        report["written"] = write_filtered(cfg, report, args.write)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report, make_console())
    if report["status"] == "unchecked":  # never clean for what was not read (issue #22)
        print(
            f"ladder data decontaminate: {unchecked_line(report)}; exit status 3",
            file=sys.stderr,
            flush=True,
        )
    return EXIT_STATUS[report["status"]]
