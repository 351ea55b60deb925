"""GRPO on a GPU: generator=hf on CUDA, and the generator=vllm path (skipped without vllm).

    .venv/bin/python -m pytest -q -m gpu tests/test_grpo_gpu.py
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from conftest import FAST, train_in_process

from training.metrics import read_metrics

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def gpu_overrides(root, name, data, extra=()):
    return [*FAST, "recipe=grpo", "rung.device=cuda", f"data.train_files=[{data}]", f"trainer.run_root={root}",
            f"trainer.run_name={name}", "trainer.max_steps=2", "trainer.save_every=2", "recipe.prompts_per_step=4",
            "recipe.num_generations=4", "generator.max_new_tokens=8", *extra]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Name thing {i} in one word."}],
                                        "ground_truth": '{"type": "max_words", "n": 1}', "dataset": "ifeval"}) + "\n"
                            for i in range(8)))
    return path


def test_hf_generator_on_cuda(tmp_path, data):
    res = train_in_process(gpu_overrides(tmp_path, "hf", data))
    rows = read_metrics(res.run_dir / "metrics.jsonl")
    assert len(rows) == 2 and all(r["gen_tokens_per_s"] > 0 for r in rows)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm (pip install vllm)")
def test_vllm_generator_trains(tmp_path, data):
    start = train_in_process([*FAST, "rung.device=cuda", f"trainer.run_root={tmp_path}", "trainer.run_name=sft",
                              "trainer.max_steps=2", "trainer.save_every=2"]).checkpoints[-1]
    res = train_in_process(gpu_overrides(tmp_path, "vllm", data, ["generator=vllm", "generator.max_new_tokens=8",
                                                                  f"model.name_or_path={start}"]))
    rows = read_metrics(res.run_dir / "metrics.jsonl")
    assert len(rows) == 2 and rows[0]["gen_time_s"] > 0
