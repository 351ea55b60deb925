"""Promotion up the ladder: a tiny sweep is launched, evaluated, its best 2 points promoted to the
tiny_wide rung with transferred learning rates and recorded lineage, and the rank-correlation
report reads it all back. Real runs, ledger, registry and evals throughout; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import FAST

SWEEP_LRS = ["3e-3", "1e-2", "3e-2"]  # tiny's own rate (3e-3), and two others
STEPS = 20
# A multiple-choice task scored by log-likelihood: unlike exact match it tells 20-step models apart.
EVAL = ["eval=cpu", "eval.tasks=[]", "eval.max_examples=50"]
METRIC = "ladder_reverse_mc"
LR_RATIO = 2e-3 / 3e-3  # rung.lr of tiny_wide over tiny's
# Small steps keep the 5 runs quick. rung.* overrides belong to the rung and are not carried up,
# so promote is given it again for the target rung (with the eval suite, it goes to every promoted job).
MICRO = "rung.micro_batch_tokens=512"
UP = [*EVAL, MICRO]


def cli(*argv: str) -> tuple[int, str, str]:
    """`ladder ARGV` in this process (the same code path as the command), capturing its output."""
    from launch.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def mc_score(result: dict) -> float:
    return result["scores"][f"{METRIC}/acc"]


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    # One intra-op thread per trainer: on a shared 2-core machine two-thread processes spin against
    # each other and a 20-step run can take minutes instead of seconds (the losses are the same).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield run_promotion(tmp_path_factory.mktemp("promote"))


def run_promotion(root: Path) -> dict:
    """Sweep 3 tiny runs, evaluate them, promote the best 2 to tiny_wide (which score themselves
    on save), and read the promotion report."""
    from evals.runner import evaluate_checkpoint
    from launch.commands.launch_cmd import launch
    from training.config.compose import compose

    where = f"trainer.run_root={root}"
    common = [
        *FAST,
        where,
        f"trainer.max_steps={STEPS}",
        f"trainer.save_every={STEPS}",
        MICRO,
        "trainer.global_batch_tokens=512",
        "data.max_samples=1000",
        "trainer.log_every=100",
    ]
    code, sweep_jobs = launch(
        [*common, "sweep.name=lr", f"optim.lr={','.join(SWEEP_LRS)}"], multirun=True
    )
    assert code == 0 and [j["state"] for j in sweep_jobs] == ["completed"] * 3

    eval_cfg = compose([*EVAL, where]).eval
    parents = {}
    for job in sweep_jobs:
        ckpt = Path(job["run_dir"]) / "checkpoints" / f"step_{STEPS:06d}"
        parents[job["run_name"]] = {
            "job": job,
            "ckpt": str(ckpt),
            "score": mc_score(evaluate_checkpoint(ckpt, eval_cfg)),
        }

    code, out, err = cli(
        "promote",
        "--sweep",
        "lr",
        "--to",
        "tiny_wide",
        "--top",
        "2",
        "--metric",
        METRIC,
        where,
        *UP,
        "trainer.eval_on_save=true",
        "trainer.eval_async=false",
    )
    assert code == 0, err
    report_code, report_json, _ = cli("promotion-report", "--sweep", "lr", where, "--json")
    assert report_code == 0
    table_code, table, _ = cli("promotion-report", "--sweep", "lr@tiny_wide", where)
    assert table_code == 0
    return {
        "root": root,
        "where": where,
        "parents": parents,
        "promote_out": out,
        "report": json.loads(report_json),
        "table": table,
    }


def expected_top(parents: dict, k: int) -> list[str]:
    return sorted(parents, key=lambda name: (-parents[name]["score"], name))[:k]


def test_the_best_two_are_promoted_with_lineage_and_transferred_learning_rates(promoted):
    from omegaconf import OmegaConf

    from launch.accounting.ledger import Ledger
    from training.config.validate import effective_lr
    from training.run.metrics import read_metrics

    parents = promoted["parents"]
    ledger = Ledger(promoted["root"] / "ladder.db")
    rows = ledger.promotions("lr")
    assert [r["parent_run_name"] for r in rows] == expected_top(parents, 2)
    assert [r["parent_rank"] for r in rows] == [1, 2]
    for r in rows:
        parent = parents[r["parent_run_name"]]
        assert r["parent_job_id"] == parent["job"]["id"]
        assert r["parent_score"] == pytest.approx(parent["score"])
        assert r["parent_checkpoint"] == parent["ckpt"]
        assert (r["from_sweep"], r["to_sweep"], r["from_rung"], r["to_rung"]) == (
            "lr",
            "lr@tiny_wide",
            "tiny",
            "tiny_wide",
        )
        assert (r["metric"], r["suite"], r["points"]) == (METRIC, "cpu", 3)

        child = ledger.job(r["child_job_id"])
        assert (child["sweep"], child["rung"], child["state"]) == (
            "lr@tiny_wide",
            "tiny_wide",
            "completed",
        )
        assert child["run_name"] == r["child_run_name"] == f"{r['parent_run_name']}-tiny_wide"
        assert "rung=tiny_wide" in json.loads(child["overrides"])

        # The learning rate keeps its ratio to the rung's rate: x 2e-3 / 3e-3 (tiny_wide / tiny).
        parent_cfg = OmegaConf.load(Path(parent["job"]["run_dir"]) / "config.yaml")
        child_cfg = OmegaConf.load(Path(child["run_dir"]) / "config.yaml")
        want = effective_lr(parent_cfg) * LR_RATIO
        assert effective_lr(child_cfg) == pytest.approx(want, rel=1e-9)
        assert r["child_lr"] == pytest.approx(want, rel=1e-9)
        if (
            float(parent_cfg.optim.lr) == 3e-3
        ):  # the parent ran at its rung's rate: so does the child
            assert child_cfg.optim.lr is None
        peak = max(m["lr"] for m in read_metrics(Path(child["run_dir"]) / "metrics.jsonl"))
        assert peak == pytest.approx(want, rel=1e-6)  # and the trainer really used it
        # Everything else of the point carries over; the rung brings its own model.
        assert child_cfg.model.name == "tiny_wide" and child_cfg.trainer.max_steps == STEPS
        assert child_cfg.data.max_samples == 1000 and child_cfg.trainer.global_batch_tokens == 512
        assert child_cfg.rung.micro_batch_tokens == 512 and child_cfg.trainer.eval_on_save is True

    # The sweep's own jobs record the overrides they were launched with.
    for parent, lr in zip(sorted(parents), SWEEP_LRS):  # lr-0, lr-1, lr-2 in the order of the sweep
        overrides = json.loads(ledger.job(parents[parent]["job"]["id"])["overrides"])
        assert "sweep.name=lr" in overrides and f"trainer.run_name={parent}" in overrides
        assert [float(o.split("=")[1]) for o in overrides if o.startswith("optim.lr=")] == [
            float(lr)
        ]
    out = promoted["promote_out"]
    assert "promote the top 2 of 3" in out and out.count("ladder launch ") == 2
    assert out.count(f"not carried (they belong to the rung): {MICRO}") == 2


def test_report_compares_ranks_at_both_rungs_with_spearman(promoted):
    parents = promoted["parents"]
    (pr,) = promoted["report"]["promotions"]
    assert (pr["from_sweep"], pr["to_sweep"], pr["promoted"]) == ("lr", "lr@tiny_wide", 2)
    higher = {}
    for row in pr["rows"]:
        # The promoted run scored itself on save with the promotion's eval settings: read its result file.
        result = json.loads((Path(row["higher_checkpoint"]) / "eval" / "cpu.json").read_text())
        assert row["higher_score"] == pytest.approx(mc_score(result))
        assert row["lower_score"] == pytest.approx(parents[row["configuration"]]["score"])
        assert row["status"] == "scored"
        higher[row["configuration"]] = row["higher_score"]

    first, second = expected_top(parents, 2)
    lower_tied = parents[first]["score"] == parents[second]["score"]
    if lower_tied or higher[first] == higher[second]:
        want = None  # a tie at either rung leaves no order to compare
    else:
        want = 1.0 if higher[first] > higher[second] else -1.0
    s = pr["spearman"]
    assert s["n"] == 2 and s["rho"] == want and s["meaningful"] is False
    assert "not meaningful" in s["verdict"] or "not computable" in s["verdict"]

    table = promoted["table"]
    assert (
        "promotion lr (tiny) -> lr@tiny_wide (tiny_wide)" in table
        and "1 of 3" in table
        and "2 of 3" in table
    )
    assert f"{first}-tiny_wide" in table and f"{second}-tiny_wide" in table
    assert "n = 2" in table and "verdict:" in table


@pytest.mark.parametrize(
    "x,y,rho",
    [
        ([10, 20, 30, 40], [1, 3, 2, 4], 0.8),  # one swap: 1 - 6 x 2 / (4 x 15)
        ([1, 2, 3, 4], [1, 2, 2, 3], 3 / 10**0.5),  # a tie shares rank 2.5
        ([1, 2, 3], [3, 2, 1], -1.0),
        ([71.0, 64.0, 52.0], [40.1, 44.9, 30.2], 0.5),
        ([1, 2, 3], [5, 5, 5], None),  # no order at one rung
        ([1], [2], None),
    ],
)
def test_spearman_known_values(x, y, rho):
    from launch.promotion.promotion_report import spearman

    assert spearman(x, y) == (pytest.approx(rho) if rho is not None else None)


def test_spearman_p_value_is_the_exact_permutation_probability():
    from launch.promotion.promotion_report import average_ranks, spearman_p, verdict

    assert average_ranks([5.0, 9.0, 5.0, 1.0]) == [2.5, 1.0, 2.5, 4.0]
    # rho >= 0.8 for the identity and the 3 adjacent swaps of 4! = 24 orders.
    assert spearman_p([10, 20, 30, 40], [1, 3, 2, 4]) == pytest.approx(4 / 24)
    assert spearman_p([1, 2, 3], [1, 2, 3]) == pytest.approx(1 / 6)
    assert "strong agreement" in verdict(0.9, 8, 0.001, "8b", "70b")
    assert "p = 0.17" in verdict(0.8, 4, 4 / 24, "8b", "70b")
    assert "not meaningful" in verdict(1.0, 2, 0.5, "8b", "70b")


def test_dry_run_prints_the_promoted_jobs_and_records_nothing(promoted):
    from launch.accounting.ledger import Ledger

    ledger = Ledger(promoted["root"] / "ladder.db")
    before = len(ledger.jobs()), len(ledger.promotions())
    code, out, err = cli(
        "promote",
        "--sweep",
        "lr",
        "--to",
        "tiny_wide",
        "--top",
        "3",
        "--metric",
        METRIC,
        "--as",
        "lr-dry",
        promoted["where"],
        *UP,
        "--dry-run",
    )
    assert code == 0, err
    assert (len(ledger.jobs()), len(ledger.promotions())) == before
    assert "--dry-run: nothing launched or recorded" in out and out.count("ladder launch ") == 3
    lrs = sorted(float(w.split("=")[1]) for w in out.split() if w.startswith("optim.lr="))
    assert lrs == pytest.approx(
        [1e-2 * LR_RATIO, 3e-2 * LR_RATIO]
    )  # 3e-3 is tiny's rate: no optim.lr
    assert "sweep.name=lr-dry" in out and "fits" in out


def assert_refused(argv: list[str], *needles: str) -> str:
    code, out, err = cli(*argv)
    assert code == 2, (code, out, err)
    for n in needles:
        assert n in err, err
    return err


def test_promote_refuses_clearly(promoted):
    from launch.accounting.budget import period_key
    from launch.accounting.ledger import Ledger

    where = promoted["where"]
    base = ["promote", "--sweep", "lr", "--metric", METRIC, where, *UP]
    assert_refused(
        ["promote", "--sweep", "nope", "--to", "tiny_wide", "--top", "1", where, *UP],
        "--sweep nope: no jobs of that sweep",
        "lr (3 jobs)",
    )
    assert_refused(
        [*base, "--to", "tiny_wide", "--top", "4"],
        "--top 4, but sweep 'lr' has 3 finished point(s)",
    )
    assert_refused([*base, "--to", "13b", "--top", "1"], "--to 13b: no such rung", "tiny_wide")
    assert_refused([*base, "--to", "tiny", "--top", "1"], "already ran at rung tiny")
    assert_refused(
        [*base, "--to", "tiny_wide", "--top", "1"], "sweep 'lr@tiny_wide' already has jobs", "--as"
    )
    assert_refused(
        [*base, "--to", "tiny_wide", "--top", "1", "rung=8b"], "rung=8b: promote sets the rung"
    )
    # A metric the runs were not scored on: the error lists what the registry has for them.
    assert_refused(
        [
            "promote",
            "--sweep",
            "lr",
            "--to",
            "tiny_wide",
            "--top",
            "1",
            "--metric",
            "reverse",
            where,
            MICRO,
        ],
        "none of the sweep's 3 finished run(s) has a score for it",
        f"{METRIC}/acc (suite cpu, other settings",
    )

    # Over budget: the 2 jobs are checked together and nothing is recorded.
    ledger = Ledger(promoted["root"] / "ladder.db")
    before = len(ledger.jobs()), len(ledger.promotions())
    with (
        ledger.transaction() as db
    ):  # allocations live in the ledger: cut the team's for this check
        allocation = ledger.set_budget(db, "default", "month", 0.001)
    assert_refused(
        [*base, "--to", "tiny_wide", "--top", "2", "--as", "lr-poor"],
        "promoting the top 2 of 'lr' to tiny_wide",
        "over budget",
    )
    assert (len(ledger.jobs()), len(ledger.promotions())) == before
    with ledger.transaction() as db:
        ledger.set_budget(db, "default", allocation["period"], allocation["gpu_hours"])

    # A sweep with a job still running is refused, unless --allow-running ranks the finished ones.
    lr0 = promoted["parents"]["lr-0"]["job"]
    common = dict(
        team="default",
        period=period_key("month"),
        rung="tiny",
        sweep="busy",
        gpus=1,
        planned_gpu_hours=0.001,
        launcher="local",
    )
    ledger.add_job(
        **common,
        run_name="lr-0",
        run_dir=lr0["run_dir"],
        state="completed",
        overrides=lr0["overrides"],
    )
    ledger.add_job(
        **common,
        run_name="busy-1",
        run_dir=str(promoted["root"] / "busy-1"),
        state="running",
        external_id=str(os.getpid()),
    )  # a live process: still running
    assert_refused(
        [
            "promote",
            "--sweep",
            "busy",
            "--to",
            "tiny_wide",
            "--top",
            "1",
            "--metric",
            METRIC,
            where,
            *UP,
        ],
        "1 job(s) still pending or running",
        "busy-1",
        "--allow-running",
    )
    code, out, err = cli(
        "promote",
        "--sweep",
        "busy",
        "--to",
        "tiny_wide",
        "--top",
        "1",
        "--metric",
        METRIC,
        "--allow-running",
        "--dry-run",
        "--as",
        "busy-up",
        where,
        *UP,
    )
    assert code == 0, err
    assert "still running, not ranked: busy-1" in out and "lr-0-busy-up" in out


def test_an_older_ledger_file_is_migrated_in_place(tmp_path):
    from launch.accounting import ledger as ledger_mod
    from launch.accounting.ledger import Ledger

    v1 = """CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, team TEXT NOT NULL, project TEXT, sweep TEXT,
        rung TEXT NOT NULL, period TEXT NOT NULL, run_name TEXT, run_dir TEXT, config_hash TEXT, launcher TEXT,
        external_id TEXT, gpus INTEGER NOT NULL, planned_gpu_hours REAL NOT NULL,
        used_gpu_hours REAL NOT NULL DEFAULT 0, waste_gpu_hours REAL NOT NULL DEFAULT 0,
        hours_before REAL NOT NULL DEFAULT 0, mfu REAL, tokens_per_s REAL,
        state TEXT NOT NULL, reason TEXT, override_reason TEXT, created_at REAL NOT NULL, started_at REAL,
        updated_at REAL NOT NULL, finished_at REAL);
        INSERT INTO jobs (team, rung, period, gpus, planned_gpu_hours, state, created_at, updated_at, sweep)
        VALUES ('t', 'tiny', '2026-01', 1, 0.5, 'completed', 0, 0, 'old');
        PRAGMA user_version = 1;"""
    path = tmp_path / "ladder.db"
    db = sqlite3.connect(path)
    db.executescript(v1)
    db.close()
    ledger = Ledger(path)
    assert ledger.schema_version() == ledger_mod.SCHEMA_VERSION
    (job,) = ledger.sweep_jobs("old")
    assert job["planned_gpu_hours"] == 0.5 and job["overrides"] is None
    job_id = ledger.add_job(
        team="t",
        rung="tiny",
        period="2026-01",
        gpus=1,
        planned_gpu_hours=0.1,
        overrides=json.dumps(["rung=tiny"]),
    )
    assert json.loads(ledger.job(job_id)["overrides"]) == ["rung=tiny"]
    assert ledger.promotions() == [] and ledger.sweeps() == {"old": 1}
