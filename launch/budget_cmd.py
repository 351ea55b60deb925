"""`ladder budget`: set a team's GPU-hour allocation in the ledger, and report on every team's.

    ladder budget set --team llm --period month --gpu-hours 5000 [--note "Q4 grant"] [ledger.url=...]
    ladder budget report [--team llm] [--plot budget.png] [overrides that locate the ledger]

An allocation is data in the ledger (launch/ledger.py: `budgets`, and every change in
`budget_changes` with who made it and when), never a value a job's config can raise. The verb
declares its arguments and handlers here (register); launch/cli.py only collects it.
"""

from __future__ import annotations

import argparse
import math
import time

from launch.ledger import PERIODS
from training.errors import ConfigError


def register(subparsers, epilog: str = "") -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    bu = subparsers.add_parser("budget", formatter_class=fmt, help="GPU-hour budgets by team and period",
                               description="Budgets: each team's GPU-hour allocation per period lives in the "
                                           "ledger; `ladder launch` checks a job against its team's (budget.team).")
    sub = bu.add_subparsers(dest="budget_verb", metavar="SUBVERB", required=True)
    st = sub.add_parser("set", formatter_class=fmt, help="set a team's allocation (recorded with who and when)",
                        description="Set TEAM's allocation to H GPU-hours per PERIOD (UTC weeks, months, "
                                    "quarters or years), from now on. The change is recorded in the ledger with "
                                    "who made it (user@host, and the database role on PostgreSQL) and when.",
                        epilog=epilog + "\nexamples:\n  ladder budget set --team llm --period month --gpu-hours 5000\n"
                               "  ladder budget set --team llm --period quarter --gpu-hours 2e4 "
                               "ledger.url=postgresql://ladder@db-host/ladder")
    st.add_argument("overrides", nargs="*", help="Hydra overrides that locate the ledger (ledger.url=..., "
                                                 "trainer.run_root=...)")
    st.add_argument("--team", required=True, help="the team, as jobs name it in budget.team")
    st.add_argument("--period", required=True, choices=PERIODS, help="the allocation is per this period")
    st.add_argument("--gpu-hours", required=True, type=float, metavar="H", help="GPU-hours per period (>= 0)")
    st.add_argument("--note", default=None, help="why, for the record (e.g. the grant or who approved it)")
    st.set_defaults(handler=cmd_budget_set)
    br = sub.add_parser("report", formatter_class=fmt, help="allocated, used, running, wasted and useful hours",
                        description="Per team and period: allocated, used, planned-and-running, wasted and "
                                    "MFU-weighted (useful) GPU-hours, what is left, and the cost.",
                        epilog=epilog)
    br.add_argument("overrides", nargs="*", help="Hydra overrides that locate the ledger, e.g. trainer.run_root=/data/runs")
    br.add_argument("--plot", metavar="FILE", default=None, help="also write a PNG chart to FILE")
    br.add_argument("--team", default=None, help="only this team")
    br.set_defaults(handler=cmd_budget_report)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def cmd_budget_set(args) -> int:
    from launch.console import num
    from launch.ledger import Ledger
    from training.compose import compose
    if not math.isfinite(args.gpu_hours) or args.gpu_hours < 0:
        raise ConfigError(f"--gpu-hours {args.gpu_hours}: give a finite number of GPU-hours, 0 or more")
    if not args.team.strip():
        raise ConfigError("--team: name the team")
    ledger = Ledger.from_config(compose(args.overrides))
    with ledger.transaction() as db:
        before = ledger.set_budget(db, args.team, args.period, args.gpu_hours, note=args.note)
    row = ledger.budgets()[args.team]
    was = (f" (was {num(before['gpu_hours'])} per {before['period']})" if before else " (its first allocation)")
    print(f"ladder budget: team {args.team}: {num(row['gpu_hours'])} GPU-hours per {row['period']}{was}; "
          f"set by {row['set_by']} at {_utc(row['set_at'])} in the ledger {ledger.where}")
    return 0


def cmd_budget_report(args) -> int:
    from launch.budget import plan_accuracy, plot_report, render_plan_accuracy, render_report, report_rows
    from launch.ledger import ACTIVE, Ledger
    from launch.status_cmd import refresh
    from training.compose import compose
    cfg = compose(args.overrides)
    ledger = Ledger.existing(cfg)
    if ledger is not None:  # jobs still pending or running: bring them up to date first
        refresh(ledger, [j for j in ledger.jobs() if j["state"] in ACTIVE])
    rows = report_rows(ledger, cfg.budget.price_per_gpu_hour, team=args.team)
    render_report(rows, ledger.where if ledger else f"{cfg.ledger.url} (no jobs recorded yet)")
    render_plan_accuracy(plan_accuracy(ledger, team=args.team))
    for team, b in sorted((ledger.budgets() if ledger else {}).items()):
        if args.team is None or team == args.team:
            print(f"allocation: team {team}: {b['gpu_hours']:g} GPU-hours per {b['period']}, set by {b['set_by']} "
                  f"at {_utc(b['set_at'])}" + (f" ({b['note']})" if b["note"] else ""))
    if args.plot:
        print(f"plot: {plot_report(rows, args.plot)}")
    return 0
