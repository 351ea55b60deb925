"""Checkpoint averaging (#26 item 4): `ladder average` writes the exact mean of the inputs'
weights as an ordinary checkpoint with its lineage; different shapes are one clear error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from training.common.errors import CheckpointError
from training.config.compose import compose
from training.model.modeling import build_model, load_tokenizer
from training.run.average import average_checkpoints
from training.run.callbacks.base import Callback
from training.run.checkpoint import check_checkpoint, save_checkpoint


def tiny_checkpoint(run_dir, step, seed, *extra):
    cfg = compose(["rung=tiny", f"trainer.seed={seed}", f"trainer.run_name={run_dir.name}", *extra])
    tok = load_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, seed=seed)
    return save_checkpoint(run_dir, step, model, tok, {"step": step}, cfg)


def test_the_average_of_two_checkpoints_is_their_exact_mean_and_loads_in_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    a = tiny_checkpoint(tmp_path / "r", 10, 1)
    b = tiny_checkpoint(tmp_path / "r", 20, 2)
    out = average_checkpoints([a, b], tmp_path / "avg")
    wa, wb, wo = (load_file(p / "model.safetensors") for p in (a, b, out))
    assert set(wo) == set(wa) and any(not torch.equal(wa[k], wb[k]) for k in wa)
    for k in wa:
        assert torch.equal(wo[k], ((wa[k].float() + wb[k].float()) / 2).to(wa[k].dtype)), k
    check_checkpoint(out, hashes=True)  # an ordinary checkpoint: its manifest holds
    meta = json.loads((out / "ladder_meta.json").read_text())
    assert [x["step"] for x in meta["averaged_from"]] == [10, 20] and meta["step"] == 20
    assert all(len(x["content_hash"]) >= 16 for x in meta["averaged_from"])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(model.state_dict()["model.norm.weight"], wo["model.norm.weight"])


def test_checkpoints_of_different_shapes_are_refused_in_one_line(tmp_path):
    a = tiny_checkpoint(tmp_path / "r", 10, 1)
    wide = tiny_checkpoint(tmp_path / "w", 10, 1, "model.intermediate_size=96")
    with pytest.raises(
        CheckpointError,
        match=r"cannot average .* tensor model\.layers\.0\.mlp\.\w+_proj\.weight is",
    ):
        average_checkpoints([a, wide], tmp_path / "avg")
    assert not (tmp_path / "avg").exists() and not list(tmp_path.glob(".tmp-avg*"))


def test_ladder_average_registers_the_result_and_ladder_eval_scores_it(
    tmp_path, monkeypatch, capsys
):
    from evals.store.registry import Registry
    from launch.cli import main

    monkeypatch.chdir(tmp_path)
    a = tiny_checkpoint(tmp_path / "runs" / "r", 10, 1)
    b = tiny_checkpoint(tmp_path / "runs" / "r", 20, 2)
    out = tmp_path / "runs" / "r-avg"
    assert main(["average", str(a), str(b), "--out", str(out)]) == 0
    assert "the mean of 2 checkpoint(s)" in capsys.readouterr().out
    reg = Registry(tmp_path / "runs" / "registry.db")
    [row] = [r for r in reg.checkpoints() if r["path"] == str(out)]
    assert row["step"] == 20
    assert main(["eval", str(out), "eval=synthetic", "eval.max_examples=4"]) == 0
    assert reg.results(row["content_hash"]), "scored under the average's own content hash"


# ---- trainer.average_last (#26 item 4) ----------------------------------------------------------
AVG = [
    "trainer.max_steps=4",
    "trainer.save_every=2",
    "trainer.keep_last=2",
    "trainer.average_last=2",
]
# the tiny model made smaller still (the same code path, a second per step less on a busy CPU)
SMALL = [
    "rung.micro_batch_tokens=256",
    "trainer.global_batch_tokens=256",
    "data.max_seq_len=256",
    "model.num_layers=2",
    "model.hidden_size=64",
    "model.intermediate_size=128",
]


class StopAt(Callback):
    """Preempts the run after `step`, as SIGTERM does (the trainer's own stop flag)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, step: int, metrics: dict) -> None:
        if step == self.step:
            self.trainer.stop_signal = "SIGTERM"


def test_average_last_after_a_resume_averages_the_scheduled_steps_and_evaluates_it(tmp_path):
    """Preempted at step 3 (a save off the schedule, which with keep_last=2 would push step 2
    out) and resumed, the run averages steps 2 and 4, as an uninterrupted run would, into the
    exact mean; the average is evaluated in the run, and registered with its lineage."""
    from conftest import FAST

    from evals.store.registry import Registry
    from launch.train import train
    from training.common.errors import Preempted

    base = [*FAST, *SMALL, *AVG, f"trainer.run_root={tmp_path}", "trainer.run_name=cut"]
    with pytest.raises(Preempted):
        train(compose(base), callbacks=[StopAt(3)])
    assert not (tmp_path / "cut/checkpoints/avg_last2_step_000004").exists()
    evals = ["trainer.eval_on_save=true", "trainer.eval_async=false", "eval=synthetic"]
    res = train(compose([*base, *evals, "eval.max_examples=2", "eval.max_new_tokens=4"]))
    assert res.average == (tmp_path / "cut/checkpoints/avg_last2_step_000004").resolve()
    ckpts = sorted(p.name for p in res.average.parent.iterdir())
    assert ckpts == ["avg_last2_step_000004", "step_000002", "step_000003", "step_000004"]
    meta = json.loads((res.average / "ladder_meta.json").read_text())
    assert [(x["run_name"], x["step"]) for x in meta["averaged_from"]] == [("cut", 2), ("cut", 4)]
    a, b = (load_file(res.average.parent / f"step_{s:06d}/model.safetensors") for s in (2, 4))
    out = load_file(res.average / "model.safetensors")
    assert all(torch.equal(out[k], ((a[k].float() + b[k].float()) / 2).to(a[k].dtype)) for k in a)
    assert res.average_evals and set(res.evals) == {4}, "scored apart from step 4's checkpoint"

    reg = Registry(tmp_path / "registry.db")
    [row] = [r for r in reg.checkpoints() if r["path"] == str(res.average)]
    lineage = json.loads(row["lineage"])
    assert lineage["run_name"] == "cut" and [x["step"] for x in lineage["averaged_from"]] == [2, 4]
    assert reg.results(row["content_hash"]), "its eval is cached under its own content hash"


@pytest.mark.parametrize(
    "value, says",
    [
        ("3", "trainer.average_last=3 exceeds the 2 checkpoint(s) the run saves"),
        ("1", "trainer.average_last=1: an average needs at least 2 checkpoints"),
        ("-1", "trainer.average_last=-1 must be in [0, inf)"),
    ],
)
def test_a_bad_average_last_is_refused_before_the_run_in_one_line(tmp_path, capsys, value, says):
    from conftest import FAST

    from launch.cli import main

    args = ["train", *FAST, *AVG, f"trainer.run_root={tmp_path}", f"trainer.average_last={value}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("trainer.average_last") == 1, err
    assert not list(tmp_path.iterdir()), "refused before a run directory exists"


def test_average_last_above_keep_last_is_refused_naming_both_keys():
    from training.common.errors import ConfigError
    from training.config.validate import validate

    cfg = compose(["rung=tiny", *AVG, "trainer.keep_last=1"])
    with pytest.raises(ConfigError, match=r"trainer.average_last=2 exceeds trainer.keep_last=1"):
        validate(cfg)
    validate(compose(["rung=tiny", *AVG]))  # within both: accepted


def test_an_old_registry_gains_the_lineage_column_and_keeps_its_rows(tmp_path):
    """A version-1 registry (no lineage column) opens, is migrated, and keeps its rows; a checkpoint
    registered after records its run, and an average the checkpoints it averaged."""
    import sqlite3

    from evals.store import registry as registry_mod
    from evals.store.registry import Registry

    path = tmp_path / "runs" / "registry.db"
    Registry(path).register_checkpoint(tmp_checkpoint := tiny_checkpoint(tmp_path / "runs/r", 4, 1))
    db = sqlite3.connect(path)  # as Ladder's version 1 wrote it
    db.executescript(
        "ALTER TABLE checkpoints DROP COLUMN lineage; "
        "ALTER TABLE checkpoints DROP COLUMN adapter; "  # version 3's
        "UPDATE ladder_schema SET version = 1 WHERE component = 'registry';"
    )
    db.close()
    reg = Registry(path)
    assert reg.schema_version() == registry_mod.SCHEMA_VERSION
    [old] = reg.checkpoints()
    assert old["path"] == str(tmp_checkpoint) and old["lineage"] is None
    b = tiny_checkpoint(tmp_path / "runs/r", 8, 2)
    out = average_checkpoints([tmp_checkpoint, b], tmp_path / "runs/r-avg")
    reg.register_checkpoint(b)
    reg.register_checkpoint(out)
    rows = {r["path"]: json.loads(r["lineage"] or "null") for r in reg.checkpoints()}
    assert rows[str(b)]["run_name"] == "r" and rows[str(b)]["step"] == 8
    assert "averaged_from" not in rows[str(b)]
    assert [(x["step"], x["run_name"]) for x in rows[str(out)]["averaged_from"]] == [
        (4, "r"),
        (8, "r"),
    ]
