"""generator.impl=continuous: transformers' continuous batching (paged KV cache) with Ladder's noise.

    ladder train recipe=grpo generator.impl=continuous               # on a GPU, one process
    completions = decode_continuous(model, prompts, n, eos, pad, sample_fn)

transformers' continuous-batching manager (`model.init_continuous_batching`, the engine behind
`generate_batch`) packs every unfinished answer's next token into one ragged batch over a paged KV
cache: an answer that ends frees its pages and stops costing compute at once, and the G answers of
a prompt can share the prompt's pages. Its own sampling draws from torch's global RNG
(torch.multinomial), which would make an answer depend on its batch; so it runs with
do_sample=False and one logits processor of ours, _SeededNoise, that adds each answer's
counter-based noise (sample_fn: training/rl/generator.py's seeded_scores) before its argmax.
The processor learns each token's answer and position from the request's state: one int32 per
token, row x (n + 1) + tokens generated so far, since the manager gives a processor one int32 slot
per token. Asynchronous batching is off, so that count is exact when the batch is prepared.

It runs forwards in a thread of its own, on a schedule that depends on when answers end, so it
cannot keep the collective forwards of FSDP2 or ZeRO-3 in step across ranks: validation refuses it
under a sharded engine (training/rl/rl_checks.py, generator_problems).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import GenerationConfig, LogitsProcessorList
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
)


class _SeededNoise(ContinuousBatchingLogitsProcessor):
    supported_kwargs = {"row": int}
    ignored_kwargs = ()

    def __init__(self, sample_fn, n: int):
        self.sample_fn, self.n = sample_fn, n

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token) -> torch.Tensor:
        code = [
            r.state.logit_processor_kwargs["row"] * (self.n + 1) + len(r.state.generated_tokens)
            for r in requests_with_new_token
        ]
        return torch.tensor(code, dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        code = tensor_arg[: scores.size(0)].long()
        rows, position = code // (self.n + 1), code % (self.n + 1)
        # sample_fn gives tokens; the manager wants scores whose argmax is that token
        tokens = self.sample_fn(scores, rows, position)
        return torch.full_like(scores, float("-inf")).scatter_(-1, tokens.unsqueeze(-1), 0.0)


def decode_continuous(
    model, prompts: list[list[int]], n: int, eos: int, pad: int, sample_fn: Callable
) -> list[list[int]]:
    """Up to n new tokens per prompt (ending with eos unless cut), as decode_static's contract."""
    if len(prompts) * (n + 1) >= 2**31:
        raise ValueError(f"{len(prompts)} answers of {n} tokens overflow the int32 token code")
    gen_cfg = GenerationConfig(
        do_sample=False, max_new_tokens=n, eos_token_id=eos, pad_token_id=pad
    )
    width = max(len(p) for p in prompts) + n
    cb_cfg = ContinuousBatchingConfig(
        use_async_batching=False,  # the processor reads each request's token count as exact
        auto_switch_to_flash=False,  # the training model's attention is left as configured
        max_requests_per_batch=len(prompts),
        max_batch_tokens=max(width, 256),
        num_blocks=max(16, -(-len(prompts) * width // 256) + 2),
        return_logprobs=False,
    )
    manager = model.init_continuous_batching(
        generation_config=gen_cfg, continuous_batching_config=cb_cfg
    )
    procs = ContinuousBatchingLogitsProcessorList(LogitsProcessorList([_SeededNoise(sample_fn, n)]))
    procs.tensors_required, procs.do_processing = 1, True
    manager.logit_processor = procs  # before start(): the batch processor is built from it
    manager.start()
    try:
        ids = [
            manager.add_request(p, request_id=f"a{i}", max_new_tokens=n, eos_token_id=eos, row=i)
            for i, p in enumerate(prompts)
        ]
        done: dict[str, list[int]] = {}
        while len(done) < len(ids):
            result = manager.get_result(timeout=1)
            if result is not None and result.is_finished():
                if result.error is not None:
                    raise RuntimeError(f"continuous batching failed: {result.error}")
                done[result.request_id] = list(result.generated_tokens)
            elif result is None and not manager.is_running():
                raise RuntimeError("continuous batching: the generation thread stopped early")
    finally:
        manager.stop(block=True, timeout=30)
        manager.destroy()
    return [done[i] for i in ids]
