"""`ladder budget`: set a team's GPU-hour allocation in the ledger, and report on every team's.

    ladder budget set --team llm --period month --gpu-hours 5000 [--note "Q4 grant"] [ledger.url=...]
    ladder budget members --team llm [--add alice] [--remove bob] [ledger.url=...]
    ladder budget report [--team llm] [--plot budget.png] [overrides that locate the ledger]

An allocation is data in the ledger (launch/accounting/ledger.py: `budgets`, and every change in
`budget_changes` with who made it and when), never a value a job's config can raise; so is who
may charge a team (launch/accounting/team_members.py: `team_members`, and `team_member_changes`). The verb
declares its arguments and handlers here (register); launch/cli.py only collects it.
"""

from __future__ import annotations

import argparse
import math
import time

from launch.accounting.ledger import PERIODS
from launch.cli_args import add_ledger_overrides
from training.common.errors import ConfigError


def register(subparsers, epilog: str = "") -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    bu = subparsers.add_parser(
        "budget",
        formatter_class=fmt,
        help="GPU-hour budgets by team and period",
        description="Budgets: each team's GPU-hour allocation per period lives in the "
        "ledger; `ladder launch` checks a job against its team's (budget.team).",
    )
    sub = bu.add_subparsers(dest="budget_verb", metavar="SUBVERB", required=True)
    st = sub.add_parser(
        "set",
        formatter_class=fmt,
        help="set a team's allocation (recorded with who and when)",
        description="Set TEAM's allocation to H GPU-hours per PERIOD (UTC weeks, months, "
        "quarters or years), from now on. The change is recorded in the ledger with "
        "who made it (user@host, and the database role on PostgreSQL) and when.",
        epilog=epilog
        + "\nexamples:\n  ladder budget set --team llm --period month --gpu-hours 5000\n"
        "  ladder budget set --team llm --period quarter --gpu-hours 2e4 "
        "ledger.url=postgresql://ladder@db-host/ladder",
    )
    add_ledger_overrides(st)
    st.add_argument("--team", required=True, help="the team, as jobs name it in budget.team")
    st.add_argument(
        "--period", required=True, choices=PERIODS, help="the allocation is per this period"
    )
    st.add_argument(
        "--gpu-hours", required=True, type=float, metavar="H", help="GPU-hours per period (>= 0)"
    )
    st.add_argument(
        "--note", default=None, help="why, for the record (e.g. the grant or who approved it)"
    )
    st.set_defaults(handler=cmd_budget_set)
    me = sub.add_parser(
        "members",
        formatter_class=fmt,
        help="list, add or remove who may charge a team",
        description="A team with members listed admits launches by them only; a team with "
        "none is open to anyone who can write the ledger. Members are matched "
        "against the database role on PostgreSQL (authenticated by the server) and "
        "the OS user on SQLite ($USER: a local file is trusted anyway). Each change "
        "is recorded with who made it and when. Without --add or --remove: list.",
        epilog=epilog + "\nexamples:\n  ladder budget members --team llm --add alice --add bob\n"
        "  ladder budget members --team llm --remove bob ledger.url=postgresql://ladder@db-host/ladder",
    )
    add_ledger_overrides(me)
    me.add_argument("--team", required=True, help="the team, as jobs name it in budget.team")
    me.add_argument(
        "--add", action="append", default=[], metavar="USER", help="add a member (repeatable)"
    )
    me.add_argument(
        "--remove", action="append", default=[], metavar="USER", help="remove a member (repeatable)"
    )
    me.set_defaults(handler=cmd_budget_members)
    br = sub.add_parser(
        "report",
        formatter_class=fmt,
        help="allocated, used, running, wasted and useful hours",
        description="Per team and period: allocated, used, planned-and-running, wasted and "
        "MFU-weighted (useful) GPU-hours, what is left, and the cost.",
        epilog=epilog,
    )
    add_ledger_overrides(br)
    br.add_argument("--plot", metavar="FILE", default=None, help="also write a PNG chart to FILE")
    br.add_argument("--team", default=None, help="only this team")
    br.set_defaults(handler=cmd_budget_report)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _show(value) -> str:
    """Text read from the ledger, for print(): other tools may have written the row (safe_text)."""
    from launch.console import safe_text

    return safe_text(value, markup=False)


