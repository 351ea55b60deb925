"""`ladder bench import`: bench/gpu.py's measured MFU into the ledger, for `ladder plan`.

    make bench-gpu                                 # on a GPU: writes runs/bench_gpu.json
    ladder bench import runs/bench_gpu.json [trainer.run_root=runs | ledger.url=postgresql://...]

Each Ladder configuration with a measured MFU becomes a row of the ledger's bench_rates table;
`ladder plan` then uses the median of those that match a rung's shape and settings, and says so
(`measured (N runs of bench/gpu.py ...)`), until finished runs of the rung itself exist
(launch/planning/rates.py). The verb declares its arguments here (register); launch/cli.py collects it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from launch.cli_args import add_ledger_overrides


def register(subparsers, epilog: str = "") -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    bench = subparsers.add_parser(
        "bench",
        formatter_class=fmt,
        help="import bench/gpu.py's figures for planning",
        description="Record measured throughput in the ledger.",
    )
    sub = bench.add_subparsers(dest="bench_verb", metavar="SUBVERB", required=True)
    imp = sub.add_parser(
        "import",
        formatter_class=fmt,
        help="record a bench/gpu.py result file in the ledger",
        description="Record the MFU of each Ladder configuration in a bench/gpu.py --out file, "
        "so that `ladder plan` uses it for rungs of the same model shape.",
        epilog=epilog + "\nexample:\n  ladder bench import runs/bench_gpu.json",
    )
    imp.add_argument("file", type=Path, help="the JSON file bench/gpu.py --out wrote")
    add_ledger_overrides(imp)
    imp.set_defaults(handler=cmd_import)


def cmd_import(args) -> int:
    from launch.accounting.ledger import Ledger
    from launch.planning.rates import import_bench
    from training.config.compose import compose

    cfg = compose(args.overrides)
    ledger = Ledger.from_config(cfg)
    rows = import_bench(ledger, args.file)
    shapes = sorted({r["shape"] for r in rows})
    print(
        f"ladder bench: recorded {len(rows)} measured configuration(s) of {args.file} ({rows[0]['device']}) "
        f"at {len(shapes)} shape(s) in {ledger.where}: {', '.join(shapes)}"
    )
    return 0
