"""RLVR prompts in `ladder data inspect` and in mixtures (data.sources with weights).

.venv/bin/python -m pytest -q tests/test_rlvr_data.py
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import ladder_cli

from training.common.errors import DataError
from training.config.compose import compose
from training.model.modeling import load_tokenizer
from training.rl.rlvr_data import load_prompts


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def arith_rows(n: int) -> list[dict]:
    return [
        {
            "id": f"ar-{i}",
            "messages": [{"role": "user", "content": f"Compute: {i} + 1"}],
            "ground_truth": str(i + 1),
            "dataset": "arith",
        }
        for i in range(n)
    ]


def reverse_rows(n: int) -> list[dict]:
    return [
        {
            "id": f"rev-{i}",
            "messages": [{"role": "user", "content": f"Reverse: a b {i}"}],
            "ground_truth": f"{i} b a",
            "dataset": "reverse",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(compose(["recipe=grpo", "rung=tiny"]).model)


def mix_cfg(rev: Path, ar: Path, *extra: str):
    return compose(
        [
            "recipe=grpo",
            "rung=tiny",
            "data=rlvr_mix",
            f"data.sources.reverse.train_files=[{rev}]",
            f"data.sources.arith.train_files=[{ar}]",
            *extra,
        ]
    )


def test_a_mixtures_prompt_counts_follow_the_weights(tmp_path, tok):
    rev, ar = (
        write(tmp_path / "rev.jsonl", reverse_rows(30)),
        write(tmp_path / "ar.jsonl", arith_rows(10)),
    )
    cfg = mix_cfg(rev, ar, "data.sources.reverse.weight=1", "data.sources.arith.weight=3")
    prompts = load_prompts(cfg.data, tok, cfg.generator.max_new_tokens)
    # a round holds as many prompts as the sources have rows (40), shared 1:3
    assert Counter(p.source for p in prompts) == {"reverse": 10, "arith": 30}
    assert Counter(p.verifier for p in prompts) == {"reverse": 10, "arith": 30}
    assert [p.index for p in prompts] == list(range(40))  # index: the position that seeds sampling
    arith = Counter(p.key for p in prompts if p.source == "arith")
    assert set(arith.values()) == {3}, (
        "three passes over the 10 arithmetic rows: each drawn three times"
    )
    reverse = [p.key for p in prompts if p.source == "reverse"]
    assert len(set(reverse)) == 10, "a seeded subset of the 30 reverse rows, none repeated"

    again = load_prompts(cfg.data, tok, cfg.generator.max_new_tokens)
    assert [p.key for p in again] == [p.key for p in prompts], (
        "the draws are a function of the seed"
    )
    other = load_prompts(cfg.data, tok, cfg.generator.max_new_tokens, seed=1)
    assert [p.key for p in other if p.source == "reverse"] != reverse
    # another weight for arith leaves reverse's draws as they were (its count stays 10 of 40 here)
    moved = mix_cfg(rev, ar, "data.sources.reverse.weight=2", "data.sources.arith.weight=6")
    assert [p.key for p in load_prompts(moved.data, tok, 16) if p.source == "reverse"] == reverse


def test_the_shipped_rlvr_mix_shares_out_the_shipped_prompts(tok):
    cfg = compose(["recipe=grpo", "rung=tiny", "data=rlvr_mix"])
    prompts = load_prompts(cfg.data, tok, cfg.generator.max_new_tokens)
    assert Counter(p.source for p in prompts) == {
        "reverse": 1610,
        "arith": 690,
    }  # 0.7 / 0.3 of 2,300
    assert {p.source: p.verifier for p in prompts} == {"reverse": "reverse", "arith": "arith"}


def test_a_bad_row_in_the_second_source_is_named_by_file_and_line(tmp_path, tok):
    bad = arith_rows(3)
    bad[1] = {**bad[1], "ground_truth": "three"}
    rev, ar = write(tmp_path / "rev.jsonl", reverse_rows(5)), write(tmp_path / "ar.jsonl", bad)
    cfg = mix_cfg(rev, ar)
    with pytest.raises(
        DataError, match=rf"{ar}:2: ground_truth 'three' cannot be checked by 'arith'"
    ):
        load_prompts(cfg.data, tok, cfg.generator.max_new_tokens)
    write(ar, [])
    with pytest.raises(DataError, match=r"no RLVR prompts in data.sources.arith \(.*ar.jsonl\)"):
        load_prompts(cfg.data, tok, cfg.generator.max_new_tokens)


def test_ladder_data_inspect_reports_rlvr_prompts(tmp_path):
    root = f"trainer.run_root={tmp_path}"
    proc = ladder_cli("data", "inspect", "recipe=grpo", "data=reverse_rlvr", root)
    assert proc.returncode == 0, proc.stderr
    for text in (
        "data=reverse_rlvr (single-source data, rlvr, recipe=grpo): 2,300 prompts",
        "a prompt may take 48 tokens",
        "arith 300, reverse 2,000",
        "reverse_rlvr_train.jsonl:",
    ):
        assert text in proc.stdout, proc.stdout
    js = ladder_cli("data", "inspect", "--json", "recipe=grpo", root, "generator.max_new_tokens=8")
    report = json.loads(js.stdout)
    assert report["format"] == "rlvr" and report["prompts"] == 2300 and report["prompt_limit"] == 56
    assert report["verifiers"] == {"arith": 300, "reverse": 2000}
    t = report["prompt_tokens"]
    assert 0 < t["min"] <= t["mean"] <= t["max"] <= 56 and report["sources"][0]["rows"] == 2300
    # what `ladder plan` reads: prompt + max_new_tokens per prompt, keyed by max_new_tokens too
    lengths = report["doc_lengths"]
    assert lengths["documents"] == 2300 and lengths["max"] == t["max"] + 8
    assert lengths["mean"] == pytest.approx(t["mean"] + 8)
    assert (
        len(list((tmp_path / "data_inspect").glob("reverse_rlvr-*.json"))) == 2
    )  # max_new_tokens 16 and 8
    # the plan takes the measured prompts (here about 16 tokens) over the bound (64 - 8 = 56)
    from launch.planning.plan import make_plan

    scratch = "model.from_scratch=true"  # the plan validates the run: tiny from random weights
    rl = make_plan(compose(["recipe=grpo", scratch, root, "generator.max_new_tokens=8"])).rl
    assert rl.new_tokens == 8 and rl.prompt_tokens == round(lengths["attention_length"]) - 8 < 56
    assert (
        make_plan(
            compose(["recipe=grpo", scratch, f"trainer.run_root={tmp_path}/none"])
        ).rl.prompt_tokens
        == 48
    )


def test_ladder_data_inspect_names_a_bad_row(tmp_path):
    path = write(tmp_path / "rl.jsonl", [*arith_rows(2), {**arith_rows(1)[0], "dataset": "chess"}])
    proc = ladder_cli(
        "data",
        "inspect",
        "recipe=grpo",
        f"data.train_files=[{path}]",
        f"trainer.run_root={tmp_path}",
    )
    assert proc.returncode != 0 and f"{path}:3: dataset='chess' names no verifier" in proc.stderr, (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_inspect_reports_each_source_of_an_rlvr_mixture():
    from launch.inspection.rlvr_inspect import inspect_rlvr

    report = inspect_rlvr(compose(["recipe=grpo", "rung=tiny", "data=rlvr_mix"]))
    got = {s["source"]: (s["rows"], s["prompts"], s["verifiers"]) for s in report["sources"]}
    assert got == {"reverse": (2000, 1610, {"reverse": 2000}), "arith": (300, 690, {"arith": 300})}
