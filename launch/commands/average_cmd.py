"""`ladder average CKPT... --out DIR`: a uniform average of several checkpoints' weights.

    ladder average runs/a/checkpoints/step_000100 runs/a/checkpoints/step_000150 --out runs/a-avg
    ladder average runs/lr-0-s0/checkpoints/step_000150 runs/lr-0-s1/checkpoints/step_000150 \\
        --out runs/lr-0-avg registry.url=...          # a point's seeds

The result (training/run/average.py) is an ordinary checkpoint: evaluable with `ladder eval`,
cached by its own content hash, comparable and loadable by plain transformers. Its lineage (each
input's path, step and content hash) is in its ladder_meta.json (`averaged_from`), and the
checkpoint is registered in the registry beside its inputs. The verb declares its arguments here
(register); launch/cli.py collects it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers, epilog: str = "") -> None:
    p = subparsers.add_parser(
        "average",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="average the weights of several checkpoints into a new checkpoint",
        description="A uniform average of the weights of several checkpoints of one model (the "
        "last checkpoints of a run, or one sweep point's seeds), checked for matching tensor "
        "names, shapes and dtypes and streamed one tensor at a time. The result is an ordinary "
        "checkpoint with its lineage in ladder_meta.json and the registry.",
        epilog=epilog + "\nexample:\n  ladder average runs/a/checkpoints/step_000100 "
        "runs/a/checkpoints/step_000150 --out runs/a-avg",
    )
    p.add_argument(
        "checkpoints", nargs="+", type=Path, metavar="CKPT", help="checkpoint directories"
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="a new directory")
    p.add_argument(
        "overrides", nargs="*", default=[], help=argparse.SUPPRESS
    )  # registry.url=..., trainer.run_root=...
    p.set_defaults(handler=cmd_average)


def cmd_average(args) -> int:
    from evals.store.registry import Registry
    from training.config.compose import compose
    from training.run.average import average_checkpoints

    overrides = [str(c) for c in args.checkpoints if "=" in str(c)] + list(args.overrides)
    ckpts = [c for c in args.checkpoints if "=" not in str(c)]
    out = average_checkpoints(ckpts, args.out)
    registry = Registry.from_config(compose(overrides), ckpts[0])
    row = registry.register_checkpoint(out)
    print(
        f"ladder average: {out}: the mean of {len(ckpts)} checkpoint(s), content hash "
        f"{row['content_hash'][:16]}, registered in {registry.path}; evaluate it with "
        f"`ladder eval {out}`"
    )
    return 0
