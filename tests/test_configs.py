"""Every config file composes; unknown keys, wrong types and inconsistent batches fail clearly."""

from __future__ import annotations

import pytest

from training.common.errors import ConfigError
from training.config.compose import CONFIG_DIR, compose, group_options
from training.config.validate import batch_layout, validate


def all_config_files():
    files = sorted(p.relative_to(CONFIG_DIR) for p in CONFIG_DIR.rglob("*.yaml"))
    assert files, "no config files found"
    return files


@pytest.mark.parametrize("path", all_config_files(), ids=str)
def test_every_config_file_composes(path):
    if str(path.parent) == ".":
        cfg = compose([], config_name=path.stem)
    else:  # data/sft/8b.yaml is option sft/8b of the group data
        group, *sub = path.parent.parts
        cfg = compose([f"{group}={'/'.join([*sub, path.stem])}"])
        assert group in cfg
    assert cfg.model.name and cfg.rung.name


def test_config_groups_match_design():
    assert {
        "model",
        "rung",
        "recipe",
        "data",
        "eval",
        "tracker",
        "launcher",
        "budget",
        "sweep",
    } <= set(group_options())


def test_rung_picks_its_model_and_model_can_be_overridden():
    assert compose(["rung=70b"]).model.name == "llama3_70b"
    assert compose(["rung=70b", "model=tiny"]).model.name == "tiny"


@pytest.mark.parametrize(
    "override,key",
    [
        (["model.hidden_sizes=3"], "model.hidden_sizes"),
        (["+trainer.nonsense=1"], "nonsense"),
        (["optim.lr=fast"], "optim.lr"),
        (["tracker.mode=sometimes"], "tracker.mode"),
    ],
)
def test_bad_keys_and_types_fail_at_compose_time_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose(override)


def test_inconsistent_batch_is_rejected_not_fixed():
    cfg = compose(["trainer.global_batch_tokens=3000"])
    with pytest.raises(ConfigError, match="global_batch_tokens=3000 is not a multiple"):
        validate(cfg, world_size=1)
    cfg = compose(["trainer.grad_accum=3"])
    with pytest.raises(ConfigError, match="grad_accum=3"):
        validate(cfg, world_size=1)


def test_grad_accum_is_derived_from_the_global_batch():
    cfg = compose(["trainer.global_batch_tokens=8192", "rung.micro_batch_tokens=1024"])
    assert batch_layout(cfg, 1).grad_accum == 8
    assert batch_layout(cfg, 4).grad_accum == 2
    assert batch_layout(cfg, 4).micro_batches_per_step == 8


def test_cross_field_rules_list_every_problem():
    cfg = compose(["model.num_heads=5", "data.max_seq_len=4096", "trainer.max_steps=0"])
    with pytest.raises(ConfigError) as e:
        validate(cfg, world_size=1)
    msg = str(e.value)
    assert "num_heads=5" in msg and "max_seq_len=4096" in msg and "max_steps=0" in msg


@pytest.mark.parametrize(
    "key, bad, choices",
    [
        ("rung.engine", "zero4", "single, ddp, fsdp2, deepspeed_zero2, deepspeed_zero3"),
        ("rung.device", "tpu", "cpu, cuda"),
        ("eval.device", "gpu", "auto, cpu, cuda"),
        (
            "model.attn_implementation",
            "flash",
            "auto, eager, sdpa, flex_attention, flash_attention_2",
        ),
        ("generator.name", "sglang", "hf, vllm"),
        ("generator.placement", "everywhere", "colocated, separate"),
        ("eval.generator.name", "fast", "auto, hf, vllm"),
        ("optim.schedule", "linear", "cosine, constant"),
        ("tracker.mode", "on", "offline, online, disabled"),
        ("data.format", "csv", "messages, preference, rlvr"),
    ],
)
def test_a_closed_choice_is_refused_at_compose_naming_its_choices(key, bad, choices):
    """Closed choices are StrEnums in the schema (#25): a bad value never reaches a job."""
    with pytest.raises(ConfigError) as e:
        compose([f"{key}={bad}"])
    assert f"{key}={bad}: {key} takes one of {choices}" in str(e.value)
