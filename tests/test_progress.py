"""Progress display (issue #13 item 8): a bar on a terminal, log lines otherwise, evals in step order;
each recipe's headline metrics on its step lines (issue #28 item 2).

.venv/bin/python -m pytest -q tests/test_progress.py
"""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from conftest import FAST, train_in_process
from rich.console import Console
from test_grpo_runs import grpo_overrides, rl_data  # noqa: F401 (rl_data: the GRPO prompts fixture)

from training.run import progress

METRICS = {"loss": 1.23456, "lr": 1e-3, "grad_norm": 0.5, "tokens_per_s": 12345.0}


def terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=160, color_system=None), buf


def test_a_terminal_gets_a_bar_with_eta_rate_loss_and_tokens_and_no_step_lines(caplog):
    console, buf = terminal()
    log = logging.getLogger("ladder.test_progress")
    caplog.set_level(logging.INFO, logger="ladder.test_progress")
    bar = progress.StepProgress(total=4, start=1, log_every=1, log=log, console=console)
    for step in (2, 3, 4):
        bar.update({**METRICS, "step": step})
    bar.close()
    out = buf.getvalue()
    assert "4/4 steps" in out and "steps/s" in out and "ETA" in out
    assert "loss 1.2346" in out and "12,345 tok/s/device" in out
    assert not caplog.records  # the bar replaces the step lines
    assert progress._active is None


def test_not_a_terminal_gets_the_plain_step_lines_every_log_every(caplog):
    log = logging.getLogger("ladder.test_progress")
    caplog.set_level(logging.INFO, logger="ladder.test_progress")
    console = Console(file=io.StringIO(), force_terminal=False)
    bar = progress.StepProgress(total=5, start=0, log_every=2, log=log, console=console)
    for step in range(1, 6):
        bar.update({**METRICS, "step": step})
    bar.close()
    assert [r.getMessage().split(" loss")[0] for r in caplog.records] == [
        "step 2/5",
        "step 4/5",
        "step 5/5",
    ]


def test_eval_examples_get_a_bar_of_their_own_or_a_line_under_the_training_bar(monkeypatch):
    console, buf = terminal()
    monkeypatch.setattr(progress, "make_console", lambda: console)
    with progress.example_progress(10, "eval reverse") as advance:
        for _ in range(5):
            advance(2)
    assert "eval reverse" in buf.getvalue() and "10/10 examples" in buf.getvalue()
    train_console, train_buf = terminal()
    bar = progress.StepProgress(
        total=2, start=0, log_every=1, log=logging.getLogger("x"), console=train_console
    )
    try:
        with progress.example_progress(3, "eval ifeval_lite") as advance:
            advance(3)
            bar.bar.refresh()
            assert "3/3 examples" in train_buf.getvalue()  # drawn by the one live display
    finally:
        bar.close()
    monkeypatch.setattr(
        progress, "make_console", lambda: Console(file=io.StringIO(), force_terminal=False)
    )
    with progress.example_progress(3) as advance:  # not a terminal: counting does nothing
        advance(3)


def test_greedy_generation_counts_examples_on_a_terminal(monkeypatch):
    from evals.tasks.generate import greedy_complete
    from training.config.compose import compose
    from training.model.modeling import build_model, load_tokenizer

    cfg = compose(FAST)
    tok = load_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, "cpu", 0)
    console, buf = terminal()
    monkeypatch.setattr(progress, "make_console", lambda: console)
    convs = [[{"role": "user", "content": f"abc {i}"}] for i in range(5)]
    outs = greedy_complete(
        model, tok, convs, max_new_tokens=2, batch_size=2, description="eval reverse"
    )
    assert len(outs) == 5 and "5/5 examples" in buf.getvalue()


