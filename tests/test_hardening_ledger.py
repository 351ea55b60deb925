"""Issue #21, items 7, 8, 10 and 11, against a real SQLite file and a real PostgreSQL server:
names and text from the ledger never act on the terminal; a local job's PID is acted on only on
its own host and while its own process holds it; a role cannot shadow the ledger's tables with a
schema of its own; a store URL is a PostgreSQL URL or a SQLite file, never a password's carrier.

    .venv/bin/python -m pytest -q tests/test_hardening_ledger.py     # -m "not postgres": SQLite only
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ladder_cli

from launch.accounting.ledger import SCHEMA_VERSION, Ledger, process_start, this_host
from training.common.errors import BudgetError, ConfigError

CONTROL = ("\x1b", "\x07")  # what must never reach the terminal raw
TINY = ["rung=tiny", "tracker.mode=disabled"]


def ladder_argv(*args, cwd: Path) -> subprocess.CompletedProcess:
    """The installed `ladder` with arguments that may be bytes (argv that is not UTF-8)."""
    exe = Path(sys.executable).parent / "ladder"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, timeout=300)


def shown(proc) -> str:
    return proc.stdout + proc.stderr


# ---- item 7: names at entry, and everything read back ----------------------------------------


def test_names_with_control_characters_bad_bytes_or_too_long_are_refused_before_anything_is_written(
    tmp_path,
):
    root = f"trainer.run_root={tmp_path / 'runs'}"
    attempts = [
        (
            ["budget", "members", "--team", "t", "--add", "a\x1b]0;pwn\x07"],
            "member 'a\\x1b]0;pwn\\x07' holds control",
        ),
        (
            ["budget", "set", "--team", "t\x1b[2J", "--period", "month", "--gpu-hours", "5"],
            "holds control characters",
        ),
        (
            ["budget", "set", "--team", "t" * 65, "--period", "month", "--gpu-hours", "5"],
            "65 characters long",
        ),
        (
            [
                "budget",
                "set",
                "--team",
                "t",
                "--period",
                "month",
                "--gpu-hours",
                "5",
                "--note",
                "ok\x1b[31m",
            ],
            "--note 'ok\\x1b[31m' holds control characters",
        ),
    ]
    for args, message in attempts:
        proc = ladder_cli(*args, root, cwd=tmp_path)
        assert proc.returncode == 2, shown(proc)
        assert message in proc.stderr and not any(c in shown(proc) for c in CONTROL)
    # argv with bytes that are not UTF-8 (Python hands them on surrogate-escaped): one clear line
    proc = ladder_argv(
        "budget",
        "set",
        "--team",
        b"t\xff",
        "--period",
        "month",
        "--gpu-hours",
        "5",
        root,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and b"holds bytes that are not UTF-8" in proc.stderr, proc.stderr
    assert b"Traceback" not in proc.stderr and b"\xff" not in proc.stdout + proc.stderr
    assert list(tmp_path.rglob("*")) == []  # no ledger was created, so nothing was recorded


def test_text_another_tool_wrote_into_the_ledger_is_printed_escaped(tmp_path):
    """The issue's reproduction (a team called `[/bold]` broke every later `budget report` with
    MarkupError), and rows with ESC sequences written straight into the file, as another tool could."""
    root = f"trainer.run_root={tmp_path}"
    proc = ladder_cli(
        "budget", "set", "--team", "[/bold]", "--period", "month", "--gpu-hours", "5", root
    )
    assert proc.returncode == 0, shown(proc)
    ledger = Ledger(tmp_path / "ladder.db")
    evil = "evil\x1b]0;pwn\x07"
    period = time.strftime("%Y-%m", time.gmtime())
    db = sqlite3.connect(tmp_path / "ladder.db")
    with db:
        db.execute(
            "INSERT INTO budgets VALUES (?, 'month', 7, ?, 0, ?)",
            (evil, "[bold]mallory\x1b[2J", "\x1b[31mred"),
        )
        db.execute("INSERT INTO team_members VALUES (?, ?, 'x', 0)", (evil, "m\x1b[2J"))
    db.close()
    ledger.add_job(
        team="[/bold]",
        period=period,
        rung="[red]tiny",
        gpus=1,
        planned_gpu_hours=1.0,
        run_name="[/red]run\x1b[2J",
        launcher="slurm",
        state="failed",
        reason="boom\x1b]0;t\x07\n[/]tail",
        used_gpu_hours=0.5,
        finished_at=time.time(),
    )

    report = ladder_cli("budget", "report", root)
    assert report.returncode == 0 and "MarkupError" not in report.stderr, shown(report)
    assert not any(c in shown(report) for c in CONTROL)
    out = report.stdout
    assert (
        "[/bold]" in out and "evil\\x1b]0;pwn\\x07" in out and "set by [bold]mallory\\x1b[2J" in out
    )
    assert "(\\x1b[31mred)" in out and "members: team evil\\x1b]0;pwn\\x07: m\\x1b[2J" in out

    status = ladder_cli("status", root)
    assert status.returncode == 0 and "MarkupError" not in status.stderr, shown(status)
    assert not any(c in shown(status) for c in CONTROL)
    assert "[/red]run\\x1b[2J" in status.stdout and "boom\\x1b]0;t\\x07" in status.stdout
    assert "[/]tail" in status.stdout  # a reason's later lines stay lines of their own


def test_registry_text_in_the_leaderboard_is_printed_escaped(tmp_path, monkeypatch):
    from evals.store.cache import task_specs
    from evals.store.registry import Registry
    from training.config.compose import compose

    cfg = compose([f"trainer.run_root={tmp_path}"])
    reg = Registry(tmp_path / "registry.db")
    now = time.time()
    with reg.transaction() as db:
        db.insert(
            "checkpoints",
            {
                "path": str(tmp_path / "ck"),
                "content_hash": "h",
                "run_name": "[/bold]r\x1b]0;x\x07",
                "rung": "[red]tiny",
                "recipe": "sft\x1b[2J",
                "data": "d",
                "sweep": "[/]s",
                "step": 10,
                "registered_at": now,
            },
            returning_id=False,
        )
        for spec in task_specs(cfg.eval):
            db.insert(
                "results",
                {
                    "cache_key": spec.name,
                    "content_hash": "h",
                    "task": spec.name,
                    "metric": "acc",
                    "score": 50.0,
                    "n": 1,
                    "settings_key": spec.settings_key,
                    "evaluated_at": now,
                },
                returning_id=False,
            )
    monkeypatch.setenv("COLUMNS", "200")  # rich's width: no column folded
    proc = ladder_cli("leaderboard", f"trainer.run_root={tmp_path}")
    assert proc.returncode == 0 and "MarkupError" not in proc.stderr, shown(proc)
    assert not any(c in shown(proc) for c in CONTROL)
    assert "[/bold]r\\x1b]0;x\\x07@10" in proc.stdout and "sft\\x1b[2J" in proc.stdout


# ---- item 8: a local job's PID, on its own host only -------------------------------------------


def _sleeper() -> subprocess.Popen:
    """A live process of this host, reaped as soon as it ends (so it never lingers as a zombie)."""
    proc = subprocess.Popen(["sleep", "120"])
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc


def _local_job(ledger: Ledger, tmp_path: Path, **fields) -> int:
    return ledger.add_job(
        team="default",
        period="2026-01",
        rung="tiny",
        gpus=1,
        planned_gpu_hours=1.0,
        launcher="local",
        run_name="r",
        run_dir=str(tmp_path / "r"),
        state="running",
        started_at=time.time(),
        **fields,
    )


def test_status_and_cancel_leave_a_job_of_another_host_alone(tmp_path):
    """Two hosts on one ledger, honestly: another host's launcher records its jobs (host gpu-3); here
    a live process has the first one's PID, and the second's PID names no process here."""
    root = f"trainer.run_root={tmp_path}"
    ledger = Ledger(tmp_path / "ladder.db")
    live = _sleeper()
    ended = subprocess.Popen(["true"])
    ended.wait()
    try:
        there = _local_job(
            ledger, tmp_path, external_id=str(live.pid), host="gpu-3", process_start="b:1"
        )
        gone_here = _local_job(
            ledger, tmp_path, external_id=str(ended.pid), host="gpu-3", process_start="b:2"
        )
        before = ledger.jobs()

        status = ladder_cli("status", root)
        assert status.returncode == 0, shown(status)
        for job, pid in ((there, live.pid), (gone_here, ended.pid)):
            assert (
                f"job {job} runs on host gpu-3 (pid {pid}); run `ladder status` there"
                in status.stdout
            )
        assert ledger.jobs() == before  # neither was recorded as finished

        cancel = ladder_cli("cancel", str(there), str(gone_here), root)
        assert cancel.returncode == 1, shown(cancel)
        assert (
            f"job {there} runs on host gpu-3 (pid {live.pid}); run `ladder cancel {there}` there; left as it is"
            in cancel.stdout
        )
        time.sleep(0.5)
        assert live.poll() is None  # not signalled
        assert ledger.jobs() == before
    finally:
        live.kill()


def test_a_reused_pid_is_not_signalled_and_the_jobs_own_process_is(tmp_path):
    root = f"trainer.run_root={tmp_path}"
    ledger = Ledger(tmp_path / "ladder.db")
    other, own = _sleeper(), _sleeper()
    try:
        # the job's process started at another time than the live process now holding its PID
        reused = _local_job(
            ledger,
            tmp_path,
            external_id=str(other.pid),
            host=this_host(),
            process_start=process_start(os.getpid()),
        )
        cancel = ladder_cli("cancel", str(reused), root)
        assert cancel.returncode == 0, shown(cancel)
        time.sleep(0.5)
        assert other.poll() is None  # a stranger's process is left alone
        assert (
            ledger.job(reused)["state"] == "failed"
        )  # the job's own process is gone: finished from its heartbeat

        job = _local_job(ledger, tmp_path)
        ledger.record_pid(job, own.pid)  # as the local launcher records its trainer's process
        row = ledger.job(job)
        assert (row["host"], row["process_start"]) == (this_host(), process_start(own.pid))
        cancel = ladder_cli("cancel", str(job), root)
        assert cancel.returncode == 0, shown(cancel)
        assert own.wait(timeout=30) == -15  # SIGTERM, on this host, to the job's own process
        assert ledger.job(job)["state"] == "cancelled"
    finally:
        other.kill()
        own.kill()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ladder.db"
    return request.getfixturevalue("pg_url")


def test_a_version_8_ledger_gains_the_host_and_process_start_of_its_jobs(url, tmp_path):
    ledger = Ledger(url)
    old = _local_job(ledger, tmp_path, external_id="4242")
    with ledger.transaction() as db:  # a version-8 ledger, from before hosts were recorded
        db.execute("ALTER TABLE jobs DROP COLUMN host")
        db.execute("ALTER TABLE jobs DROP COLUMN process_start")
        db.execute("ALTER TABLE jobs DROP COLUMN allow_unchecked")  # version 10's
        db.execute("ALTER TABLE jobs DROP COLUMN point")  # version 11's
        db.execute("ALTER TABLE jobs DROP COLUMN adapter")  # version 12's
        db.execute("ALTER TABLE jobs DROP COLUMN overhead_s")  # version 13's
        db.execute("UPDATE ladder_schema SET version = 8 WHERE component = 'ledger'")
    ledger = Ledger(url)
    assert ledger.schema_version() == SCHEMA_VERSION == 13
    assert ledger.job(old)["host"] is None and ledger.job(old)["external_id"] == "4242"
    job = _local_job(ledger, tmp_path)
    ledger.mark_started(job, external_id=str(os.getpid()))
    assert ledger.job(job)["host"] == this_host()
    assert ledger.job(job)["process_start"] == process_start(os.getpid()) is not None


# ---- item 10: a role's own schema shadows nothing ----------------------------------------------


@pytest.mark.postgres
def test_a_role_with_a_schema_of_its_own_cannot_shadow_team_members_or_budgets(
    pg_url, postgres_server, tmp_path, monkeypatch
):
    """The attack as the issue gives it: a launcher's role gets a schema named after itself (as
    PostgreSQL recommends per user), puts an empty `team_members` and a `budgets` row of 1e9 hours
    for team mt in it, and asks for its own schema first by every means a role has."""
    import psycopg

    from launch.accounting.budget import check_and_record
    from launch.accounting.team_members import change_members

    owner = Ledger(pg_url)
    role, password = f"intruder_{os.getpid()}", "intruder-pw-" + postgres_server.password[:8]
    with owner.transaction() as db:
        owner.set_budget(db, "mt", "month", 5.0)
        change_members(db, "mt", add=["ladder"])
    with (
        owner.transaction() as db
    ):  # what a launcher's role gets (tests/test_store_cli.py), and its own schema
        db.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        db.execute(
            f"GRANT SELECT ON budgets, budget_changes, team_members, team_member_changes, bench_rates, "
            f"ladder_schema TO {role}"
        )
        db.execute(f"GRANT SELECT, INSERT, UPDATE ON jobs, promotions TO {role}")
        db.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        db.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
        db.execute(f"ALTER ROLE {role} SET search_path = {role}, public")
    with postgres_server.pgpass.open("a") as f:
        f.write(f"127.0.0.1:{postgres_server.port}:*:{role}:{password}\n")
    intruder = pg_url.replace("//ladder@", f"//{role}@")
    with psycopg.connect(
        intruder, autocommit=True
    ) as conn:  # the intruder's own tables, made by itself
        conn.execute(
            f"CREATE TABLE {role}.team_members (team TEXT, member TEXT, added_by TEXT, "
            "added_at DOUBLE PRECISION)"
        )
        conn.execute(
            f"CREATE TABLE {role}.budgets (team TEXT PRIMARY KEY, period TEXT, gpu_hours DOUBLE PRECISION, "
            "set_by TEXT, set_at DOUBLE PRECISION, note TEXT)"
        )
        conn.execute(f"INSERT INTO {role}.budgets VALUES ('mt', 'month', 1e9, 'intruder', 0, NULL)")
        assert (
            conn.execute("SELECT gpu_hours FROM budgets").fetchone()[0] == 1e9
        )  # the shadow works in general
    monkeypatch.setenv("PGOPTIONS", f"-c search_path={role},public")

    proc = ladder_cli(
        "launch",
        "--dry-run",
        *TINY,
        "budget.team=mt",
        f"ledger.url={intruder}",
        f"trainer.run_root={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, shown(proc)
    assert (
        "budget: would be REFUSED: team 'mt' admits launches by its members only (ladder), and you are "
        f"'{role}'"
    ) in proc.stdout
    assert "1,000,000,000" not in proc.stdout
    assert Ledger(intruder).budgets()["mt"]["gpu_hours"] == 5.0
    with pytest.raises(
        BudgetError, match=f"admits launches by its members only \\(ladder\\), and you are '{role}'"
    ):
        check_and_record(Ledger(intruder), "mt", 1.0, {"rung": "tiny", "gpus": 1})
    assert owner.jobs() == []


# ---- item 11: what a store URL may be ----------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_libpq_string_or_a_password_in_any_form_is_refused_unechoed_by_every_verb(tmp_path):
    port = _closed_port()
    secret = "S3cretXYZ42"
    values = [
        f"host=127.0.0.1 port={port} dbname=ladder user=ladder password={secret}",
        f"postgresql://ladder@127.0.0.1:{port}/ladder?pass%77ord={secret}",
        f"postgresql://ladder@127.0.0.1:{port}/ladder?PASSWORD={secret}",
    ]
    verbs = [
        ["config"],
        ["launch", "--dry-run", *TINY],
        ["budget", "set", "--team", "t", "--period", "month", "--gpu-hours", "5"],
        ["status"],
        ["budget", "report"],
    ]
    for value in values:
        for key in ("ledger.url", "registry.url"):
            for verb in verbs[:3] if key == "ledger.url" else verbs[:1]:
                proc = ladder_cli(*verb, f'{key}="{value}"', cwd=tmp_path)
                assert proc.returncode == 2, (verb, key, shown(proc))
                assert secret not in shown(proc) and "password" in proc.stderr, shown(proc)
    # unquoted, Hydra's grammar cannot read it: the error says so without echoing it
    proc = ladder_cli(
        "budget",
        "report",
        f"ledger.url=postgresql://ladder@h/ladder?password={secret}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and secret not in shown(proc), shown(proc)
    # a connection string without a password is refused too: it is neither form, so it is not a file name
    for verb in verbs:
        proc = ladder_cli(
            *verb, f'ledger.url="host=127.0.0.1 port={port} dbname=ladder"', cwd=tmp_path
        )
        assert proc.returncode == 2, (verb, shown(proc))
        assert "ledger.url is neither a PostgreSQL URL nor the path of a SQLite file" in proc.stderr
        assert f"port={port}" not in shown(proc)  # the value is not shown
    assert (
        list(tmp_path.rglob("*")) == []
    )  # no ledger, no run directory, no file named after the string


def test_url_problems_take_two_forms_and_never_show_a_secret():
    from training.common.store_url import parse_store_url, url_problems

    fine = [
        "sqlite:///runs/ladder.db",
        "sqlite:////abs/x.sqlite3",
        "runs/ladder.db",
        "/data/a b/ladder.sqlite",
        "postgresql://ladder@db:5432/team",
        "postgres://db/team?sslmode=require",
        None,
    ]
    assert all(url_problems("ledger.url", v) == [] for v in fine)
    secret = "hunter2XYZ"
    refused = {
        f"postgresql://u:{secret}@db/t": "carries a password",
        f"postgresql://u@db/t?pass%77ord={secret}": "carries a password",
        f"postgresql://u@db/t?x=1&Password={secret}": "carries a password",
        f"host=db dbname=t password = {secret}": "carries a password",
        f"host=db dbname=t sslpassword={secret}": "carries a password",
        f"host=db dbname={secret}": "neither a PostgreSQL URL nor the path of a SQLite file",
        f"runs/{secret}": "neither a PostgreSQL URL",
        f"mysql://db/{secret}": "a URL of a kind Ladder cannot store in",
        f"runs/{secret}\x1b.db": "control characters",
    }
    for value, why in refused.items():
        [problem] = url_problems("registry.url", value)
        assert problem.startswith("registry.url ") and why in problem and secret not in problem, (
            problem
        )
        with pytest.raises(ConfigError) as e:
            parse_store_url(value, "registry.url")  # a store opened in-process checks the same
        assert secret not in str(e.value)


def test_an_unreachable_server_never_falls_back_to_a_local_ledger(tmp_path):
    port = _closed_port()
    for value in (
        f"postgresql://ladder@127.0.0.1:{port}/ladder",
        f"host=127.0.0.1 port={port} dbname=ladder",
    ):
        for verb in (
            ["budget", "set", "--team", "t", "--period", "month", "--gpu-hours", "5"],
            ["launch", "--dry-run", *TINY],
        ):
            proc = ladder_cli(*verb, f'ledger.url="{value}"', cwd=tmp_path)
            assert proc.returncode == 2, shown(proc)
            assert (
                "cannot open the ledger" in proc.stderr or "ledger.url is neither" in proc.stderr
            ), shown(proc)
    assert list(tmp_path.rglob("*")) == []  # no SQLite file took the server's place
