"""GRPO on a GPU: generator=hf on CUDA, and the generator=vllm path (skipped without vllm).

.venv/bin/python -m pytest -q -m gpu tests/test_grpo_gpu.py
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from conftest import FAST, train_in_process

from training.run.metrics import read_metrics

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def gpu_overrides(root, name, data, extra=()):
    return [
        *FAST,
        "recipe=grpo",
        "model.from_scratch=true",
        "rung.device=cuda",
        f"data.train_files=[{data}]",
        f"trainer.run_root={root}",
        f"trainer.run_name={name}",
        "trainer.max_steps=2",
        "trainer.save_every=2",
        "recipe.prompts_per_step=4",
        "recipe.num_generations=4",
        "generator.max_new_tokens=8",
        *extra,
    ]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "rl.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [{"role": "user", "content": f"Name thing {i} in one word."}],
                    "ground_truth": '{"type": "max_words", "n": 1}',
                    "dataset": "ifeval",
                }
            )
            + "\n"
            for i in range(8)
        )
    )
    return path


def test_hf_generator_on_cuda(tmp_path, data):
    res = train_in_process(gpu_overrides(tmp_path, "hf", data))
    rows = read_metrics(res.run_dir / "metrics.jsonl")
    assert len(rows) == 2 and all(r["gen_tokens_per_s"] > 0 for r in rows)


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="needs vllm (pip install vllm)"
)
def test_vllm_generator_trains(tmp_path, data):
    start = train_in_process(
        [
            *FAST,
            "rung.device=cuda",
            f"trainer.run_root={tmp_path}",
            "trainer.run_name=sft",
            "trainer.max_steps=2",
            "trainer.save_every=2",
        ]
    ).checkpoints[-1]
    res = train_in_process(
        gpu_overrides(
            tmp_path,
            "vllm",
            data,
            ["generator=vllm", "generator.max_new_tokens=8", f"model.name_or_path={start}"],
        )
    )
    rows = read_metrics(res.run_dir / "metrics.jsonl")
    assert len(rows) == 2 and rows[0]["gen_time_s"] > 0


needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="needs vllm (pip install vllm)"
)


@pytest.fixture(scope="module")
def sft_pair(tmp_path_factory):
    """An untrained and a trained tiny checkpoint of one run on the GPU (reverse task)."""
    root = tmp_path_factory.mktemp("sft")
    res = train_in_process(
        [
            *FAST,
            "rung.device=cuda",
            f"trainer.run_root={root}",
            "trainer.run_name=sft",
            "trainer.save_initial=true",
            "trainer.max_steps=150",
            "trainer.save_every=150",
        ]
    )
    return res.checkpoints[0], res.checkpoints[-1]


@needs_vllm
def test_vllm_decodes_the_pushed_weights_like_the_trainer(sft_pair):
    """The engine starts from the untrained checkpoint; after a push of the trained weights its
    greedy answers are the trained model's (bf16 kernels differ, so most, not all, must agree)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evals.tasks.synthetic import load_heldout
    from training.config.compose import compose
    from training.rl.generator import HFGenerator, Sampling
    from training.rl.rlvr_data import encode_prompt
    from training.rl.vllm_generator import VLLMGenerator

    untrained, trained = sft_pair
    tok = AutoTokenizer.from_pretrained(trained)
    model = AutoModelForCausalLM.from_pretrained(trained, dtype=torch.bfloat16).cuda()
    rows = load_heldout(compose(["eval=cpu"]).eval.heldout_file, 64)
    prompts = [
        encode_prompt(tok, [m for m in r["messages"] if m["role"] != "assistant"]) for r in rows
    ]
    vllm = VLLMGenerator(
        Sampling(max_new_tokens=24, gpu_memory_utilization=0.3),
        tok,
        model_path=str(untrained),
        colocated=True,
    )  # in this process, as in training: its weights can be pushed
    before, _ = vllm.sample(None, prompts, None)  # the untrained weights
    after, _ = vllm.sample(model, prompts, None, version=1)  # pushes the trained ones first
    hf, _ = HFGenerator(Sampling(max_new_tokens=24), tok).sample(model, prompts, None)
    agree = sum(a == b for a, b in zip(after, hf))
    assert agree >= 0.9 * len(prompts), (agree, len(prompts))
    assert sum(a == b for a, b in zip(before, hf)) < agree  # the push changed what it decodes


@needs_vllm
def test_ladder_eval_generates_through_vllm(sft_pair, tmp_path):
    from evals.runner import evaluate_checkpoint
    from evals.store.registry import Registry
    from training.config.compose import compose

    scores = {}
    for name in ("hf", "vllm"):
        cfg = compose(
            ["eval=cpu", "eval.device=cuda", f"eval.generator.name={name}", "eval.lm_eval.tasks=[]"]
        )
        res = evaluate_checkpoint(sft_pair[1], cfg.eval, Registry(tmp_path / f"{name}.db"))
        assert (
            res["generator"] == name and res["tasks"]["reverse"]["generation"]["generator"] == name
        )
        scores[name] = res["scores"]["reverse/exact_match"]
    assert scores["hf"] > 50 and abs(scores["vllm"] - scores["hf"]) <= 5, scores