def cmd_budget_set(args) -> int:
    from launch.accounting.ledger import NOTE_MAX, Ledger, check_name
    from launch.console import num
    from training.config.compose import compose

    if not math.isfinite(args.gpu_hours) or args.gpu_hours < 0:
        raise ConfigError(
            f"--gpu-hours {args.gpu_hours}: give a finite number of GPU-hours, 0 or more"
        )
    if not args.team.strip():
        raise ConfigError("--team: name the team")
    check_name("--team", args.team)  # before the ledger is opened (or created)
    if args.note is not None:
        check_name("--note", args.note, NOTE_MAX)
    ledger = Ledger.from_config(compose(args.overrides))
    with ledger.transaction() as db:
        before = ledger.set_budget(db, args.team, args.period, args.gpu_hours, note=args.note)
    row = ledger.budgets()[args.team]
    was = (
        f" (was {num(before['gpu_hours'])} per {before['period']})"
        if before
        else " (its first allocation)"
    )
    print(
        f"ladder budget: team {args.team}: {num(row['gpu_hours'])} GPU-hours per {row['period']}{was}; "
        f"set by {_show(row['set_by'])} at {_utc(row['set_at'])} in the ledger {ledger.where}"
    )
    return 0


def cmd_budget_members(args) -> int:
    from launch.accounting.ledger import Ledger, check_name
    from launch.accounting.team_members import change_members, launcher_name, matched_as, members
    from training.config.compose import compose

    if not args.team.strip():
        raise ConfigError("--team: name the team")
    check_name("--team", args.team)  # before the ledger is opened (or created)
    for name in [*args.add, *args.remove]:
        check_name("member", name)
    cfg = compose(args.overrides)
    ledger = Ledger.from_config(cfg) if args.add or args.remove else Ledger.existing(cfg)
    if ledger is None:
        print(f"team {args.team}: open: no members listed (no ledger at {cfg.ledger.url} yet)")
        return 0
    with ledger.transaction() as db:
        before = members(db, args.team)
        change = (
            change_members(db, args.team, args.add, args.remove)
            if args.add or args.remove
            else None
        )
        rows, me, matched = members(db, args.team), launcher_name(db), matched_as(db)
    if change is not None:
        done = [
            f"added {', '.join(change['added'])}" if change["added"] else "",
            f"removed {', '.join(change['removed'])}" if change["removed"] else "",
            f"already members: {', '.join(change['already'])}" if change["already"] else "",
        ]
        print(f"ladder budget members: team {args.team}: " + "; ".join(d for d in done if d))
        if rows and not before:
            print(f"team {args.team} now admits launches by its members only")
    if not rows:
        print(
            f"team {args.team}: open: no members listed (anyone who can write the ledger {ledger.where} "
            "can launch for it)"
        )
    for r in rows:
        print(f"  {_show(r['member'])}  added by {_show(r['added_by'])} at {_utc(r['added_at'])}")
    mine = "a member" if any(r["member"] == me for r in rows) else ("not a member" if rows else "")
    print(f"you are {me!r} on this ledger ({matched})" + (f": {mine}" if mine else ""))
    return 0


def cmd_budget_report(args) -> int:
    from launch.accounting.budget import (
        plan_accuracy,
        plot_report,
        render_plan_accuracy,
        render_report,
        report_rows,
    )
    from launch.accounting.ledger import ACTIVE, Ledger, check_name
    from launch.accounting.team_members import all_members
    from launch.commands.status_cmd import refresh
    from training.config.compose import compose

    if args.team is not None:
        check_name("--team", args.team)  # one clear line, not an encoding error from the database
    cfg = compose(args.overrides)
    ledger = Ledger.existing(cfg)
    if ledger is not None:  # jobs still pending or running (or failed too early): settle them first
        refresh(ledger, [j for j in ledger.jobs() if j["state"] in (*ACTIVE, "failed")])
    rows = report_rows(ledger, cfg.budget.price_per_gpu_hour, team=args.team)
    render_report(rows, ledger.where if ledger else f"{cfg.ledger.url} (no jobs recorded yet)")
    render_plan_accuracy(plan_accuracy(ledger, team=args.team))
    for team, b in sorted((ledger.budgets() if ledger else {}).items()):
        if args.team is None or team == args.team:
            print(
                f"allocation: team {_show(team)}: {b['gpu_hours']:g} GPU-hours per {_show(b['period'])}, set by "
                f"{_show(b['set_by'])} at {_utc(b['set_at'])}"
                + (f" ({_show(b['note'])})" if b["note"] else "")
            )
    listed = all_members(ledger) if ledger else {}
    for team in sorted({r.team for r in rows} | set(listed)):
        if args.team is None or team == args.team:
            names = (
                ", ".join(map(_show, listed[team])) if team in listed else "open: no members listed"
            )
            print(f"members: team {_show(team)}: {names}")
    if args.plot:
        print(f"plot: {plot_report(rows, args.plot)}")
    return 0
