"""Eval suites, the eval cache, the registry and the asynchronous evaluator, on the shared tiny run.

Everything is real: the checkpoints come from the `trained_run` fixture, lm-evaluation-harness
runs offline on the local task under evals/assets/lm_eval, the registry is a SQLite file, and
`ladder eval` runs as a user would run it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import ladder_cli

from evals.async_eval import AsyncEvaluator
from evals.runner import evaluate_checkpoint
from evals.store.cache import task_specs
from evals.store.registry import Registry
from evals.tasks.instructions import check
from launch.cli import main as ladder_main
from training.common.checkpoint_hash import checkpoint_hash
from training.common.errors import ConfigError
from training.config.compose import compose

CPU_SUITE = ["eval=cpu", "eval.max_examples=10"]
TASKS = {"reverse/exact_match", "ifeval_lite/prompt_strict", "ladder_reverse_mc/acc"}


def registry_of(run) -> Registry:
    return Registry(Path(run.run_dir).parent / "registry.db")


@pytest.fixture(scope="module")
def cpu_results(trained_run):
    """The early (untrained) and the late checkpoint on the CPU suite: built-in tasks and lm-eval."""
    cfg = compose(CPU_SUITE)
    reg = registry_of(trained_run)
    return {
        step: evaluate_checkpoint(trained_run.checkpoints[i], cfg.eval, reg)
        for step, i in ((0, 0), (150, -1))
    }


def test_early_and_late_checkpoints_on_the_builtin_suite_and_lm_eval(cpu_results):
    early, late = cpu_results[0], cpu_results[150]
    for r in (early, late):
        assert set(r["scores"]) == TASKS and r["model_loaded"] and not r["cached_tasks"]
        for name, task in r["tasks"].items():
            assert task["n"] == 10 and len(task["examples"]) == 10, name
            assert task["generation"]["do_sample"] is False and task["prompt_format"], name
    assert late["scores"]["reverse/exact_match"] >= early["scores"]["reverse/exact_match"] + 50
    assert late["scores"]["ladder_reverse_mc/acc"] > early["scores"]["ladder_reverse_mc/acc"]
    mc = late["tasks"]["ladder_reverse_mc"]
    assert (
        mc["prompt_format"]["harness"] == "lm-evaluation-harness"
        and mc["prompt_format"]["apply_chat_template"]
    )
    assert (
        mc["prompt_format"]["num_fewshot"] == 0
        and mc["generation"]["output_type"] == "multiple_choice"
    )
    assert mc["score"] == pytest.approx(100 * sum(e["score"] for e in mc["examples"]) / 10)
    ife = late["tasks"]["ifeval_lite"]
    assert all("checks" in e and "output" in e for e in ife["examples"])
    # eval.generator.name=auto on a CPU: transformers generate, recorded with the result
    assert late["generator"] == "hf" and ife["generation"]["generator"] == "hf"


def test_registry_holds_checkpoints_scores_and_per_example_results(trained_run, cpu_results):
    late = cpu_results[150]
    db = sqlite3.connect(registry_of(trained_run).path)
    db.row_factory = sqlite3.Row
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ck = db.execute("SELECT * FROM checkpoints WHERE path = ?", (late["checkpoint"],)).fetchone()
    assert (
        ck["content_hash"] == checkpoint_hash(trained_run.checkpoints[-1]) == late["content_hash"]
    )
    assert (ck["run_name"], ck["rung"], ck["recipe"], ck["data"], ck["step"]) == (
        "shared",
        "tiny",
        "sft",
        "reverse",
        150,
    )
    assert ck["lr"] == pytest.approx(3e-3) and ck["device_hours"] > 0
    assert json.loads(ck["config_json"])["trainer"]["max_steps"] == 150
    rows = db.execute(
        "SELECT * FROM results WHERE content_hash = ? AND suite = 'cpu'", (late["content_hash"],)
    ).fetchall()
    assert {f"{r['task']}/{r['metric']}": r["score"] for r in rows} == pytest.approx(late["scores"])
    for r in rows:
        stored = json.loads(Path(r["examples_path"]).read_text())
        assert len(stored["examples"]) == r["n"] == 10
        assert json.loads(r["generation_json"])["do_sample"] is False


def test_content_hash_covers_weights_and_tokenizer_only(trained_run, tmp_path):
    src = trained_run.checkpoints[-1]
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "trainer_state.pt":
            shutil.copy(f, copy / f.name)
    h = checkpoint_hash(src)
    assert checkpoint_hash(copy) == h  # same weights elsewhere: the same results
    (copy / "eval" / "anything.json").parent.mkdir(exist_ok=True)
    (copy / "eval" / "anything.json").write_text("{}")
    assert checkpoint_hash(copy) == h
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text() + " ")
    assert checkpoint_hash(copy) != h


def test_second_ladder_eval_is_answered_from_the_cache_without_loading_the_model(trained_run):
    ckpt = trained_run.checkpoints[1]
    settings = [
        "eval.max_examples=12",
        "eval.name=quick",
    ]  # eval/quick.json: leaves eval/synthetic.json be
    first = evaluate_checkpoint(
        ckpt, compose(settings).eval
    )  # computes: these settings were never used
    assert first["model_loaded"] and first["cached_tasks"] == []
    proc = ladder_cli("eval", str(ckpt), *settings, "tracker.mode=disabled")
    assert proc.returncode == 0, proc.stderr
    assert "loading model" not in proc.stderr
    assert "all 1 task(s) answered from the cache; no model loaded" in proc.stderr
    assert "the model was not loaded" in proc.stdout and "cache" in proc.stdout
    again = json.loads((ckpt / "eval" / "quick.json").read_text())
    assert again["model_loaded"] is False and again["cached_tasks"] == ["reverse"]
    assert again["scores"] == first["scores"]
    assert again["tasks"]["reverse"]["examples"] == first["tasks"]["reverse"]["examples"]


def test_async_evaluator_returns_at_once_and_hands_back_results(trained_run, tmp_path):
    cfg = compose(["eval.max_examples=8", "eval.name=quick8"])
    with AsyncEvaluator(cfg.eval, log_dir=tmp_path) as evaluator:
        t0 = time.monotonic()
        evaluator.submit(trained_run.checkpoints[-1], 150)
        evaluator.submit(tmp_path / "pruned" / "step_000999", 999)
        assert time.monotonic() - t0 < 2 and evaluator.pending == 2
        done = {d.step: d for d in evaluator.drain(timeout=300)}
    assert done[150].ok, done[150].error
    assert not done[999].ok and "no checkpoint at" in done[999].error
    assert (tmp_path / "eval_step_000150.log").exists()
    direct = evaluate_checkpoint(
        trained_run.checkpoints[-1], cfg.eval
    )  # the job's result is in the cache
    assert direct["model_loaded"] is False and direct["scores"] == done[150].scores
    assert done[150].scores["reverse/exact_match"] > 50


def test_tulu3_dev_suite_composes_and_names_real_lm_eval_tasks():
    cfg = compose(["eval=tulu3_dev"])
    specs = task_specs(cfg.eval)
    assert [s.name for s in specs] == [
        "mmlu",
        "gsm8k_cot",
        "ifeval",
        "bbh_cot_fewshot",
        "minerva_math",
        "humaneval",
    ]
    assert all(s.kind == "lm_eval" for s in specs)
    with pytest.raises(ConfigError, match="unknown lm-eval task"):
        task_specs(compose(["eval=tulu3_dev", "eval.lm_eval.tasks=[mmlu,no_such_benchmark]"]).eval)


@pytest.mark.parametrize(
    "answer,constraint,ok",
    [
        ("hello there", {"type": "lowercase"}, True),
        ("Hello there", {"type": "lowercase"}, False),
        ("ONE TWO", {"type": "uppercase"}, True),
        ("a b c", {"type": "word_count", "n": 3}, True),
        ("a b c d", {"type": "word_count", "n": 3}, False),
        ("a b", {"type": "max_words", "n": 2}, True),
        ("all is done.", {"type": "ends_with", "word": "done"}, True),
        ("done is all", {"type": "ends_with", "word": "done"}, False),
        ("Yes, indeed", {"type": "starts_with", "word": "yes"}, True),
        ("the fox ran", {"type": "include_word", "word": "fox"}, True),
        ("a, b", {"type": "no_commas"}, False),
        ("one\ntwo", {"type": "single_line"}, False),
    ],
)
def test_instruction_checks(answer, constraint, ok):
    assert check(answer, constraint) is ok


def test_bad_eval_input_is_one_clear_error(trained_run, capsys):
    ckpt = str(trained_run.checkpoints[-1])
    assert ladder_main(["eval", ckpt, "eval.tasks=[nonsense]", "tracker.mode=disabled"]) == 2
    assert "unknown task 'nonsense'" in capsys.readouterr().err
    assert ladder_main(["eval", str(Path(ckpt).parent / "step_000777")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert ladder_main(["eval", ckpt, "eval=cpu", "eval.lm_eval.tasks=[not_a_task]"]) == 2
    assert "unknown lm-eval task(s) ['not_a_task']" in capsys.readouterr().err
