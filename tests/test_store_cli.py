"""The team-scale verbs and their failures, against real stores: `ladder budget set`,
`ladder ledger migrate --to postgresql://...`, an unreachable server, a wrong password, and a
password that must appear in no file, log or ledger row.

    .venv/bin/python -m pytest -q tests/test_store_cli.py          # -m "not postgres": SQLite only
"""

from __future__ import annotations

import getpass
import os
import time
from pathlib import Path

import pytest
from conftest import FAST, ladder_cli

from evals.store.registry import Registry
from launch.accounting.ledger import Ledger
from launch.accounting.team_members import change_members
from launch.cli import main
from training.common.errors import BudgetError, ConfigError
from training.common.store import StoreError
from training.config.compose import compose


def test_budget_set_records_who_and_when_and_a_job_config_cannot_raise_it(tmp_path, capsys):
    root = f"trainer.run_root={tmp_path}"
    before = time.time()
    assert (
        main(["budget", "set", "--team", "llm", "--period", "quarter", "--gpu-hours", "250", root])
        == 0
    )
    assert (
        main(
            [
                "budget",
                "set",
                "--team",
                "llm",
                "--period",
                "month",
                "--gpu-hours",
                "80",
                "--note",
                "cut",
                root,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "team llm: 80.0 GPU-hours per month (was 250.0 per quarter)" in out
    ledger = Ledger(tmp_path / "ladder.db")
    row = ledger.budgets()["llm"]
    assert (row["period"], row["gpu_hours"], row["note"]) == ("month", 80.0, "cut")
    assert (
        row["set_by"].startswith(f"{getpass.getuser()}@") and before <= row["set_at"] <= time.time()
    )
    changes = ledger.budget_changes("llm")
    assert [(c["gpu_hours"], c["previous_gpu_hours"]) for c in changes] == [
        (250.0, None),
        (80.0, 250.0),
    ]

    assert (
        main(["budget", "set", "--team", "llm", "--period", "month", "--gpu-hours", "nan", root])
        == 2
    )
    assert "finite number" in capsys.readouterr().err
    assert ledger.budgets()["llm"]["gpu_hours"] == 80.0  # the refused value changed nothing
    with pytest.raises(
        ConfigError, match="no longer a config key: a team's allocation lives in the ledger"
    ):
        compose(["budget.gpu_hours=1e9"])


def _fill_sqlite(root: Path) -> tuple[Ledger, Registry]:
    ledger = Ledger(root / "ladder.db")
    with ledger.transaction() as db:
        ledger.set_budget(db, "llm", "week", 123.5)
        change_members(db, "llm", add=["alice", "bob"], changed_by="admin@login")
        change_members(db, "llm", remove=["bob"], changed_by="admin@login")
        ids = [
            ledger.insert_job(
                db,
                team="llm",
                period="2026-W48",
                rung="tiny",
                gpus=2,
                planned_gpu_hours=1.0 + i,
                used_gpu_hours=0.25 * i,
                waste_gpu_hours=0.1 * i,
                state="completed",
                sweep="lr",
            )
            for i in range(5)
        ]
        db.execute(
            "DELETE FROM jobs WHERE id = ?", (ids[1],)
        )  # a gap in the ids: they must be kept, not renumbered
        ledger.insert_promotion(
            db,
            from_sweep="lr",
            to_sweep="lr@8b",
            from_rung="tiny",
            to_rung="8b",
            metric="m",
            suite="s",
            eval_json="{}",
            points=4,
            parent_job_id=ids[0],
            parent_run_dir="/r",
            parent_checkpoint="/c",
            parent_score=0.5,
            parent_rank=1,
            child_job_id=ids[4],
            child_run_name="c",
            child_run_dir="/c2",
            overrides="[]",
        )
    registry = Registry(root / "registry.db")
    with registry.transaction() as db:
        for i in range(3):
            db.insert(
                "checkpoints",
                {
                    "path": f"/ck/{i}",
                    "content_hash": f"h{i}",
                    "device_hours": 0.5 * i,
                    "registered_at": 1.0,
                },
                returning_id=False,
            )
        db.insert(
            "results",
            {
                "cache_key": "k",
                "content_hash": "h1",
                "task": "t",
                "metric": "acc",
                "score": 0.75,
                "n": 10,
                "settings_key": "s",
                "evaluated_at": 1.0,
            },
            returning_id=False,
        )
    registry.mark_logged("w", ["k"], 3)
    return ledger, registry


@pytest.mark.postgres
def test_ledger_migrate_copies_sqlite_into_postgres_without_loss(tmp_path, pg_url, capsys):
    ledger, registry = _fill_sqlite(tmp_path)
    assert main(["ledger", "migrate", "--to", pg_url, f"trainer.run_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert (
        "jobs 4" in out
        and "GPU-hours planned 13, used 2.25" in out
        and "counts and totals checked" in out
    )
    pg, pg_reg = Ledger(pg_url), Registry(pg_url)
    for table in (
        "jobs",
        "promotions",
        "budgets",
        "budget_changes",
        "team_members",
        "team_member_changes",
    ):
        assert pg.query(f"SELECT * FROM {table} ORDER BY 1") == ledger.query(
            f"SELECT * FROM {table} ORDER BY 1"
        )
    for table in ("checkpoints", "results", "wandb_logged"):
        assert pg_reg.query(f"SELECT * FROM {table} ORDER BY 1") == registry.query(
            f"SELECT * FROM {table} ORDER BY 1"
        )
    assert (
        sum(j["used_gpu_hours"] for j in pg.jobs())
        == sum(j["used_gpu_hours"] for j in ledger.jobs())
        == 2.25
    )
    assert (
        pg.add_job(team="llm", period="x", rung="tiny", gpus=1, planned_gpu_hours=1.0) == 6
    )  # after the copied ids
    # a second migration into the same database copies nothing
    assert main(["ledger", "migrate", "--to", pg_url, f"trainer.run_root={tmp_path}"]) == 2
    assert "already holds rows (jobs: 5" in capsys.readouterr().err
    assert len(pg.jobs()) == 5


def test_an_unreachable_server_launches_and_records_nothing(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from launch.commands.launch_cmd import launch

    with pytest.raises(StoreError) as e:
        launch(
            [
                *FAST,
                f"trainer.run_root={tmp_path}",
                f"ledger.url=postgresql://ladder@127.0.0.1:{port}/team",
            ]
        )
    assert f"cannot open the ledger at postgresql://ladder@127.0.0.1:{port}/team" in str(e.value)
    assert "Nothing was recorded" in str(e.value) and "pg_isready" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no run directory, no ledger file: nothing was launched


@pytest.mark.postgres
def test_a_wrong_or_missing_password_is_a_clear_error(pg_url, monkeypatch, tmp_path):
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    monkeypatch.setenv("PGPASSWORD", "not-the-password-42")
    with pytest.raises(StoreError) as e:
        Ledger(pg_url)
    assert "password was refused" in str(e.value) and "not-the-password-42" not in str(e.value)
    monkeypatch.delenv("PGPASSWORD")
    with pytest.raises(StoreError, match="The server wants a password: put it in ~/.pgpass"):
        Ledger(pg_url)


def test_a_url_with_a_password_is_refused_before_anything_is_written(tmp_path):
    from launch.commands.launch_cmd import launch

    with pytest.raises(ConfigError) as e:
        launch(
            [
                *FAST,
                f"trainer.run_root={tmp_path}",
                "ledger.url=postgresql://ladder:Sw0rdfish99@db/team",
            ]
        )
    assert "Sw0rdfish99" not in str(e.value) and "postgresql://ladder:***@db/team" in str(e.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
@pytest.mark.slow
def test_the_password_appears_in_no_file_log_wandb_record_or_ledger_row(
    tmp_path, pg_url, postgres_server
):
    """A real launch (a 2-step tiny run, W&B offline) with both stores on the server, the password
    given by PGPASSWORD: then every file under the run root, the output and every row are searched."""
    password = postgres_server.password
    with Ledger(pg_url).transaction() as db:
        Ledger.set_budget(db, "default", "month", 100.0)
    env_password = {"PGPASSWORD": password, "PGPASSFILE": str(tmp_path / "no-pgpass")}
    old = {k: os.environ.get(k) for k in env_password}
    os.environ.update(env_password)
    try:
        proc = ladder_cli(
            "launch",
            *[a for a in FAST if not a.startswith("tracker")],
            "tracker.mode=offline",
            "trainer.max_steps=2",
            "trainer.save_every=2",
            f"trainer.run_root={tmp_path / 'runs'}",
            f"ledger.url={pg_url}",
            f"registry.url={pg_url}",
            cwd=tmp_path,
        )
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [job] = Ledger(pg_url).jobs()
    assert job["state"] == "completed"
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files) and any(p.name == "config.yaml" for p in files)
    leaked = [p for p in files if password.encode() in p.read_bytes()]
    assert leaked == [] and password not in proc.stdout + proc.stderr
    for table in ("jobs", "budgets", "budget_changes", "ladder_schema"):
        assert password not in repr(Ledger(pg_url).query(f"SELECT * FROM {table}"))


@pytest.mark.postgres
@pytest.mark.slow
def test_ladder_train_on_a_node_records_its_run_in_a_shared_ledger(tmp_path, pg_url, capsys):
    ledger = Ledger(pg_url)
    with ledger.transaction() as db:
        ledger.set_budget(db, "default", "month", 0.0)
    args = [
        "train",
        *FAST,
        "trainer.max_steps=2",
        "trainer.save_every=2",
        f"trainer.run_root={tmp_path}",
        f"ledger.url={pg_url}",
    ]
    assert main(args) == 2  # over budget: refused before training
    assert "over budget" in capsys.readouterr().err and not (tmp_path / "tiny-sft-reverse").exists()
    with ledger.transaction() as db:
        ledger.set_budget(db, "default", "month", 100.0)
    assert main(args) == 0
    [job] = ledger.jobs()
    assert (job["launcher"], job["state"], job["team"]) == ("direct", "completed", "default")
    assert job["used_gpu_hours"] > 0 and job["run_dir"] == str(tmp_path / "tiny-sft-reverse")
    assert f"recorded in {pg_url} as job {job['id']}" in capsys.readouterr().out


@pytest.mark.postgres
def test_on_a_server_a_launcher_role_can_launch_but_not_change_an_allocation(
    pg_url, postgres_server, capsys
):
    """Budgets and teams are set by whoever owns the allocation: a role granted only what launching
    needs (reading `budgets` and `team_members`; the team's lock is an advisory lock, not a row
    lock) launches for its own team, and the server refuses, with one clear message, its
    `ladder budget set` and its adding itself to a team that does not list it; launching for that
    team is refused too, with nothing recorded."""
    from launch.accounting.team_members import change_members

    owner = Ledger(pg_url)
    role, password = f"launcher_{os.getpid()}", "launcher-pw-" + postgres_server.password[:8]
    with owner.transaction() as db:
        owner.set_budget(db, "llm", "month", 5.0)
        owner.set_budget(db, "vision", "month", 5.0)
        change_members(db, "llm", add=[role])
        change_members(db, "vision", add=["ladder"])  # the owner's team: not the launcher's
    with owner.transaction() as db:
        db.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        db.execute(
            f"GRANT SELECT ON budgets, budget_changes, team_members, team_member_changes, ladder_schema "
            f"TO {role}"
        )
        db.execute(f"GRANT SELECT, INSERT, UPDATE ON jobs, promotions TO {role}")
        db.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
    with postgres_server.pgpass.open("a") as f:
        f.write(f"127.0.0.1:{postgres_server.port}:*:{role}:{password}\n")
    launcher_url = pg_url.replace("//ladder@", f"//{role}@")
    from launch.accounting.budget import check_and_record

    job = check_and_record(Ledger(launcher_url), "llm", 2.0, dict(rung="tiny", gpus=1))
    assert owner.job(job)["launched_by"].endswith(f"(role {role})")
    assert (
        main(
            [
                "budget",
                "set",
                "--team",
                "llm",
                "--period",
                "month",
                "--gpu-hours",
                "1e6",
                f"ledger.url={launcher_url}",
            ]
        )
        == 2
    )
    assert "permission denied for table budgets" in capsys.readouterr().err
    assert owner.budgets()["llm"]["gpu_hours"] == 5.0
    with pytest.raises(
        BudgetError,
        match=f"team 'vision' admits launches by its members only \\(ladder\\), "
        f"and you are '{role}'",
    ):
        check_and_record(Ledger(launcher_url), "vision", 1.0, {"rung": "tiny", "gpus": 1})
    assert (
        main(["budget", "members", "--team", "vision", "--add", role, f"ledger.url={launcher_url}"])
        == 2
    )
    assert "permission denied for table team_members" in capsys.readouterr().err
    assert owner.query("SELECT member FROM team_members WHERE team = 'vision'") == [
        {"member": "ladder"}
    ]
    assert [j["team"] for j in owner.jobs()] == ["llm"]
