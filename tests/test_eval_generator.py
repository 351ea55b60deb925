"""The eval tasks generate through the rollout generator component (training/rl/generator.py).

    .venv/bin/python -m pytest -q tests/test_eval_generator.py

On a CPU the component is transformers `generate` on the loaded model; its greedy answers in
left-padded batches must equal the model's answers to each prompt alone. eval.generator.name=vllm
where vLLM cannot run is refused before a model is loaded or a row is registered. The vLLM path
itself runs in tests/test_grpo_gpu.py (marked gpu).
"""

from __future__ import annotations

import pytest
import torch
from conftest import FAST

from evals.runner import evaluate_checkpoint
from evals.tasks.generate import greedy_complete
from evals.tasks.synthetic import load_heldout
from training.common.errors import ConfigError
from training.config.compose import compose
from training.config.validate import validate
from training.rl.generator import HFGenerator, eval_generator, resolve_backend
from training.rl.rlvr_data import encode_prompt


@pytest.fixture(scope="module")
def trained(trained_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt = trained_run.checkpoints[-1]
    return AutoModelForCausalLM.from_pretrained(
        ckpt, dtype=torch.float32
    ), AutoTokenizer.from_pretrained(ckpt)


def test_batched_greedy_answers_equal_each_prompt_alone(trained):
    """Left padding, the attention mask and the positions it implies must not change an answer."""
    model, tok = trained
    rows = load_heldout(compose(["eval=cpu"]).eval.heldout_file, 12)
    convs = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
    assert len({len(encode_prompt(tok, c)) for c in convs}) > 1  # the batch really is padded
    batched = greedy_complete(model, tok, convs, max_new_tokens=20, batch_size=6)
    alone = []
    for c in convs:
        ids = torch.tensor([encode_prompt(tok, c)])
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id or tok.eos_token_id,
        )
        alone.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    assert batched == alone
    answers = [next(m["content"] for m in r["messages"] if m["role"] == "assistant") for r in rows]
    assert (
        sum(a.strip() == b.strip() for a, b in zip(batched, answers)) >= 6
    )  # a trained model, not noise


def test_the_eval_generator_is_the_rollout_generator_on_a_cpu(trained, trained_run):
    _, tok = trained
    assert resolve_backend("auto", "cpu") == "hf"
    gen = eval_generator("auto", tok, trained_run.checkpoints[-1], "cpu")
    assert isinstance(gen, HFGenerator) and gen.name == "hf"


def test_vllm_eval_on_a_cpu_is_refused_before_anything_is_loaded(trained_run, tmp_path):
    from evals.store.registry import Registry

    cfg = compose(["eval=cpu", "eval.generator.name=vllm", "eval.device=cpu"])
    reg = Registry(tmp_path / "registry.db")
    with pytest.raises(
        ConfigError, match=r"eval.generator.name=vllm: generator=vllm runs vLLM on the GPUs"
    ):
        evaluate_checkpoint(trained_run.checkpoints[-1], cfg.eval, reg)
    assert reg.checkpoints() == []  # refused before the checkpoint was registered


def test_a_training_config_with_a_vllm_eval_on_a_cpu_is_refused():
    with pytest.raises(ConfigError, match="eval.generator.name=vllm"):
        validate(compose([*FAST, "eval.generator.name=vllm"]))
    with pytest.raises(ConfigError, match="eval.generator.name takes one of auto, hf, vllm"):
        validate(compose([*FAST, "eval.generator.name=fast"]))


def test_a_training_run_scores_its_checkpoints_with_hf_unless_told_otherwise():
    """auto beside training is hf: a vLLM engine would claim GPU memory the trainer holds."""
    from training.rl.generator import eval_beside_training

    assert eval_beside_training(compose(FAST).eval).generator.name == "hf"
    assert (
        eval_beside_training(compose([*FAST, "eval.generator.name=vllm"]).eval).generator.name
        == "vllm"
    )
    assert compose(FAST).eval.generator.name == "auto"  # the config itself is left as written