def test_ladder_train_under_a_pseudo_terminal_draws_the_bar(tmp_path):
    """The real command with stdout and stderr on a pty, as in a user's terminal."""
    master, slave = pty.openpty()
    exe = Path(sys.executable).parent / "ladder"
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen(
        [
            str(exe),
            "train",
            *FAST,
            "trainer.max_steps=3",
            "trainer.save_every=3",
            "trainer.log_every=1",
        ],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks, deadline = [], time.time() + 300
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(master)
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert proc.returncode == 0, out[-3000:]
    assert "3/3 steps" in out and "steps/s" in out and "tok/s/device" in out and "loss " in out
    assert "ladder.train: step 3/3" not in out  # the bar replaced the plain step lines
    assert "saved checkpoint" in out  # other log lines still show, above the bar


def test_background_eval_results_come_back_in_step_order(monkeypatch, tmp_path):
    """Two evaluations at once; the later step finishes first but is handed back after the earlier one."""
    from omegaconf import OmegaConf

    from evals import async_eval

    real_popen = async_eval.subprocess.Popen

    def fake_eval(cmd, **kw):  # instead of `python -m evals.runner`: sleep by step, write a result
        out, step = cmd[cmd.index("--out") + 1], int(Path(cmd[3]).name.split("_")[1])
        code = (
            f"import json, time; time.sleep({1.5 if step == 1 else 0.0}); "
            f"open({out!r}, 'w').write(json.dumps({{'scores': {{'s': {step}}}}}))"
        )
        return real_popen([sys.executable, "-c", code], **kw)

    monkeypatch.setattr(async_eval.subprocess, "Popen", fake_eval)
    with async_eval.AsyncEvaluator(
        OmegaConf.create({"name": "x"}), log_dir=tmp_path, max_parallel=2
    ) as ev:
        for step in (1, 2):
            ev.submit(tmp_path / "checkpoints" / f"step_{step}", step)
        deadline = time.time() + 30
        while (
            ev._running[-1].proc.poll() is None and time.time() < deadline
        ):  # step 2 done, step 1 not
            time.sleep(0.05)
        assert ev.poll() == [] and ev.pending_steps == (1,)  # step 2 is held back
        done = ev.drain(timeout=60)
    assert [d.step for d in done] == [1, 2] and all(d.ok for d in done)


def step_lines(caplog, overrides: list[str]) -> list[str]:
    """A real tiny run through the real progress callback; its plain step lines (not a terminal)."""
    caplog.set_level(logging.INFO, logger="ladder.train")
    train_in_process(overrides)
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]


def run_overrides(root: Path, recipe: str) -> list[str]:
    return [
        *FAST,
        f"recipe={recipe}",
        "model.from_scratch=true",  # DPO from random weights, on purpose
        f"trainer.run_root={root}",
        "trainer.max_steps=2",
        "trainer.save_every=2",
        "trainer.log_every=1",
    ]


def test_sft_lines_show_the_loss(tmp_path, caplog):
    lines = step_lines(caplog, run_overrides(tmp_path, "sft"))
    assert len(lines) == 2 and all(re.search(r" loss \d+\.\d{4} lr ", s) for s in lines), lines


def test_dpo_lines_show_margin_and_accuracy(tmp_path, caplog):
    over = [*run_overrides(tmp_path, "dpo"), "data.max_samples=16"]
    over += ["rung.micro_batch_tokens=512", "trainer.global_batch_tokens=1024"]
    lines = step_lines(caplog, over)
    assert len(lines) == 2, lines
    for s in lines:
        assert re.search(r" loss \S+ margin -?\d+\.\d{3} acc \d\.\d\d lr ", s), s


def test_grpo_lines_show_reward_length_and_generation_share_not_the_loss(
    tmp_path,
    caplog,
    rl_data,  # noqa: F811 (the fixture imported above)
):
    over = grpo_overrides(tmp_path, "grpo", rl_data, steps=2, extra=["trainer.log_every=1"])
    lines = step_lines(caplog, [*over, "recipe.kl_beta=0.01"])
    assert len(lines) == 2, lines
    for s in lines:
        assert re.search(r" reward \d\.\d{3} kl \S+ len \d+ gen \d+% lr ", s), s
        assert " loss " not in s  # a clipped-ratio loss near 0 says nothing of progress
