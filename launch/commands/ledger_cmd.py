"""`ladder ledger migrate`: copy a SQLite ledger and registry into a team's PostgreSQL server.

    ladder ledger migrate --to postgresql://ladder@db-host/ladder [trainer.run_root=runs]
    ladder ledger migrate --to postgresql://ladder@db-host/ladder --registry-to postgresql://ladder@db-host/evals

The source is the configured ledger.url and registry (registry.url, else registry.db in
trainer.run_root). Every table is copied with its ids (promotions point at jobs by id) into
an empty target, in one transaction per store that checks, before it commits, that every
table's row count and the GPU-hour totals match the source; on a mismatch nothing is kept. A
store whose target already holds exactly the source's rows is skipped, so a migrate killed
between the ledger and the registry is finished by running it again, nothing copied twice.
The target's schema is created by the same versioned migrations as any store
(training/common/store.py). The verb declares its arguments here (register); launch/cli.py collects it.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from launch.cli_args import add_ledger_overrides
from training.common.errors import ConfigError
from training.common.store import Store

# table -> the columns whose sums must survive the copy (GPU-hours, and the registry's hours)
LEDGER_TABLES = {
    "jobs": ("planned_gpu_hours", "used_gpu_hours", "waste_gpu_hours"),
    "promotions": (),
    "budgets": ("gpu_hours",),
    "budget_changes": ("gpu_hours",),
    "bench_rates": ("mfu",),
    "team_members": (),
    "team_member_changes": (),
}
REGISTRY_TABLES = {"checkpoints": ("device_hours",), "results": ("score",), "wandb_logged": ()}
HAS_ID = {"jobs", "promotions", "budget_changes", "bench_rates", "team_member_changes"}


def register(subparsers, epilog: str = "") -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    led = subparsers.add_parser(
        "ledger",
        formatter_class=fmt,
        help="move the ledger and registry to a server",
        description="Manage where the ledger and registry live.",
    )
    sub = led.add_subparsers(dest="ledger_verb", metavar="SUBVERB", required=True)
    mig = sub.add_parser(
        "migrate",
        formatter_class=fmt,
        help="copy the SQLite ledger and registry to PostgreSQL",
        description="Copy the configured SQLite ledger and registry, every row with its id, into "
        "an empty PostgreSQL database, checking row counts and GPU-hour totals "
        "before committing. The password comes from ~/.pgpass or PGPASSWORD, "
        "never from the URL. Then set ledger.url and registry.url to the new URL.",
        epilog=epilog
        + "\nexample:\n  ladder ledger migrate --to postgresql://ladder@db-host:5432/ladder "
        "trainer.run_root=/data/runs",
    )
    add_ledger_overrides(mig, "the source")
    mig.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the target ledger: postgresql://user@host:port/db",
    )
    mig.add_argument(
        "--registry-to", default=None, metavar="URL", help="the target registry (default: --to)"
    )
    mig.set_defaults(handler=cmd_migrate)


def totals(db, tables: dict[str, tuple[str, ...]]) -> dict[str, dict[str, float]]:
    out = {}
    for table, cols in tables.items():
        sums = "".join(f", COALESCE(SUM({c}), 0) AS {c}" for c in cols)
        out[table] = {
            k: float(v) for k, v in db.one(f"SELECT COUNT(*) AS rows{sums} FROM {table}").items()
        }
    return out


def same_totals(got: dict, want: dict) -> bool:
    return all(
        math.isclose(got[table][col], value, rel_tol=1e-12, abs_tol=1e-9)
        for table, cols in want.items()
        for col, value in cols.items()
    )


def copy_store(
    source: Store, target: Store, tables: dict[str, tuple[str, ...]]
) -> tuple[dict[str, dict[str, float]], bool]:
    """Copy every row of `tables` from source into target (which must hold none); returns the
    source's row counts and sums, checked against the target's before the commit, and whether it
    copied. A target that already holds exactly the source's rows (an earlier migrate copied this
    store, then was killed before the next) is left as it is: a rerun finishes what is missing."""
    with source._session() as src:
        expected = totals(src, tables)
        rows = {
            t: src.all(f"SELECT * FROM {t}" + (" ORDER BY id" if t in HAS_ID else ""))
            for t in tables
        }
    with target.transaction() as db:
        db.lock("ledger migrate")
        have = totals(db, tables)
        held = {t: n["rows"] for t, n in have.items() if n["rows"]}
        if held and same_totals(have, expected):
            return expected, False
        if held:
            raise ConfigError(
                f"the {target.COMPONENT} at {target.where} already holds rows ("
                + ", ".join(f"{t}: {int(n)}" for t, n in held.items())
                + ") that are not the source's; migrate copies into an empty database only, so "
                "nothing was copied"
            )
        for table, table_rows in rows.items():
            for row in table_rows:
                db.insert(table, row, returning_id=False)
            if table in HAS_ID and target.backend == "postgresql" and table_rows:
                # ids were copied as they were: the next new row must get the one after the largest
                db.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
                )
        got = totals(db, tables)
        for table, want in expected.items():
            for col, value in want.items():
                if not math.isclose(got[table][col], value, rel_tol=1e-12, abs_tol=1e-9):
                    raise ConfigError(
                        f"copying the {source.COMPONENT}: {table}.{col} is {got[table][col]} in the "
                        f"target but {value} in the source; nothing was kept"
                    )
    return expected, True


def cmd_migrate(args) -> int:
    from evals.store.registry import Registry, registry_path
    from launch.accounting.ledger import Ledger
    from training.common.store_url import parse_store_url
    from training.config.compose import compose

    cfg = compose(args.overrides)
    for key, url in (("--to", args.to), ("--registry-to", args.registry_to)):
        if url is not None and parse_store_url(url, key).backend != "postgresql":
            raise ConfigError(
                f"{key} {url}: migrate copies into a PostgreSQL server (postgresql://user@host/db)"
            )
    ledger = Ledger.existing(cfg)
    if ledger is None or ledger.backend != "sqlite":
        raise ConfigError(f"ledger.url={cfg.ledger.url}: no SQLite ledger there to migrate")
    reg_path = registry_path(cfg.registry.url, None, cfg.trainer.run_root)
    if not isinstance(reg_path, Path):
        raise ConfigError(
            f"registry.url={cfg.registry.url} is already a server; migrate copies a SQLite registry"
        )
    work = [("ledger", ledger, Ledger(args.to, cfg.ledger.busy_timeout_s), LEDGER_TABLES)]
    if reg_path.is_file():
        work.append(
            ("registry", Registry(reg_path), Registry(args.registry_to or args.to), REGISTRY_TABLES)
        )
    else:
        print(f"ladder ledger migrate: no registry at {reg_path}; only the ledger is copied")
    for name, source, target, tables in work:
        copied, fresh = copy_store(source, target, tables)
        if not fresh:
            print(
                f"ladder ledger migrate: {name} {source.where} -> {target.where}: already copied "
                "(every table's rows and totals match the source); nothing copied again"
            )
            continue
        summary = ", ".join(f"{t} {int(c['rows'])}" for t, c in copied.items())
        hours = copied.get("jobs", {})
        extra = (
            (
                f"; GPU-hours planned {hours['planned_gpu_hours']:g}, used {hours['used_gpu_hours']:g}, "
                f"wasted {hours['waste_gpu_hours']:g}"
            )
            if hours
            else ""
        )
        print(
            f"ladder ledger migrate: {name} {source.where} -> {target.where}: rows {summary}{extra}; "
            "counts and totals checked"
        )
    print(
        f"now point the team at it: ledger.url={args.to} registry.url={args.registry_to or args.to} "
        "(e.g. in configs/config.yaml); the SQLite files are left as they were"
    )
    return 0
