"""Greedy batched generation from a chat model, the shared core of the built-in tasks.

    completions = greedy_complete(model, tokenizer, [messages, ...], max_new_tokens=16)

On a terminal (`ladder eval` run by hand) a bar counts the examples done; elsewhere nothing is
drawn (training/progress.py).
"""

from __future__ import annotations

import torch

from training.progress import example_progress


@torch.no_grad()
def greedy_complete(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int,
                    batch_size: int = 64, description: str = "generating") -> list[str]:
    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
               for c in conversations]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # decoder-only: pad on the left
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    out: list[str] = []
    try:
        with example_progress(len(prompts), description) as advance:
            for i in range(0, len(prompts), batch_size):
                enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(model.device)
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id)
                new = gen[:, enc["input_ids"].shape[1]:]
                out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
                advance(len(new))
    finally:
        tokenizer.padding_side = side
    return out
