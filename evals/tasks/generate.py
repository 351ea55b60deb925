"""Greedy generation from a chat model, the shared core of the built-in tasks.

    completions = greedy_complete(model, tokenizer, [messages, ...], max_new_tokens=16)
    gen = eval_generator("auto", tokenizer, ckpt, device)       # training/rl/generator.py
    completions = greedy_complete(model, tokenizer, convs, 16, generator=gen)

The answers come from the generator component GRPO samples its rollouts with
(training/rl/generator.py): transformers `generate` on the loaded model (hf), or vLLM on the
checkpoint directory (vllm, on a GPU with vllm installed; `eval.generator.name=auto` picks it
there). Prompts are encoded exactly as RLVR prompts are (training/rlvr_data.encode_prompt), so a
reward during training and a score at eval see the same tokens.

On a terminal (`ladder eval` run by hand) a bar counts the examples done; elsewhere nothing is
drawn (training/run/progress.py).
"""

from __future__ import annotations

from training.rl.generator import HFGenerator, Sampling
from training.rl.rlvr_data import encode_prompt
from training.run.progress import example_progress


def greedy_complete(
    model,
    tokenizer,
    conversations: list[list[dict]],
    max_new_tokens: int,
    batch_size: int = 64,
    description: str = "generating",
    generator=None,
) -> list[str]:
    gen = generator or HFGenerator(Sampling(), tokenizer)
    prompts = [encode_prompt(tokenizer, c) for c in conversations]
    # vLLM schedules its own batches: hand it every prompt at once; transformers takes batch_size
    step = len(prompts) if gen.name == "vllm" else batch_size
    model_arg = (
        None if gen.name == "vllm" else model
    )  # vllm generates from the checkpoint it loaded
    out: list[str] = []
    with example_progress(len(prompts), description) as advance:
        for i in range(0, len(prompts), max(step, 1)):
            ids, _ = gen.sample(
                model_arg, prompts[i : i + step], keys=None, max_new_tokens=max_new_tokens
            )
            out.extend(tokenizer.batch_decode(ids, skip_special_tokens=True))
            advance(len(ids))
    return out


def generator_name(generator) -> str:
    """What made the answers, recorded with every result (hf when none was given)."""
    return generator.name if generator is not None else "hf"
