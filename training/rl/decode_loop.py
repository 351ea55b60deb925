"""generator.impl=static_compiled: Ladder's own decode loop on a static KV cache, compiled.

    ladder train recipe=grpo generator.impl=static_compiled          # on a GPU
    completions = decode_static(model, prompts, keys, n, eos, pad, sample_fn, compile=True)

transformers' `generate` keeps every row of its batch until the longest answer ends, so an answer
that has finished still costs a forward pass per token, and it prefills each of a prompt's G
answers separately. This loop prefills each distinct prompt once and copies its cache rows into
its answers' slots, and it drops finished rows: the batch
lives in a power-of-two bucket, and when the unfinished rows fit in half of it the static cache
is compacted into the smaller bucket (their rows copied, the rest freed). Between compactions a
finished row rides along as padding, at most half the bucket. Shapes stay static inside a bucket,
so a compiled decode step is reused and only log2(batch) shapes are ever compiled (dynamic=False:
each bucket its own graph, as CUDA graphs need).

The tokens are chosen exactly as `generate` with SeededSampler chooses them: the same left-padded
prefill, position ids from the attention mask, float32 logits, then `sample_fn(logits, rows,
position)` (temperature, top-p and each answer's counter-based Gumbel noise, training/rl/
sampling_noise.py), argmax. So an answer depends on its key, not on the impl, its batch or rank;
tests/test_generator_impls.py checks the tokens against the eager path. (Floating point may differ
in the last bit between batch shapes, as it does for `generate` itself; a token would change only
on an exact tie of noisy scores.)

Under FSDP2 and ZeRO-3 (synced=True) every forward gathers sharded weights collectively, so each
rank keeps forwarding, on a one-row remnant of its batch, until every rank's answers have ended:
one all-reduce of a flag per token, as `generate(synced_gpus=True)` does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import StaticCache

# compiled forwards, one per model object: a recompile per bucket is dynamo's business, not ours
_COMPILED: dict[int, Callable] = {}


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _compiled(model) -> Callable:
    key = id(model)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(model.forward, dynamic=False, fullgraph=False)
    return _COMPILED[key]


def _compact(cache: StaticCache, index: torch.Tensor) -> None:
    """Keep the cache rows `index`, in that order, in fresh fixed-address tensors."""
    for layer in cache.layers:
        if not getattr(layer, "is_initialized", False):
            continue
        layer.keys = layer.keys.index_select(0, index)
        layer.values = layer.values.index_select(0, index)
        layer.batch_size = len(index)
        torch._dynamo.mark_static_address(layer.keys)
        torch._dynamo.mark_static_address(layer.values)


def _any_unfinished(flag: bool, device) -> bool:
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t)
    return bool(t.item() > 0)


@torch.no_grad()
def decode_static(
    model,
    prompts: list[list[int]],
    n: int,
    eos: int,
    pad: int,
    sample_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    compile: bool = True,
    synced: bool = False,
) -> list[list[int]]:
    """Up to n new tokens per prompt (ending with eos unless cut). sample_fn(logits float32
    (rows, vocab), row indices into `prompts` (rows,), position) gives the next token of each row."""
    device = next(model.parameters()).device
    rows, width = len(prompts), max(len(p) for p in prompts)
    size = _bucket(rows)
    # GRPO samples G answers per prompt: the prefill runs once per distinct prompt, and each
    # answer's slot starts from a copy of its prompt's cache rows (vLLM calls this prefix sharing)
    distinct: dict[tuple[int, ...], int] = {}
    source = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
    ids = torch.full((len(distinct), width), pad, dtype=torch.long)
    mask = torch.zeros((len(distinct), width + n), dtype=torch.long)
    for p, i in distinct.items():  # left padding, as HFGenerator gives generate()
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    mask[:, width:] = 1  # the answer's slots; the static cache's causal mask hides the future
    ids, mask = ids.to(device), mask.to(device)
    position = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
    cache = StaticCache(config=model.config, max_cache_len=width + n)
    # the prefill runs eagerly (one shape per call); decode steps run the compiled forward
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=position, cache=cache, use_cache=True
    ).logits[:, -1]
    # fan out into the bucket's slots: answer i copies its prompt's row; the bucket's spare
    # slots copy row 0 and ride along finished (row_of -1)
    index = torch.tensor(source + [0] * (size - rows), device=device)
    _compact(cache, index)
    logits, mask, position = logits[index], mask[index], position[index]
    row_of = torch.arange(size, device=device)  # which prompt each slot holds
    row_of[rows:] = -1
    step = _compiled(model) if compile else model
    out: list[list[int]] = [[] for _ in prompts]
    live = row_of >= 0  # slots whose answer is still being written
    next_pos = position[:, -1]
    for t in range(n):
        active = live.nonzero().squeeze(-1)
        tokens = torch.full((len(row_of),), pad, dtype=torch.long, device=device)
        drawn = tokens[:0]
        if len(active) == len(row_of):  # no finished row rides along: no gather
            drawn = tokens = sample_fn(logits.float(), row_of, t)
        elif len(active):
            drawn = tokens[active] = sample_fn(logits[active].float(), row_of[active], t)
        # the bookkeeping reads host lists, one transfer each per step: indexing a tensor once
        # per answer cost more than the decode step's attention on a CPU
        slots, ended = row_of.tolist(), []
        for slot, tok in zip(active.tolist(), drawn.tolist()):
            answer = out[slots[slot]]
            answer.append(tok)
            if tok == eos or len(answer) == n:
                ended.append(slot)
        if ended:
            live[ended] = False
        unfinished = len(ended) < len(active)
        if t == n - 1 or not (_any_unfinished(unfinished, device) if synced else unfinished):
            break
        # compact into the smaller bucket once the live rows fit in it (at least one row stays)
        keep = live.nonzero().squeeze(-1)
        if (want := _bucket(max(1, len(keep)))) < len(row_of):
            spare = (~live).nonzero().squeeze(-1)[: want - len(keep)]
            index = torch.cat([keep, spare])
            _compact(cache, index)
            row_of, live, tokens = row_of[index], live[index], tokens[index]
            mask, next_pos = mask[index], next_pos[index]
        next_pos = next_pos + 1
        logits = step(
            input_ids=tokens.unsqueeze(-1),
            attention_mask=mask,
            position_ids=next_pos.unsqueeze(-1),
            cache=cache,
            use_cache=True,
        ).logits[:, -1]
    return out
