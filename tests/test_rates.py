"""Plans from measured throughput: bench/gpu.py's figures imported into the ledger stand for the
rungs of their shape and settings; the budget report shows plans against the hours used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.accounting.budget import plan_accuracy, render_plan_accuracy
from launch.accounting.ledger import Ledger
from launch.planning.plan import make_plan
from launch.planning.rates import import_bench
from training.common.errors import ConfigError
from training.config.compose import compose

H200 = Path(__file__).resolve().parent.parent / "bench" / "results" / "gpu_h200.json"


@pytest.fixture
def ledger_cfg(tmp_path):
    return compose(["rung=8b", f"trainer.run_root={tmp_path}"])


def test_bench_import_feeds_the_plan_of_a_rung_with_the_same_shape_and_settings(
    ledger_cfg, tmp_path
):
    ledger = Ledger.from_config(ledger_cfg)
    rows = import_bench(ledger, H200)
    cases = json.loads(H200.read_text())["cases"]
    assert len(rows) == sum(1 for c in cases if c["harness"] == "ladder" and c["result"].get("mfu"))
    # the 8b rung checkpoints activations and does not compile: the H200 run measured no such case
    assumed = make_plan(ledger_cfg, ledger)
    assert assumed.rate_source.startswith("assumed") and assumed.rate == ledger_cfg.rung.assumed_mfu
    compiled = compose(["rung=8b", f"trainer.run_root={tmp_path}", "trainer.compile=true"])
    plan = make_plan(compiled, ledger)
    assert plan.rate == pytest.approx(
        0.3725, abs=1e-4
    )  # 8b-cut, flex, compile, act-ckpt on the H200
    assert (
        plan.rate_source.startswith("measured (1 run of bench/gpu.py")
        and "NVIDIA H200" in plan.rate_source
    )
    fast = compose(
        [
            "rung=8b",
            f"trainer.run_root={tmp_path}",
            "trainer.compile=true",
            "rung.activation_checkpointing=false",
        ]
    )
    assert make_plan(fast, ledger).rate == pytest.approx(0.4917, abs=1e-4)
    # a shape no bench ran (70B) keeps the rung's assumption
    big = compose(["rung=70b", f"trainer.run_root={tmp_path}", "trainer.compile=true"])
    assert make_plan(big, ledger).rate_source.startswith("assumed")
    # finished runs of the rung itself come before any bench
    ledger.add_job(
        team="t",
        period="2026-11",
        rung="8b",
        gpus=8,
        planned_gpu_hours=1.0,
        state="completed",
        mfu=0.31,
    )
    assert (
        make_plan(compiled, ledger).rate_source
        == "measured (1 run of rung 8b in the ledger, median)"
    )


def test_a_file_without_measured_mfu_is_refused(ledger_cfg, tmp_path):
    ledger = Ledger.from_config(ledger_cfg)
    cpu = tmp_path / "smoke.json"
    cpu.write_text(
        json.dumps(
            {
                "device": "CPU x 2 threads",
                "cases": [
                    {
                        "name": "ladder sdpa",
                        "harness": "ladder",
                        "recipe": "sft",
                        "result": {"mfu": None},
                    }
                ],
            }
        )
    )
    with pytest.raises(ConfigError, match="no Ladder configuration with a measured MFU"):
        import_bench(ledger, cpu)
    (tmp_path / "junk.json").write_text("[1, 2")
    with pytest.raises(ConfigError, match="not a bench/gpu.py result file"):
        import_bench(ledger, tmp_path / "junk.json")
    assert ledger.query("SELECT COUNT(*) AS n FROM bench_rates")[0]["n"] == 0


def test_budget_report_shows_planned_against_used_hours(ledger_cfg, capsys):
    ledger = Ledger.from_config(ledger_cfg)
    for planned, used in ((1.0, 1.1), (2.0, 1.5), (1.0, 0.95)):
        ledger.add_job(
            team="t",
            period="2026-11",
            rung="8b",
            gpus=8,
            planned_gpu_hours=planned,
            used_gpu_hours=used,
            state="completed",
            run_name=f"r{planned}-{used}",
        )
    ledger.add_job(
        team="t",
        period="2026-11",
        rung="8b",
        gpus=8,
        planned_gpu_hours=1.0,
        used_gpu_hours=0.2,
        state="failed",
    )
    rows = plan_accuracy(ledger)
    assert [round(r["ratio"], 3) for r in rows] == [1.1, 0.75, 0.95]  # completed jobs only
    render_plan_accuracy(rows)
    out = capsys.readouterr().out
    assert "2 of 3 completed jobs used within 15% of their plan" in out
