"""Evaluation of checkpoints and what lands in the W&B offline run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ladder_cli
from wandb_records import history, read_records


def wandb_file(run_dir: Path) -> Path:
    files = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert files, f"no W&B offline run under {run_dir}"
    return files[0]


def test_eval_score_moves_with_training(trained_run):
    assert set(trained_run.evals) == {0, 75, 150}
    first = trained_run.evals[0]["reverse/exact_match"]
    last = trained_run.evals[150]["reverse/exact_match"]
    assert first == 0.0
    assert last >= first + 30


def test_eval_result_is_written_beside_the_checkpoint(trained_run):
    ckpt = trained_run.checkpoints[-1]
    result = json.loads((ckpt / "eval" / "synthetic.json").read_text())
    task = result["tasks"]["reverse"]
    assert task["n"] == 100 and len(task["examples"]) == 100
    assert task["generation"]["do_sample"] is False
    assert result["scores"]["reverse/exact_match"] == pytest.approx(
        100 * sum(e["correct"] for e in task["examples"]) / 100
    )


def test_wandb_offline_run_holds_config_losses_artifacts_and_evals(trained_run):
    records = read_records(wandb_file(trained_run.run_dir))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["trainer"]["max_steps"] == 150 and config["model"]["name"] == "tiny"

    rows = history(records)
    from training.run.metrics import read_metrics

    logged = {r["_step"]: r["train/loss"] for r in rows if "train/loss" in r}
    expected = {r["step"]: r["loss"] for r in read_metrics(trained_run.run_dir / "metrics.jsonl")}
    assert logged == pytest.approx(expected)

    all_arts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    arts = [a for a in all_arts if a.type == "model"]
    steps = sorted(int(json.loads(a.metadata)["step"]) for a in arts)
    evals_linked = sorted(
        json.loads(a.metadata)["checkpoint_step"] for a in all_arts if a.type == "eval"
    )
    assert evals_linked == [0, 75, 150]  # each eval names its checkpoint's artifact
    assert steps == [0, 75, 150]
    for a in arts:
        assert a.type == "model"
        refs = [m.ref for m in a.manifest.contents]
        assert refs and all(ref.startswith("file://") for ref in refs)  # references, not uploads

    evals = {
        r["eval/checkpoint_step"]: r["eval/reverse/exact_match"]
        for r in rows
        if "eval/checkpoint_step" in r
    }
    assert evals == pytest.approx(
        trained_run.evals and {k: v["reverse/exact_match"] for k, v in trained_run.evals.items()}
    )


def test_ladder_eval_cli_scores_a_checkpoint_and_logs_it_at_its_step(trained_run):
    ckpt = trained_run.checkpoints[1]  # step 75
    proc = ladder_cli("eval", str(ckpt), "eval.max_examples=20")
    assert proc.returncode == 0, proc.stderr
    assert "reverse/exact_match" in proc.stdout
    result = json.loads((ckpt / "eval" / "synthetic.json").read_text())
    assert result["tasks"]["reverse"]["n"] == 20 and result["step"] == 75
    runs = sorted(Path(trained_run.run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 2  # the eval appended to the same W&B run id, in a second offline segment
    records = read_records(runs[-1])
    rows = history(records)
    assert any(
        r.get("eval/checkpoint_step") == 75
        and r.get("eval/reverse/exact_match") == result["scores"]["reverse/exact_match"]
        for r in rows
    )
    # The eval is linked to the checkpoint's artifact: an `eval` artifact names it and its content.
    evals = [
        r.artifact
        for r in records
        if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "eval"
    ]
    assert len(evals) == 1
    meta = json.loads(evals[0].metadata)
    from training.common.checkpoint_hash import checkpoint_hash

    assert (
        meta["checkpoint_artifact"] == "shared-checkpoint:step_75" and meta["checkpoint_step"] == 75
    )
    assert meta["content_hash"] == checkpoint_hash(ckpt) and meta["scores"] == result["scores"]
    assert meta["tasks"]["reverse"]["generation"]["do_sample"] is False
    assert [m.ref for m in evals[0].manifest.contents] == [
        (ckpt / "eval" / "synthetic.json").resolve().as_uri()
    ]

    # The same eval again comes from the cache and is not logged to the run a second time.
    again = ladder_cli("eval", str(ckpt), "eval.max_examples=20")
    assert again.returncode == 0, again.stderr
    assert "not logged again" in again.stdout and "loading model" not in again.stderr
    assert len(sorted(Path(trained_run.run_dir).glob("wandb/offline-run-*/run-*.wandb"))) == 2
