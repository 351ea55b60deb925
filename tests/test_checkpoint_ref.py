"""A checkpoint is resolved once into one value (issue #13 item 13, DESIGN.md "Team scale").

.venv/bin/python -m pytest -q tests/test_checkpoint_ref.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST, train_in_process
from omegaconf import OmegaConf


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    result = train_in_process(
        [
            *FAST,
            f"trainer.run_root={root}",
            "trainer.run_name=ref",
            "trainer.max_steps=2",
            "trainer.save_every=2",
            "data.max_samples=64",
            "sweep.name=s1",
        ]
    )
    return result.checkpoints[-1]


def test_ladder_eval_reads_and_hashes_the_checkpoint_once(ckpt, monkeypatch):
    import evals.store.checkpoint_ref as ref_module
    import training.common.checkpoint_hash as content_hash
    from launch.commands.eval_cmd import run_eval

    loads, hashes = [], []
    real_load, real_hash = OmegaConf.load, content_hash.checkpoint_hash
    monkeypatch.setattr(
        OmegaConf,
        "load",
        lambda p, *a, **k: (loads.append(Path(getattr(p, "name", p)).name), real_load(p, *a, **k))[
            1
        ],
    )
    monkeypatch.setattr(
        content_hash, "checkpoint_hash", lambda p: (hashes.append(p), real_hash(p))[1]
    )
    result = run_eval(str(ckpt), ["eval.max_examples=4", "tracker.mode=disabled"])
    assert loads.count("ladder_config.yaml") == 1 and len(hashes) == 1
    ref = ref_module.resolve_checkpoint(ckpt)
    assert (ref.path, ref.step, ref.run_dir, ref.run_name) == (
        ckpt.resolve(),
        2,
        ckpt.resolve().parent.parent,
        "ref",
    )
    assert ref.select("sweep.name") == "s1" and ref.content_hash == result["content_hash"]
    assert result["step"] == 2 and result["run_name"] == "ref"


def test_the_eval_job_record_comes_from_the_resolved_value(ckpt):
    from evals.store.checkpoint_ref import resolve_checkpoint
    from launch.commands.eval_cmd import eval_job_fields
    from training.config.compose import compose

    ref = resolve_checkpoint(ckpt)
    fields = eval_job_fields(ref, compose(["rung=tiny"]), 1, "[]")
    assert (
        fields["run_name"] == "eval synthetic: ref@2"
        and fields["sweep"] == "s1"
        and fields["rung"] == "tiny"
    )
    assert fields["run_dir"] == str(ckpt.resolve())
    assert (
        "content_hash" not in ref.__dict__
    )  # not hashed: a record (or a SLURM submission) never needs it


def test_a_damaged_checkpoint_is_refused_when_resolved(ckpt, tmp_path):
    import shutil

    from evals.store.checkpoint_ref import resolve_checkpoint
    from training.common.errors import CheckpointError

    copy = tmp_path / "checkpoints" / "step_000002"
    shutil.copytree(ckpt, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        resolve_checkpoint(copy)


def test_ladder_eval_on_cuda_loads_through_accelerates_big_model_inference(ckpt, monkeypatch):
    """device_map="auto" on CUDA (spread over the GPUs, then host memory); a plain load elsewhere."""
    import transformers

    from evals.runner import load_model

    calls = []

    class Loaded:
        def to(self, device):
            calls[-1]["to"] = device
            return self

    monkeypatch.setattr(
        transformers.AutoModelForCausalLM,
        "from_pretrained",
        lambda path, **kw: (calls.append(dict(kw)), Loaded())[1],
    )
    load_model(ckpt, "cuda")
    load_model(ckpt, "cpu")
    assert calls[0].get("device_map") == "auto" and "to" not in calls[0]
    assert "device_map" not in calls[1] and calls[1]["to"] == "cpu"
