"""Bad input gets one clear message and exit status 2, never a traceback."""

from __future__ import annotations

import json

from conftest import FAST, ladder_cli


def assert_clean_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    for n in needles:
        assert n in proc.stderr, proc.stderr


def test_unknown_config_key(tmp_path):
    proc = ladder_cli("train", *FAST, "trainer.max_stepz=3", cwd=tmp_path)
    assert_clean_error(proc, "trainer.max_stepz")


def test_inconsistent_batch(tmp_path):
    proc = ladder_cli("train", *FAST, "trainer.global_batch_tokens=1500", cwd=tmp_path)
    assert_clean_error(proc, "global_batch_tokens=1500", "micro_batch_tokens=1024")
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_malformed_data_row(tmp_path):
    data = tmp_path / "bad.jsonl"
    good = json.dumps(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    )
    data.write_text(good + "\n" + '{"messages": [{"role": "user"}]}\n')
    proc = ladder_cli(
        "train", *FAST, f"data.train_files=[{data}]", "trainer.max_steps=1", cwd=tmp_path
    )
    assert_clean_error(proc, f"{data}:2:")


def test_missing_checkpoint(tmp_path):
    proc = ladder_cli("eval", str(tmp_path / "runs/nope/checkpoints/step_000100"), cwd=tmp_path)
    assert_clean_error(proc, "no checkpoint at", "does not exist")
    proc = ladder_cli("train", *FAST, f"trainer.resume={tmp_path}/nowhere", cwd=tmp_path)
    assert_clean_error(proc, "no checkpoint at")


def test_help_lists_verbs_and_config_groups():
    top = ladder_cli("--help")
    assert top.returncode == 0 and "train" in top.stdout and "eval" in top.stdout
    train = ladder_cli("train", "--help")
    assert train.returncode == 0
    for group in (
        "rung",
        "model",
        "recipe",
        "data",
        "eval",
        "tracker",
        "launcher",
        "budget",
        "sweep",
    ):
        assert f"  {group} " in train.stdout


def test_an_unknown_key_gets_a_did_you_mean_from_the_schema_not_a_plus_that_fails_too(tmp_path):
    proc = ladder_cli("config", "trainer.max_stpes=3", cwd=tmp_path)
    assert_clean_error(
        proc, "trainer.max_stpes is not a config key; did you mean trainer.max_steps?"
    )
    assert "+trainer.max_stpes" not in proc.stderr


def test_a_value_that_needs_quotes_is_told_how_and_the_advice_works():
    import re
    import shlex

    import pytest

    from training.common.errors import ConfigError
    from training.config.compose import compose

    for value in ("é", "a$(b)", "it's", 'say "hi"'):
        with pytest.raises(ConfigError) as e:
            compose([f"tracker.project={value}"])
        shell_word = re.search(r"in a shell, (.*) keeps the quotes", str(e.value)).group(1)
        [override] = shlex.split(shell_word)  # what the shell hands to ladder
        assert compose([override]).tracker.project == value
