"""Who may charge a team: `ladder budget members` and the check every launch makes, on a real
SQLite file and a real PostgreSQL server (launch/accounting/team_members.py). The limited server role that
can neither add itself nor charge another team is in tests/test_store_cli.py.

    .venv/bin/python -m pytest -q tests/test_team_members.py     # -m "not postgres": SQLite only
"""

from __future__ import annotations

import getpass
import time

import pytest

from launch.accounting.budget import check_and_record, check_and_record_many, dry_run_budget_line
from launch.accounting.ledger import SCHEMA_VERSION, Ledger
from launch.accounting.team_members import member_changes
from launch.cli import main
from training.common.errors import BudgetError

JOB = {"rung": "tiny", "gpus": 1, "run_name": "r", "run_dir": "/tmp/none"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ladder.db"
    return request.getfixturevalue("pg_url")


def test_members_are_recorded_and_only_they_can_charge_a_listed_team(url, capsys, monkeypatch):
    ledger = Ledger(url)
    server = ledger.backend == "postgresql"
    me = (
        "ladder" if server else getpass.getuser()
    )  # the test server's role (tests/cluster/postgres.py)
    with ledger.transaction() as db:
        ledger.set_budget(db, "llm", "month", 10.0)
        ledger.set_budget(db, "open", "month", 10.0)
    members = ["budget", "members", "--team", "llm", f"ledger.url={url}"]

    before = time.time()
    assert main([*members, "--add", "alice", "--add", "bob"]) == 0
    out = capsys.readouterr().out
    assert "added alice, bob" in out and "admits launches by its members only" in out
    assert f"you are {me!r} on this ledger" in out and "not a member" in out
    rows = ledger.query("SELECT * FROM team_members ORDER BY member")
    assert [r["member"] for r in rows] == ["alice", "bob"]
    assert all(
        r["added_by"].startswith(f"{getpass.getuser()}@") and before <= r["added_at"] <= time.time()
        for r in rows
    )
    if server:
        assert rows[0]["added_by"].endswith("(role ladder)")

    # a non-member is refused, naming the team, who they are and how to be added; nothing recorded
    with pytest.raises(BudgetError) as e:
        check_and_record_many(ledger, "llm", [(1.0, JOB), (1.0, JOB)])
    assert (
        f"team 'llm' admits launches by its members only (alice, bob), and you are {me!r}"
        in str(e.value)
    )
    assert "Nothing was launched" in str(
        e.value
    ) and f"ladder budget members --team llm --add {me}" in str(e.value)
    assert ("the database role" if server else "the OS user") in str(e.value)
    assert ledger.jobs() == []
    assert "would be REFUSED: team 'llm' admits" in dry_run_budget_line(ledger, "llm", 1.0, 1)

    # the environment names the launcher on a local file only; the server's role is what it authenticated
    monkeypatch.setenv("LOGNAME", "alice")
    monkeypatch.setenv("USER", "alice")
    if server:
        with pytest.raises(BudgetError, match="you are 'ladder'"):
            check_and_record(ledger, "llm", 1.0, JOB)
    else:
        assert check_and_record(
            ledger, "llm", 1.0, JOB
        )  # documented: a local file trusts its users
    monkeypatch.undo()

    assert main([*members, "--add", me, "--remove", "bob", "--add", "alice"]) == 0
    assert "already members: alice" in capsys.readouterr().out
    job = check_and_record(ledger, "llm", 1.0, JOB)  # a member's launch passes
    assert ledger.job(job)["team"] == "llm"
    assert check_and_record(ledger, "open", 1.0, JOB)  # a team with no members listed stays open
    assert [(c["member"], c["action"]) for c in member_changes(ledger, "llm")] == [
        ("alice", "add"),
        ("bob", "add"),
        (me, "add"),
        ("bob", "remove"),
    ]

    assert main([*members, "--remove", "carol"]) == 2  # all or nothing
    assert "'carol' is not a member of team 'llm'" in capsys.readouterr().err
    assert main([*members]) == 0
    out = capsys.readouterr().out
    assert (
        "  alice  added by" in out
        and f"  {me}  added by" in out
        and "bob" not in out
        and ": a member" in out
    )
    assert main(["budget", "report", "--team", "llm", f"ledger.url={url}"]) == 0
    assert f"members: team llm: alice, {me}" in capsys.readouterr().out
    assert main(["budget", "report", f"ledger.url={url}"]) == 0
    assert "members: team open: open: no members listed" in capsys.readouterr().out


def test_the_local_default_team_needs_no_setup_and_a_version_7_ledger_gains_the_tables(
    tmp_path, capsys
):
    ledger = Ledger(tmp_path / "ladder.db")
    assert check_and_record(ledger, "default", 1.0, JOB)
    assert ledger.query("SELECT COUNT(*) AS n FROM team_members")[0]["n"] == 0
    assert main(["budget", "members", "--team", "default", f"trainer.run_root={tmp_path}"]) == 0
    assert "team default: open: no members listed" in capsys.readouterr().out
    assert (
        main(
            [
                "budget",
                "members",
                "--team",
                "default",
                "--add",
                "alice@login1",
                f"trainer.run_root={tmp_path}",
            ]
        )
        == 2
    )
    assert "name the user alone" in capsys.readouterr().err
    with ledger.transaction() as db:  # a version-7 ledger, from before membership
        db.execute("DROP TABLE team_members")
        db.execute("DROP TABLE team_member_changes")
        db.execute("ALTER TABLE jobs DROP COLUMN host")  # and without what version 9 added
        db.execute("ALTER TABLE jobs DROP COLUMN process_start")
        db.execute("ALTER TABLE jobs DROP COLUMN allow_unchecked")  # and what 10 to 12 added
        db.execute("ALTER TABLE jobs DROP COLUMN point")
        db.execute("ALTER TABLE jobs DROP COLUMN adapter")
        db.execute("ALTER TABLE jobs DROP COLUMN overhead_s")  # and 13's
        db.execute("UPDATE ladder_schema SET version = 7 WHERE component = 'ledger'")
    assert (
        Ledger(tmp_path / "ladder.db").schema_version() == SCHEMA_VERSION
    )  # SCHEMA creates the new tables
    assert check_and_record(ledger, "default", 1.0, JOB) and len(ledger.jobs()) == 2
