"""Hydra multirun sweeps: expansion, budget as a whole, and a local sweep recorded under one name."""

from __future__ import annotations

import json

import pytest
from conftest import FAST, ladder_cli

from launch.accounting.ledger import Ledger
from launch.cluster.sweep import expand, name_points
from training.common.errors import ConfigError


def test_expansion_is_hydras_cartesian_product_and_each_point_gets_a_run_name():
    points = expand(["optim.lr=1e-5,2e-5,5e-6", "trainer.seed=1,2", "rung=tiny"])
    assert len(points) == 6
    assert points[0] == ["optim.lr=1e-05", "trainer.seed=1", "rung=tiny"]
    assert {p[1] for p in points} == {"trainer.seed=1", "trainer.seed=2"}
    assert expand(["trainer.seed=range(3)"]) == [
        ["trainer.seed=0"],
        ["trainer.seed=1"],
        ["trainer.seed=2"],
    ]
    name, named = name_points(points, "lr", "tiny-sft-reverse")
    assert name == "lr"
    assert named[0][-2:] == ["sweep.name=lr", "trainer.run_name=lr-0"]
    assert len({p[-1] for p in named}) == 6
    auto, _ = name_points(points, None, "tiny-sft-reverse", now=0)
    assert auto == "tiny-sft-reverse-19700101-000000"
    with pytest.raises(ConfigError, match="cannot vary sweep.name"):
        name_points(expand(["sweep.name=a,b"]), None, "x")
    with pytest.raises(ConfigError, match="cannot expand the sweep"):
        expand(["optim.lr=1e-5,"])


def test_a_sweep_is_checked_against_the_budget_as_a_whole(tmp_path):
    plan = ladder_cli("plan", "--json", *FAST, "trainer.max_steps=2", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    one = json.loads(plan.stdout)["gpu_hours"]
    # Room for two of the three points: every point fits alone, the sweep does not.
    ledger = Ledger(tmp_path / "runs" / "ladder.db")
    with ledger.transaction() as db:  # the team's allocation, in the ledger where launches read it
        ledger.set_budget(db, "default", "month", 2.5 * one)
    proc = ladder_cli(
        "launch", "-m", *FAST, "trainer.max_steps=2", "optim.lr=1e-3,2e-3,3e-3", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "these 3 jobs plan" in proc.stderr and "Nothing was launched" in proc.stderr
    assert ledger.jobs() == []


def test_a_local_sweep_runs_every_point_under_one_sweep_name(tmp_path):
    proc = ladder_cli(
        "launch",
        "-m",
        *FAST,
        "trainer.max_steps=2",
        "trainer.save_every=2",
        "optim.lr=1e-3,2e-3",
        "sweep.name=two-lrs",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = Ledger(tmp_path / "runs" / "ladder.db").jobs()
    assert [(j["sweep"], j["run_name"], j["state"]) for j in jobs] == [
        ("two-lrs", "two-lrs-0", "completed"),
        ("two-lrs", "two-lrs-1", "completed"),
    ]
    status = ladder_cli("status", "--json", "--sweep", "two-lrs", cwd=tmp_path)
    rows = json.loads(status.stdout)
    assert [r["step"] for r in rows] == [2, 2] and all(r["used_gpu_hours"] > 0 for r in rows)


def test_seeds_expand_each_point_into_replicates_of_one_point_and_one_array(tmp_path, monkeypatch):
    """sweep.seeds=3 over 2 points: 6 jobs, planned one by one, distinct seeds and run names, the
    three of each point sharing sweep.point, and one SLURM array (the same shape)."""
    from launch.commands.launch_cmd import prepare, shape_groups

    monkeypatch.chdir(tmp_path)
    ov = [*FAST, "optim.lr=1e-3,2e-3", "sweep.name=lr", "sweep.seeds=3", "trainer.seed=7"]
    name, jobs = prepare(ov, multirun=True)
    assert name == "lr" and len(jobs) == 6
    got = [(j.run_name, j.cfg.trainer.seed, j.cfg.sweep.point, j.cfg.optim.lr) for j in jobs]
    assert got == [
        ("lr-0-s7", 7, "lr-0", 1e-3),
        ("lr-0-s8", 8, "lr-0", 1e-3),
        ("lr-0-s9", 9, "lr-0", 1e-3),
        ("lr-1-s7", 7, "lr-1", 2e-3),
        ("lr-1-s8", 8, "lr-1", 2e-3),
        ("lr-1-s9", 9, "lr-1", 2e-3),
    ]
    assert len({j.run_dir for j in jobs}) == 6 and all(j.plan.gpu_hours > 0 for j in jobs)
    assert [len(g) for g in shape_groups(jobs)] == [6]
    # a replicate's own overrides (what its trainer or a promotion composes) stay one job
    _, [one] = prepare(jobs[4].overrides)
    assert one.run_name == "lr-1-s8" and one.cfg.sweep.point == "lr-1"
    # the ledger groups them by point (jobs.point, schema 11)
    from launch.commands.launch_cmd import ledger_fields

    ledger = Ledger(tmp_path / "ladder.db")
    ids = [
        ledger.add_job(team="t", period="p", planned_gpu_hours=1.0, **ledger_fields(j))
        for j in jobs
    ]
    assert [ledger.job(i)["point"] for i in ids] == ["lr-0"] * 3 + ["lr-1"] * 3
    with pytest.raises(ConfigError, match="sweep.seeds=0 must be"):
        prepare([*FAST, "sweep.seeds=0"])
    with pytest.raises(ConfigError, match="cannot both vary trainer.seed and set sweep.seeds"):
        prepare([*FAST, "trainer.seed=1,2", "sweep.seeds=2"], multirun=True)
