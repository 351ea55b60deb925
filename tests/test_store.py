"""The store behind the ledger and registry on both backends: a real SQLite file and a real
PostgreSQL server (tests/cluster/postgres.py, one for the session).

    .venv/bin/python -m pytest -q tests/test_store.py             # -m "not postgres": SQLite only
"""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time

import pytest

import launch.accounting.ledger as ledger_mod
from evals.store.registry import Registry
from launch.accounting.budget import check_and_record, check_and_record_many
from launch.accounting.ledger import Ledger
from training.common.errors import BudgetError, ConfigError
from training.common.store import StoreError
from training.common.store_url import mask_url, parse_store_url

JOB = dict(rung="tiny", gpus=1, run_name="r", run_dir="/tmp/none")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    """The same test on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ladder.db"
    return request.getfixturevalue("pg_url")


def test_urls_parse_and_a_password_in_one_is_refused_unshown():
    assert parse_store_url("sqlite:////data/l.db", "ledger.url").path.as_posix() == "/data/l.db"
    assert parse_store_url("runs/l.db", "ledger.url").backend == "sqlite"
    assert parse_store_url("postgresql://ladder@db:5432/team", "ledger.url").backend == "postgresql"
    for bad in (
        "postgresql://ladder:hunter2secret@db/team",
        "postgresql://ladder@db/team?password=hunter2secret",
    ):
        with pytest.raises(ConfigError) as e:
            parse_store_url(bad, "ledger.url")
        assert (
            "hunter2secret" not in str(e.value)
            and "db/team" not in str(e.value)
            and "pgpass" in str(e.value)
        )
    assert mask_url("postgresql://u:pw@h/d") == "postgresql://u:***@h/d"
    assert mask_url("postgresql://u@h/d?pass%77ord=pw&a=1") == "postgresql://u@h/d?password=***&a=1"
    with pytest.raises(ConfigError, match="name the database"):
        parse_store_url("postgresql://ladder@db", "ledger.url")
    with pytest.raises(ConfigError, match="SQLite path .* or a PostgreSQL URL"):
        parse_store_url("mysql://db/x", "registry.url")


def test_ledger_and_registry_behave_the_same_on_both_backends(url, tmp_path):
    ledger = Ledger(url)
    with ledger.transaction() as db:
        ledger.set_budget(db, "llm", "month", 10.0, note="grant 7")
        a = ledger.insert_job(
            db, team="llm", period="2026-11", planned_gpu_hours=2.0, state="running", **JOB
        )
        b = ledger.insert_job(db, team="llm", period="2026-11", planned_gpu_hours=1.0, **JOB)
    ledger.update_job(b, state="completed", used_gpu_hours=1.25)
    ledger.update_job(a, used_gpu_hours=3.5)  # a running job over its plan counts its used hours
    with ledger.transaction() as db:
        assert ledger.committed_hours(db, "llm", "2026-11") == {
            "used": 1.25,
            "running": 3.5,
            "committed": 4.75,
        }
    with pytest.raises(KeyError):
        ledger.update_job(999, state="failed")
    assert [j["id"] for j in ledger.jobs(team="llm")] == [a, b]
    assert ledger.budgets()["llm"]["note"] == "grant 7"

    reg = Registry(url, cache_root=tmp_path)
    ckpt = tmp_path / "runs" / "r" / "checkpoints" / "step_000002"
    ckpt.mkdir(parents=True)
    reg.register_checkpoint(ckpt, "hash1")
    reg.register_checkpoint(ckpt, "hash2")  # registered again: the row is replaced, not duplicated
    assert [c["content_hash"] for c in reg.checkpoints()] == ["hash2"]
    reg.mark_logged("w1", ["k1", "k2"], 2)
    reg.mark_logged("w1", ["k1"], 2)  # already there: kept once
    assert (
        reg.was_logged("w1", ["k1", "k2"])
        and not reg.was_logged("w1", ["k3"])
        and not reg.was_logged("w1", [])
    )
    assert reg.query("SELECT COUNT(*) AS n FROM wandb_logged")[0]["n"] == 2


def test_a_new_sqlite_ledger_gives_the_default_team_its_allocation_and_a_server_gives_none(url):
    ledger = Ledger(url)
    if ledger.backend == "sqlite":
        assert ledger.budgets()["default"]["gpu_hours"] == 10000.0
        assert "initial allocation" in ledger.budget_changes()[0]["set_by"]
    else:
        assert ledger.budgets() == {}
        with pytest.raises(
            BudgetError, match="team 'default' has no GPU-hour allocation.*ladder budget set"
        ):
            check_and_record(ledger, "default", 1.0, JOB)
        assert ledger.jobs() == []


def test_an_old_sqlite_ledger_is_migrated_step_by_step(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)  # a version-1 ledger: jobs without the columns later versions added
    db.executescript("""CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, team TEXT NOT NULL, project TEXT,
        sweep TEXT, rung TEXT NOT NULL, period TEXT NOT NULL, run_name TEXT, run_dir TEXT, config_hash TEXT,
        launcher TEXT, external_id TEXT, gpus INTEGER NOT NULL, planned_gpu_hours REAL NOT NULL,
        used_gpu_hours REAL NOT NULL DEFAULT 0, waste_gpu_hours REAL NOT NULL DEFAULT 0,
        hours_before REAL NOT NULL DEFAULT 0, mfu REAL, tokens_per_s REAL, state TEXT NOT NULL, reason TEXT,
        override_reason TEXT, created_at REAL NOT NULL, started_at REAL, updated_at REAL NOT NULL, finished_at REAL);
        INSERT INTO jobs (team, rung, period, gpus, planned_gpu_hours, state, created_at, updated_at)
        VALUES ('default', 'tiny', '2026-11', 1, 0.5, 'completed', 1, 1);
        PRAGMA user_version = 1;""")
    db.close()
    ledger = Ledger(path)
    assert ledger.schema_version() == ledger_mod.SCHEMA_VERSION
    [job] = ledger.jobs()
    assert (
        job["kind"] == "train"
        and job["allow_contamination"] == 0
        and job["planned_gpu_hours"] == 0.5
    )
    assert "default" in ledger.budgets()  # an upgraded local ledger keeps working out of the box


def test_a_schema_from_a_newer_ladder_is_refused_naming_its_version(url):
    ledger = Ledger(url)
    with ledger.transaction() as db:
        db.execute(
            "UPDATE ladder_schema SET version = 42, written_by = '9.1.0' WHERE component = 'ledger'"
        )
    with pytest.raises(
        StoreError,
        match=r"schema version 42, written by Ladder 9\.1\.0; this Ladder .* knows "
        rf"versions up to {ledger_mod.SCHEMA_VERSION}\. Upgrade Ladder",
    ):
        Ledger(url)
    Registry(
        url
    )  # the registry's own version is its own: a shared database keeps one per component


# ---- concurrency: launcher processes racing for the last hours ----------------------------------


def _launch_one(url: str, team: str, hours: float, start_at: float, results) -> None:
    while time.time() < start_at:  # all processes open the ledger first, then go at once
        time.sleep(0.001)
    try:
        results.put(("ok", check_and_record(Ledger(url), team, hours, JOB)))
    except BudgetError:
        results.put(("refused", None))
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        results.put(("error", repr(e)))


def _race(target, args_of, n: int) -> list[tuple]:
    ctx = mp.get_context(
        "fork"
    )  # real processes, each with its own connection; fork is the cheap start
    results = ctx.Queue()
    start_at = time.time() + 1.5
    procs = [ctx.Process(target=target, args=(*args_of(i), start_at, results)) for i in range(n)]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return out


def test_sixteen_concurrent_launches_admit_exactly_what_fits(url):
    ledger = Ledger(url)
    with ledger.transaction() as db:
        ledger.set_budget(db, "race", "month", 10.0)
    # 16 launches of 1.5 GPU-hours against 10: exactly 6 fit (9 hours); a 7th would make 10.5
    out = _race(_launch_one, lambda i: (url, "race", 1.5), 16)
    assert [o for o in out if o[0] == "error"] == []
    passed = sorted(o[1] for o in out if o[0] == "ok")
    assert len(passed) == 6 and sum(o[0] == "refused" for o in out) == 10
    assert all(
        "@" in j["launched_by"] for j in Ledger(url).jobs()
    )  # who launched each, beside its team
    jobs = ledger.jobs(team="race")
    assert (
        sorted(j["id"] for j in jobs) == passed
    )  # every admitted launch is recorded, nothing else
    assert sum(j["planned_gpu_hours"] for j in jobs) == pytest.approx(9.0)
    with ledger.transaction() as db:
        assert ledger.committed_hours(db, "race", jobs[0]["period"])["committed"] == pytest.approx(
            9.0
        )


def _promote_one(url: str, team: str, start_at: float, results) -> None:
    while time.time() < start_at:
        time.sleep(0.001)
    try:
        ids = check_and_record_many(
            Ledger(url), team, [(0.1, {**JOB, "sweep": "lr@big"})] * 2, new_sweep="lr@big"
        )
        results.put(("ok", ids))
    except ConfigError as e:
        results.put(("refused", str(e)))
    except Exception as e:  # noqa: BLE001
        results.put(("error", repr(e)))


def test_concurrent_promotions_to_one_sweep_are_serialised(url):
    ledger = Ledger(url)
    with (
        ledger.transaction() as db
    ):  # two teams: their budget rows do not serialise them, the sweep lock does
        ledger.set_budget(db, "a", "month", 100.0)
        ledger.set_budget(db, "b", "month", 100.0)
    out = _race(_promote_one, lambda i: (url, "ab"[i % 2]), 4)
    assert [o for o in out if o[0] == "error"] == []
    assert sum(o[0] == "ok" for o in out) == 1
    assert all("already has jobs" in o[1] for o in out if o[0] == "refused")
    assert len(ledger.sweep_jobs("lr@big")) == 2


def test_a_writer_held_up_past_the_busy_timeout_gets_one_clear_line(url):
    """Another writer holds the budget lock (PostgreSQL) or the file's write lock (SQLite) for longer
    than ledger.busy_timeout_s: the waiting launch is told so, and nothing is recorded."""
    Ledger(url)  # the schema exists before the blocker takes its lock
    ledger = Ledger(url, busy_timeout_s=0.5)
    if url.startswith("sqlite"):
        blocker = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        blocker = psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
        )
        blocker.execute("SELECT pg_advisory_lock(hashtext('budget:default'))")
    try:
        t0 = time.time()
        with pytest.raises(
            StoreError,
            match=r"stayed locked by another writer for 0.5 s \(ledger.busy_timeout_s\); "
            r"nothing was changed",
        ):
            check_and_record(ledger, "default", 0.1, JOB)
        assert time.time() - t0 < 10
    finally:
        blocker.close()
    assert Ledger(url).jobs() == []
