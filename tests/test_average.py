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
