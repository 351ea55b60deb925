"""Output that survives a pipe (#28 item 8): with stdout not a terminal (pytest's capture, as `| cat`
or `> file`), tables print at their natural width, every value whole on one line and no cell cut
with an ellipsis, and COLUMNS sets the width of text when it is set.

    .venv/bin/python -m pytest -q tests/test_pipe_output.py

The verbs run in process on what they read: `plan` builds no model, and `compare` and
`leaderboard` read checkpoints scored in a real eval cache and SQLite registry (no model is loaded).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.store.cache import EvalCache, task_specs
from evals.store.registry import Registry
from launch.cli import main as ladder_main
from training.common.checkpoint_hash import checkpoint_hash
from training.config.compose import compose

TABLE_EDGES = tuple("│┃┏┗┡└┌╇┢┣")
# Longer than any terminal's 80 columns on its own, as a run name with its sweep point often is.
LONG_RUN = "tulu3-8b-sft-lr2e-5-warmup0.03-packed-seq4096-seed1234-" + "x" * 40


@pytest.fixture
def pipe(monkeypatch):
    """stdout as a pipe sees it: no COLUMNS, nothing telling rich that it is a terminal."""
    for var in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def printed(capsys, *args: str, rc: int = 0) -> list[str]:
    assert ladder_main(list(args)) == rc
    out = capsys.readouterr().out
    assert "…" not in out, out  # no cell or title cut with an ellipsis
    return out.splitlines()


def text_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith(TABLE_EDGES)]


def test_plan_in_a_pipe_prints_every_cell_whole(pipe, capsys):
    lines = printed(capsys, "plan", "rung=405b", "recipe=grpo")
    header = next(line for line in lines if "activations" in line)
    for column in ("optimizer", "reference", "generation", "host/node"):
        assert f" {column} " in header, header  # was `optimiz…` at 140 columns
    assert any(
        "(`ladder data inspect` with these overrides measures the real lengths)" in line
        for line in lines
    )  # a note column, whole on its row
    assert any("│ deepspeed_zero3 <- this job │" in line for line in lines)


def test_columns_sets_the_width_of_text_and_tables_stay_whole(pipe, capsys):
    lora = ["plan", "rung=8b", "model.lora.enabled=true", "rung.engine=ddp"]
    unset = text_lines(printed(capsys, *lora))
    [line] = [line for line in unset if line.startswith("LoRA:")]
    assert len(line) > 200  # text as written: no wrapping at 80 (rich) or 140 (before)
    pipe.setenv("COLUMNS", "200")
    lines = printed(capsys, *lora)
    text = text_lines(lines)
    assert max(len(line) for line in text) <= 200
    first = next(i for i, line in enumerate(text) if line.startswith("LoRA:"))
    assert len(text[first]) > 140 and " ".join(text[first : first + 2]).split() == line.split()
    # a table wider than COLUMNS is printed whole, not folded to fit
    pipe.setenv("COLUMNS", "60")
    narrow = printed(capsys, *lora)
    header = next(line for line in narrow if "activations" in line)
    assert " optimizer " in header and len(header) > 60


def scored_checkpoint(root: Path, run: str, step: int, right: int) -> Path:
    """A checkpoint folder whose scores on the synthetic suite are in the eval cache (right of 10
    examples correct): compare and leaderboard read them without loading a model."""
    ckpt = root / run / "checkpoints" / f"step_{step:06d}"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(f"{run} {step}".encode())
    (ckpt / "ladder_meta.json").write_text(json.dumps({"step": step, "run_name": run}))
    (ckpt / "COMPLETE").write_text("done\n")  # a marker from before manifests: files unverified
    cfg = compose([f"trainer.run_root={root}"])
    cache = EvalCache(Registry.from_config(cfg).cache_dir)
    examples = [{"id": i, "score": float(i < right)} for i in range(10)]
    for spec in task_specs(cfg.eval):
        cache.put(
            spec.key(checkpoint_hash(ckpt)),
            {"metric": "exact_match", "score": 10.0 * right, "n": 10, "examples": examples},
        )
    return ckpt


def test_compare_and_leaderboard_in_a_pipe_keep_long_names_and_paths_whole(pipe, capsys, tmp_path):
    root = tmp_path / ("runs-" + "d" * 60)
    base = scored_checkpoint(root, LONG_RUN, 100, right=3)
    other = scored_checkpoint(root, LONG_RUN + "-dpo", 50, right=8)
    out = root / "compare.json"
    run_root = f"trainer.run_root={root}"
    lines = printed(capsys, "compare", str(base), str(other), run_root, "--json", str(out))
    for label in (f"{LONG_RUN}@100", f"{LONG_RUN}-dpo@50"):
        assert any(f" {label} " in line for line in lines), label
    assert f"json: {out}" in lines  # a path longer than 80 columns, on one line
    lines = printed(capsys, "leaderboard", run_root)
    assert any(f" {LONG_RUN}-dpo@50 " in line for line in lines)


def test_a_section_rule_too_long_for_its_line_keeps_its_title_whole(pipe, capsys):
    from training.common.console import make_console

    command = "ladder train recipe=dpo model.name_or_path=" + "runs/demo/checkpoints/" * 8
    make_console().rule(command)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["─" * 100, command]  # the line, then the command whole
    pipe.setenv("COLUMNS", "400")
    make_console().rule("[bold]" + command)
    [line] = capsys.readouterr().out.splitlines()
    assert len(line) == 400 and f" {command} " in line
