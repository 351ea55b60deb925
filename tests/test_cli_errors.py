"""Bad input gets one clear message and exit status 2, never a traceback."""

from __future__ import annotations

import json

import pytest
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


# Each row: a mistake a newcomer makes, then what the one-line reply must say (the key, and what the
# key accepts or the key that was meant). Composed in-process through compose(), as the CLI does.
CONFIG_MISTAKES = [
    ("recipe=ppo", ["recipe=ppo", "recipe is one of dpo, grpo, sft"]),
    ("rung=70B", ["rung=70B", "did you mean rung=70b?"]),
    ("optim.lr=abc", ["optim.lr=abc", "optim.lr takes a number or null"]),
    ("trainer.max_steps=1.5", ["trainer.max_steps takes a whole number"]),
    ("rung.bf16=maybe", ["rung.bf16 takes true or false"]),
    ("data.train_files=/x.jsonl", ["data.train_files takes a list", "data.train_files=[/x.jsonl]"]),
    ("launcher.env=x", ["launcher.env takes a map"]),
    ("rung.engine=zero4", ["rung.engine takes one of single, ddp, fsdp2"]),
    (
        "optim.learning_rate=1e-4",
        ["optim.learning_rate is not a config key", "did you mean optim.lr"],
    ),
    ("trainer.epochs=3", ["trainer.epochs is not a config key", "did you mean trainer.max_steps?"]),
    ("trainer.tags=x", ["trainer.tags", "did you mean tracker.tags?"]),
    ("optim=adam", ["optim=adam", "optim is a node of settings", "optim.lr"]),
    ("trainer.max_steps", ["'trainer.max_steps' is not an override", "key=value"]),
    ("optim.lr=1e-4,2e-4", ["optim.lr=1e-4,2e-4", "ladder launch -m", "[a,b]"]),
    ("trainer.run_name=a${b}c", ["trainer.run_name=a${b}c", "write \\${ for a literal ${"]),
]


@pytest.mark.parametrize("override, needles", CONFIG_MISTAKES, ids=[m[0] for m in CONFIG_MISTAKES])
def test_every_config_mistake_is_one_line_naming_the_key_and_what_it_takes(override, needles):
    from training.common.errors import ConfigError
    from training.config.compose import compose

    with pytest.raises(ConfigError) as e:
        compose([override])
    text = str(e.value)
    assert "\n" not in text, text
    for noise in ("full_key", "object_type", "reference_type", "Config search path", "ListConfig"):
        assert noise not in text, text
    for needle in needles:
        assert needle in text, text


@pytest.mark.parametrize("recipe", ["dpo", "grpo"])
def test_dpo_and_grpo_without_a_starting_model_are_refused_unless_from_scratch(recipe, tmp_path):
    """The trap of #28: `ladder train recipe=dpo` on the tiny rung trained from random weights."""
    from launch.cli import main
    from training.common.errors import ConfigError
    from training.config.compose import compose
    from training.config.validate import validate

    with pytest.raises(ConfigError) as e:
        validate(compose([f"recipe={recipe}"]))
    assert "model.name_or_path is unset" in str(e.value) and "model.from_scratch=true" in str(
        e.value
    )
    validate(compose([f"recipe={recipe}", "model.from_scratch=true"]))  # meant: allowed
    validate(compose([f"recipe={recipe}", "model.name_or_path=runs/sft/checkpoints/step_000010"]))
    validate(compose([f"recipe={recipe}", "trainer.resume=runs/a/checkpoints/step_000010"]))
    validate(compose([f"recipe={recipe}"]), trains=False)  # `ladder data inspect`: data only
    assert main(["train", *FAST, f"recipe={recipe}", f"trainer.run_root={tmp_path}"]) == 2
    assert not list(tmp_path.glob(f"tiny-{recipe}-*"))  # refused before a run directory exists
