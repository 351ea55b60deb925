"""Rollout generation: G samples per prompt from the trainer's current weights.

    ladder train recipe=grpo generator=hf generator.temperature=1.0 generator.max_new_tokens=16
    gen = make_generator(cfg.generator, tokenizer)
    completions = gen.sample(model, prompt_ids, keys)   # keys: one seed per sample

generator=hf runs transformers `generate` on the training model itself (no copy), on a CPU and
under every engine. Sampling is seeded per sample, not per batch: each sequence's Gumbel noise is
a hash of its key (the caller derives it from seed, step, prompt and sample index), the token's
position in the answer and the token id, made on the model's device
(training/rl/sampling_noise.py), and the token is argmax(logits / T + noise) over the top-p set,
which is a draw from the tempered, top-p-filtered softmax. So a sample does not depend on which other prompts share its
batch, on the rank or host that generates it, or on the global RNG, and a resumed run redraws
the same rollouts. Under FSDP2 and ZeRO-3 every rank runs the same number of forward
passes (`synced_gpus`), because each forward gathers the sharded parameters collectively.

generator.impl says how hf decodes; each draws the same tokens through seeded_scores:
  auto             the default: static on a CPU (the fastest there, bench/RESULTS.md), eager on a
                   GPU (which is fastest there is unmeasured) and for a LoRA policy (peft's generate)
  eager            transformers `generate`: a finished answer rides along to the end, and each of
                   a prompt's G answers is prefilled on its own
  static           Ladder's loop on a static KV cache (training/rl/decode_loop.py): each distinct
                   prompt prefilled once, finished answers dropped in power-of-two buckets; synced
                   forwards under FSDP2 and ZeRO-3
  static_compiled  the same loop with the decode step under torch.compile
  continuous       transformers' continuous batching over a paged cache (training/rl/continuous.py);
                   refused under a sharded engine's colocated generation

generator=vllm (vLLM colocated on the training GPUs, weights pushed after each update) needs a
GPU and the `vllm` package; on a CPU it is refused at start-up with the reason.

The same component generates for the eval tasks (evals/tasks/generate.py): `eval.generator.name=auto`
resolves to vllm on a GPU where vllm imports, else hf (resolve_backend), and greedy decoding is
keys=None. One sampler, two uses: the GRPO reward and the eval score see answers made one way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from training.common.errors import ConfigError
from training.common.seeds import seed_of
from training.rl.sampling_noise import gumbel_noise, key_tensor


def sample_key(*parts) -> int:
    """One answer's sampling seed, from (seed, step, prompt index, sample index)."""
    return seed_of(*parts)


class SeededSampler(LogitsProcessor):
    """Temperature, top-p, then each row's Gumbel noise, a hash of (key, position, token) made on
    the logits' device: greedy decoding of the result is a sample. prompt_len is the (padded)
    prompt width, so that position = tokens generated so far, whatever the batch's width.
    Temperature and top-p are applied here, not by transformers' own warpers, because generate()
    replaces a passed warper with its own default one of the same type."""

    def __init__(self, keys: list[int], temperature: float, top_p: float, prompt_len: int):
        self.keys = key_tensor(keys)  # moved to the logits' device once, at the first token
        self.temperature, self.top_p, self.prompt_len = temperature, top_p, prompt_len

    def __call__(self, input_ids, scores):
        if self.keys.device != scores.device:
            self.keys = self.keys.to(scores.device)
        position = input_ids.shape[-1] - self.prompt_len
        return seeded_scores(scores, self.keys, position, self.temperature, self.top_p)


def seeded_scores(scores, keys, position, temperature: float, top_p: float) -> torch.Tensor:
    """Tempered, top-p-filtered scores plus each row's Gumbel noise: their argmax is the sample.
    keys: each row's answer key (int64, on scores' device); position: the token's index in its
    answer (an int, or a tensor of one per row). Every generator.impl samples through this."""
    scores = scores.float() / temperature
    if top_p < 1.0:  # keep the smallest set of tokens whose probability reaches top_p
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probs = sorted_scores.softmax(-1)
        drop_sorted = probs.cumsum(-1) - probs >= top_p  # the mass before it already suffices
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores + gumbel_noise(keys, position, scores.shape[-1], scores.dtype)


