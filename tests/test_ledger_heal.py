"""Issue #22 item 1 and #28 item 1: a ledger that converges to the truth after any single kill or
outage, on SQLite and on a real PostgreSQL server, and every `ladder train` recorded in it.

    .venv/bin/python -m pytest -q tests/test_ledger_heal.py      # -m "not postgres": SQLite only

A kill -9 at each step of a launch is simulated by writing the ledger rows and run-folder files
that kill would leave (a real dead PID: a `sleep` that was killed), then one `ladder status`, in
process, must record what the run's files say.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
import types
from pathlib import Path

import pytest
from conftest import FAST

from launch.accounting.budget import check_and_record
from launch.accounting.ledger import Ledger, process_start, this_host
from launch.cli import main
from training.common.errors import ConfigError


def test_ladder_train_is_recorded_in_the_local_ledger_and_shown_by_status_and_report(
    tmp_path, capsys
):
    root = f"trainer.run_root={tmp_path}"
    assert main(["train", *FAST, "trainer.max_steps=1", "data.max_samples=64", root]) == 0
    [job] = Ledger(tmp_path / "ladder.db").jobs()
    assert (job["launcher"], job["kind"], job["state"]) == ("direct", "train", "completed")
    assert job["used_gpu_hours"] > 0 and job["run_dir"] == str(tmp_path / "tiny-sft-reverse")
    capsys.readouterr()
    assert main(["status", "--json", root]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["job"], row["state"], row["used_gpu_hours"]) == (
        job["id"],
        "completed",
        job["used_gpu_hours"],
    )
    assert main(["budget", "report", root]) == 0
    report = capsys.readouterr().out
    [line] = [line for line in report.splitlines() if line.startswith("│ default ")]
    assert line.split("│")[3].strip() == "1"  # one job charged to the team


# ---- kill -9 at each step of a launch: the states it leaves, then one `ladder status` ----------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ladder.db"
    return request.getfixturevalue("pg_url")


def dead_process() -> tuple[int, str]:
    """A real process that has ended: its PID and the start it had."""
    p = subprocess.Popen(["sleep", "60"])
    start = process_start(p.pid)
    p.kill()
    p.wait()
    return p.pid, start


def record(ledger: Ledger, run_dir: Path, created: float, **fields) -> int:
    """A job as `ladder launch` records it (its launcher's process claimed), then `fields`."""
    base = dict(
        team="default",
        period=time.strftime("%Y-%m", time.gmtime()),
        rung="tiny",
        gpus=1,
        planned_gpu_hours=1.0,
        run_name=run_dir.name,
        run_dir=str(run_dir),
        launcher="local",
        host=this_host(),
        created_at=created,
        updated_at=created,
    )
    return ledger.add_job(**{**base, **fields})


def heartbeat(run_dir: Path, pid: int, start: str | None, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    hb = dict(host=this_host(), pid=pid, process_start=start, devices=1, step=3, max_steps=30)
    (run_dir / "heartbeat.json").write_text(json.dumps({**hb, **fields}))


def test_one_status_converges_after_a_kill_at_each_step_of_a_launch(url, tmp_path, capsys):
    ledger = Ledger(url)
    now = time.time()
    t0 = now - 90  # every launch began 90 s before `status` looks
    launcher_pid, launcher_start = dead_process()
    trainer_pid, trainer_start = dead_process()
    claim = dict(external_id=str(launcher_pid), process_start=launcher_start)
    trainer = dict(external_id=str(trainer_pid), process_start=trainer_start)
    live = subprocess.Popen(["sleep", "60"])  # a trainer whose launcher died before recording it
    try:
        runs = {k: tmp_path / k for k in "abcdefg"}
        # after the record: pending, its launcher gone
        a = record(ledger, runs["a"], t0, **claim)
        # before the trainer's start: running, still the launcher's process, no run folder
        b = record(ledger, runs["b"], t0, state="running", started_at=t0 + 1, **claim)
        # after the start, before the first heartbeat: the folder's last write 5 s in
        c = record(ledger, runs["c"], t0, state="running", started_at=t0 + 1, **trainer)
        runs["c"].mkdir()
        (runs["c"] / "config.yaml").write_text("x: 1\n")
        os.utime(runs["c"] / "config.yaml", (t0 + 6, t0 + 6))
        # killed mid-run: charged to its last heartbeat (30 s in), not to when status looked
        d = record(ledger, runs["d"], t0, state="running", started_at=t0 + 1, **trainer)
        heartbeat(
            runs["d"],
            trainer_pid,
            trainer_start,
            state="running",
            device_hours=0.008,
            segment_started_at=t0 + 2,
            updated_at=t0 + 31,
        )
        # the trainer runs, but its launcher died before recording its PID
        e = record(ledger, runs["e"], t0, state="running", started_at=t0 + 1, **claim)
        heartbeat(
            runs["e"],
            live.pid,
            process_start(live.pid),
            state="running",
            device_hours=0.02,
            segment_started_at=t0 + 2,
            updated_at=now - 1,
        )
        # killed inside the final update; and one the ledger had already (wrongly) failed
        f = record(ledger, runs["f"], t0, state="running", started_at=t0 + 1, **trainer)
        heartbeat(
            runs["f"],
            trainer_pid,
            trainer_start,
            state="completed",
            device_hours=0.0115,
            segment_started_at=t0 + 2,
            updated_at=t0 + 44,
        )
        g = record(
            ledger,
            runs["g"],
            t0,
            state="failed",
            started_at=t0 + 1,
            finished_at=t0 + 3,
            reason="no heartbeat from this run",
            used_gpu_hours=0.0005,
            **claim,
        )
        heartbeat(
            runs["g"],
            trainer_pid,
            trainer_start,
            state="completed",
            device_hours=0.0115,
            segment_started_at=t0 + 2,
            updated_at=t0 + 44,
        )
        # a killed `ladder train` (a direct run): reconciled as launched ones are
        h = record(
            ledger,
            tmp_path / "h",
            t0,
            launcher="direct",
            state="running",
            started_at=t0 + 1,
            **trainer,
        )
        heartbeat(
            tmp_path / "h",
            trainer_pid,
            trainer_start,
            state="running",
            device_hours=0.004,
            segment_started_at=t0 + 1,
            updated_at=t0 + 15,
        )

        assert main(["status", f"trainer.run_root={tmp_path}", f"ledger.url={url}"]) == 0
        jobs = {j["id"]: j for j in ledger.jobs()}

        def is_(job, state, used, ended=None):
            j = jobs[job]
            assert (j["state"], round(j["used_gpu_hours"], 6)) == (state, round(used, 6)), j
            if ended is not None:
                assert j["finished_at"] == pytest.approx(ended, abs=1e-3), j

        is_(a, "failed", 0.0)
        assert jobs[a]["reason"].startswith("released: no live process")
        is_(b, "failed", 0.0)
        is_(c, "failed", 5 / 3600, ended=t0 + 6)
        is_(d, "failed", 0.008, ended=t0 + 31)
        assert "without a final heartbeat" in jobs[d]["reason"]
        is_(e, "running", 0.0)
        assert (jobs[e]["external_id"], jobs[e]["process_start"]) == (
            str(live.pid),
            process_start(live.pid),
        )
        is_(f, "completed", 0.0115, ended=t0 + 44)
        is_(g, "completed", 0.0115, ended=t0 + 44)
        is_(h, "failed", 0.004, ended=t0 + 15)
        committed = Ledger.committed_hours
        with ledger.transaction() as db:  # only e still holds its plan
            assert committed(db, "default", jobs[a]["period"])["running"] == 1.0
        before = ledger.jobs()
        capsys.readouterr()
        assert main(["status", f"trainer.run_root={tmp_path}", f"ledger.url={url}"]) == 0
        assert ledger.jobs() == before  # converged: a second look changes nothing
    finally:
        live.kill()
        live.wait()


def test_ghost_launches_no_longer_hold_hours_that_refuse_a_valid_launch(url, tmp_path):
    """The issue's case: two launchers killed after recording, before starting; then a launch
    that fits the allocation once their plans are released."""
    ledger = Ledger(url)
    with ledger.transaction() as db:
        ledger.set_budget(db, "llm", "month", 2.5)
    pid, start = dead_process()
    for name in ("ghost1", "ghost2"):
        record(
            ledger,
            tmp_path / name,
            time.time() - 5,
            team="llm",
            external_id=str(pid),
            process_start=start,
        )
    job = check_and_record(ledger, "llm", 1.0, dict(rung="tiny", gpus=1, launcher="local"))
    assert [j["state"] for j in ledger.jobs()] == ["failed", "failed", "pending"]
    assert ledger.job(job)["planned_gpu_hours"] == 1.0


# ---- an outage of the server: retried, then told truly, then healed by `ladder status` ---------


@pytest.mark.postgres
def test_a_server_outage_is_retried_then_told_truly_and_the_end_written_by_status(
    tmp_path, monkeypatch, capsys, postgres_server
):
    """A server of its own (the session's shared one stays up for other tests), stopped with
    `-m immediate` as a crash would: once for less than the retry window, once for longer."""
    from postgres import PostgresServer

    from launch.accounting import train_record
    from launch.commands import launch_cmd
    from training.common.store import StoreUnavailable

    server = PostgresServer.start(durable=True)
    monkeypatch.setenv("PGPASSFILE", str(server.pgpass))
    try:
        url = server.create_database("outage")
        ledger = Ledger(url, retry_s=30.0)
        pid, start = dead_process()
        t0 = time.time() - 60
        jobs = []
        for name in ("launched", "direct"):
            run_dir = tmp_path / name
            jobs.append(
                record(
                    ledger,
                    run_dir,
                    t0,
                    state="running",
                    started_at=t0 + 1,
                    external_id=str(pid),
                    process_start=start,
                )
            )
            heartbeat(
                run_dir,
                pid,
                start,
                state="completed",
                step=30,
                device_hours=0.0115,
                segment_started_at=t0 + 2,
                updated_at=t0 + 44,
            )
        launched, direct = jobs
        capsys.readouterr()

        server.stop_now()  # shorter than the window: the write waits it out
        threading.Timer(1.0, server.start_again).start()
        ledger.update_job(launched, reason="still running")
        err = capsys.readouterr().err
        assert err.count("is unreachable") == 1 and "retrying for up to 30 s" in err, err
        assert ledger.job(launched)["reason"] == "still running"

        server.stop_now()  # longer than the window: one line each, saying what was recorded
        ledger.retry_s = 1.0
        job = types.SimpleNamespace(job_id=launched, run_dir=tmp_path / "launched")
        assert launch_cmd.record_end(ledger, job, 0) is None
        with pytest.raises(StoreUnavailable) as e:
            train_record.record_end(ledger, direct, tmp_path / "direct", 0)
        with pytest.raises(StoreUnavailable) as refused:
            check_and_record(ledger, "default", 0.1, dict(rung="tiny", gpus=1))
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "retrying" not in line]
        assert len(lines) == 1 and lines[0].startswith("ladder launch: error: job "), err
        for text in (lines[0], str(e.value)):
            assert (
                "ended completed at step 30, 0.0115 GPU-hours by its heartbeat, but its end is not recorded"
                in text
            )
            assert "stayed unreachable for 1 s (ledger.retry_s)" in text
            assert "The next `ladder status` records it from" in text
            assert (
                "\n" not in text and "Traceback" not in text and "Nothing was recorded" not in text
            )
        assert str(refused.value).endswith("nothing was launched or recorded")

        server.start_again()  # back: one status writes both ends from the run folders
        assert main(["status", f"trainer.run_root={tmp_path}", f"ledger.url={url}"]) == 0
        for j in (launched, direct):
            row = ledger.job(j)
            assert (row["state"], row["used_gpu_hours"]) == ("completed", 0.0115)
        assert len(ledger.jobs()) == 2  # the refused launch recorded nothing
    finally:
        server.stop()


@pytest.mark.postgres
def test_a_migrate_killed_between_the_ledger_and_the_registry_is_finished_by_a_rerun(
    tmp_path, pg_url, capsys
):
    from test_store_cli import _fill_sqlite

    from evals.store.registry import Registry
    from launch.commands.ledger_cmd import LEDGER_TABLES, copy_store

    ledger, registry = _fill_sqlite(tmp_path)
    copy_store(ledger, Ledger(pg_url), LEDGER_TABLES)  # the ledger's copy committed, then the kill
    assert main(["ledger", "migrate", "--to", pg_url, f"trainer.run_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "ledger" in out and "already copied" in out and "checkpoints 3" in out
    pg, pg_reg = Ledger(pg_url), Registry(pg_url)
    assert len(pg.jobs()) == len(ledger.jobs()) == 4  # nothing copied twice
    for table in ("checkpoints", "results", "wandb_logged"):
        q = f"SELECT * FROM {table}"
        assert sorted(map(repr, pg_reg.query(q))) == sorted(map(repr, registry.query(q)))


# ---- names: checked once at entry; the report's numbers never give way to a long one -----------


def test_bad_team_names_are_one_clear_line_and_a_long_one_never_squeezes_the_report(
    tmp_path, capsys
):
    root = f"trainer.run_root={tmp_path}"
    undecodable = "bad\udcff"  # what Python makes of argv bytes $'bad\xff'
    tries = [
        (["budget", "report", "--team", undecodable, root], "holds bytes that are not UTF-8"),
        (
            ["launch", *FAST, f'budget.team="{undecodable}"', "--dry-run", root],
            "holds bytes that are not UTF-8",
        ),
        (
            ["launch", *FAST, "budget.team=" + "t" * 5000, "--dry-run", root],
            "budget.team is 5000 characters long; use at most 64",
        ),
    ]
    for args, message in tries:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert (
        main(["budget", "set", "--team", "ok", "--period", "month", "--gpu-hours", "5", root]) == 0
    )
    db = sqlite3.connect(tmp_path / "ladder.db")  # another tool wrote a 5,000-character team
    with db:
        db.execute("INSERT INTO budgets VALUES (?, 'month', 7, 'x', 0, NULL)", ("T" * 5000,))
    db.close()
    capsys.readouterr()
    assert main(["budget", "report", root]) == 0
    out = capsys.readouterr().out
    for header in ("allocated", "running (planned)", "useful (MFU x used)", "committed", "cost"):
        assert f" {header} " in out, out
    assert "│      7.0 │" in out and "TTT…" in out


def test_a_direct_run_on_several_nodes_is_planned_without_the_local_launchers_limit(tmp_path):
    """`ladder train` under srun or torchrun on two nodes is recorded like any run: the local
    launcher's one-machine rule is for `ladder launch`, which starts processes itself."""
    from launch.commands.launch_cmd import prepare

    point = ["rung=tiny", "rung.nodes=2", "rung.engine=ddp", f"trainer.run_root={tmp_path}"]
    with pytest.raises(ConfigError, match="launcher=local runs on this machine only"):
        prepare(point)
    _, [job] = prepare(point, direct=True)
    assert job.plan.gpus == 2


def test_cancelling_a_sweep_point_that_waits_its_turn_never_signals_its_launcher(tmp_path):
    """A pending local job holds its launcher's process: `ladder cancel` records it cancelled at
    once, with nothing charged, and leaves the launcher (running the sweep's other points) alone."""
    from launch.commands.status_cmd import cancel_jobs

    ledger = Ledger(tmp_path / "ladder.db")
    launcher = subprocess.Popen(["sleep", "60"])
    try:
        job = record(
            ledger,
            tmp_path / "point2",
            time.time(),
            external_id=str(launcher.pid),
            process_start=process_start(launcher.pid),
        )
        started = time.monotonic()
        [row] = cancel_jobs(ledger, [ledger.job(job)], wait_s=30)
        assert time.monotonic() - started < 5
        assert (row["state"], row["used_gpu_hours"]) == ("cancelled", 0.0)
        time.sleep(0.3)
        assert launcher.poll() is None  # not signalled
    finally:
        launcher.kill()
        launcher.wait()


def test_a_slurm_id_the_ledger_missed_in_an_outage_is_read_from_the_run_folder(tmp_path):
    """The launcher writes launch.json before the ledger's update; if that update met an outage,
    `ladder status` takes the SLURM id from the run folder (then asks SLURM about it)."""
    from launch.commands.status_cmd import refresh

    ledger = Ledger(tmp_path / "ladder.db")
    run_dir = tmp_path / "r"
    job = record(ledger, run_dir, time.time(), launcher="slurm", host=None)
    run_dir.mkdir()
    (run_dir / "launch.json").write_text(json.dumps({"ledger_job": job, "external_id": "4242"}))
    stranger = record(ledger, tmp_path / "s", time.time(), launcher="slurm", host=None)
    (tmp_path / "s").mkdir()  # a record naming another job is not this one's
    (tmp_path / "s" / "launch.json").write_text(json.dumps({"ledger_job": 99, "external_id": "7"}))
    refresh(ledger, ledger.jobs())
    assert (ledger.job(job)["external_id"], ledger.job(stranger)["external_id"]) == ("4242", None)