@dataclass(frozen=True)
class Sampling:
    """The settings a generator reads, for callers without a generator config node (the evals decode
    greedily: keys=None, so temperature and top_p are unused there)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    gpu_memory_utilization: float = 0.5


class HFGenerator:
    name = "hf"

    def __init__(self, cfg, tokenizer, synced: bool = False, compile: bool = True):
        # compile: static_compiled's decode step under torch.compile (False: the same loop eager)
        self.cfg, self.tokenizer, self.synced, self.compile = cfg, tokenizer, synced, compile
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    @torch.no_grad()
    def sample(
        self,
        model,
        prompts: list[list[int]],
        keys: list[int] | None,
        max_new_tokens: int | None = None,
        version=None,
    ) -> tuple[list[list[int]], float]:
        """Completion token ids (ending with EOS unless truncated) per prompt, and seconds taken.
        keys=None decodes greedily (the eval tasks). version (the policy version) matters only to a
        generator holding its own copy of the weights (vllm); this one runs on the model itself."""
        t0 = time.perf_counter()
        n = max_new_tokens or self.cfg.max_new_tokens
        width = max(len(p) for p in prompts)
        device = next(model.parameters()).device
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # decoder-only: pad on the left
            ids[i, width - len(p) :], mask[i, width - len(p) :] = torch.tensor(p), 1
        impl = resolve_impl(getattr(self.cfg, "impl", "eager"), model)
        if impl != "eager":
            return self._sample_fast(model, prompts, keys, n, impl), time.perf_counter() - t0
        procs = LogitsProcessorList()
        if keys is not None:
            procs.append(SeededSampler(keys, self.cfg.temperature, self.cfg.top_p, width))
        was_training = model.training
        model.eval()
        try:
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                do_sample=False,
                max_new_tokens=n,
                logits_processor=procs,
                eos_token_id=self.eos,
                pad_token_id=self.pad,
                synced_gpus=self.synced,
                use_cache=True,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        finally:
            model.train(was_training)
        completions = []
        for row in out[:, width:].tolist():
            end = row.index(self.eos) + 1 if self.eos in row else len(row)
            completions.append(row[:end])
        return completions, time.perf_counter() - t0

    def _sample_fast(self, model, prompts, keys, n: int, impl: str) -> list[list[int]]:
        """generator.impl=static, static_compiled or continuous: finished answers stop costing
        compute, tokens drawn by seeded_scores as the eager path draws them."""
        device = next(model.parameters()).device
        key_rows = None if keys is None else key_tensor(keys, device)
        temperature, top_p = self.cfg.temperature, self.cfg.top_p

        def sample_fn(logits, rows, position):
            if key_rows is None:  # greedy (the eval tasks)
                return logits.argmax(-1)
            return seeded_scores(logits, key_rows[rows], position, temperature, top_p).argmax(-1)

        was_training = model.training
        model.eval()
        try:
            if impl in ("static", "static_compiled"):
                from training.rl.decode_loop import decode_static

                compile = self.compile and impl == "static_compiled"
                out = decode_static(
                    model, prompts, n, self.eos, self.pad, sample_fn, compile, self.synced
                )
            else:
                from training.rl.continuous import decode_continuous

                # the manager's thread decodes in the caller's inference mode (no autograd graph)
                with torch.inference_mode():
                    out = decode_continuous(model, prompts, n, self.eos, self.pad, sample_fn)
        finally:
            model.train(was_training)
        return [a[: a.index(self.eos) + 1] if self.eos in a else a for a in out]


def resolve_impl(impl: str, model) -> str:
    """generator.impl=auto as it runs on this model: static on a CPU, where Ladder's loop measured
    fastest (bench/RESULTS.md: prefix sharing and no per-token cache concatenation); eager on a GPU
    until a lent GPU measures the impls there, and for a peft model, whose adapters the static
    loop's direct forward would bypass in a compiled step. Any other value stands as given."""
    if impl != "auto":
        return impl
    on_cpu = next(model.parameters()).device.type == "cpu"
    peft = any(hasattr(m, "peft_config") for m in (model, getattr(model, "module", None)))
    return "static" if on_cpu and not peft else "eager"


def make_generator(
    gen_cfg,
    tokenizer,
    engine: str = "single",
    world_size: int = 1,
    max_model_len: int | None = None,
):
    """The rollout generator of a training run."""
    if gen_cfg.name == "vllm":
        from training.rl.vllm_generator import VLLMGenerator

        return VLLMGenerator(gen_cfg, tokenizer, max_model_len=max_model_len, colocated=True)
    if gen_cfg.name != "hf":
        raise ConfigError(f"generator.name={gen_cfg.name!r}: use hf or vllm")
    sharded = engine in {"fsdp2", "deepspeed_zero3"} and world_size > 1
    return HFGenerator(gen_cfg, tokenizer, synced=sharded)


def resolve_backend(name: str, device: str) -> str:
    """auto: vllm on a GPU where vllm imports, else hf; hf and vllm stand as they are."""
    if name == "auto":
        from training.rl.rl_checks import vllm_problem

        return "vllm" if vllm_problem(device) is None else "hf"
    return name


def eval_generator(
    name: str, tokenizer, checkpoint, device: str, gpu_memory_utilization: float = 0.5
):
    """The generator of the eval tasks: greedy, on the loaded model (hf) or on an engine that loads
    the checkpoint directory itself (vllm)."""
    backend = resolve_backend(name, device)
    if backend == "vllm":
        from training.rl.vllm_generator import VLLMGenerator

        return VLLMGenerator(
            Sampling(gpu_memory_utilization=gpu_memory_utilization),
            tokenizer,
            model_path=str(checkpoint),
        )
    return HFGenerator(Sampling(), tokenizer)


def eval_beside_training(eval_cfg):
    """The eval suite as a training run scores its own checkpoints: on the GPU the trainer holds,
    eval.generator.name=auto means hf, since a vLLM engine would claim a share of memory training
    already uses (`ladder eval` and eval jobs, on their own GPUs, take vLLM). An explicit name stands."""
    if eval_cfg.generator.name != "auto":
        return eval_cfg
    from omegaconf import OmegaConf

    out = OmegaConf.create(
        OmegaConf.to_container(eval_cfg)
    )  # as composed: a literal `${` stays escaped
    out.generator.name = "hf"
    return out
