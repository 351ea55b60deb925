"""The DPO reference pass: summed log-probs of every pair's chosen and rejected answer, once.

    logps = reference_logps(trainer, pairs)    # [n_pairs, 2], from the cache when it can

Called by the DPO recipe before the first step. On a cache hit nothing runs. On a miss, each
rank scores its share of the pairs (rank r takes pairs r, r + W, ...) and the results are
summed across ranks; rank 0 writes the cache entry. When the reference is the model training
starts from and this is step 0, the policy itself (already wrapped by the engine) is the
reference, so no second copy of the model is loaded; with LoRA the policy with its adapters
disabled is the reference at every step (training/model/lora.py); otherwise the reference loads from
recipe.reference (or model.name_or_path). The pass is timed and its FLOPs counted (forward
only: a third of a training step's) and written to <run_dir>/reference_pass.json, so
throughput and MFU can be reported with and without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from training.common.checkpoint_hash import model_identity
from training.data.packing import pack_greedy
from training.data.preference import collate_pairs, pair_length, sequence_logps
from training.engine import distributed
from training.model import lora
from training.model.flops import mfu, train_flops
from training.model.shape import shape_of
from training.recipes import ref_cache

log = logging.getLogger("ladder.reference")


def reference_source(cfg) -> str | None:
    return cfg.recipe.reference or cfg.model.name_or_path


def reference_hash(cfg) -> str:
    """What the reference's log-probs are a function of: its weights, and the dtype it runs in
    (under rung.bf16 the reference, or a LoRA run's frozen base, is held in bf16: its log-probs
    differ from an fp32 run's, so a cache one wrote is not the other's)."""
    bf16 = cfg.rung.bf16 and cfg.model.get("quantize", "none") != "nf4"
    return _weights_hash(cfg) + (";dtype=bf16" if bf16 else "")


def _weights_hash(cfg) -> str:
    if lora.enabled(cfg):
        # The policy with adapters disabled: the base (its weights and storage, nf4 or not), and the
        # adapter config, so a run never reads log-probs another adapter layout wrote.
        return f"lora:{lora.base_identity(cfg)};adapter={lora.adapter_fingerprint(cfg)}"
    src = reference_source(cfg)
    if src:
        return model_identity(src)  # the eval cache's rule: a copy of a checkpoint hits too
    # A model built from config: its initial weights are a function of the shape and the seed.
    shape = OmegaConf.to_container(cfg.model)
    return (
        "init:"
        + hashlib.sha256(json.dumps([shape, cfg.trainer.seed], sort_keys=True).encode()).hexdigest()
    )


@torch.no_grad()
def score(
    model,
    pairs: list[tuple],
    indices: list[int],
    max_tokens: int,
    device: str,
    chunk_tokens: int = 1024,
) -> tuple[dict, int, float]:
    out, tokens, flops = {}, 0, 0.0
    c = model.config if hasattr(model, "config") else model.module.config
    n_matmul = shape_of(c).matmul_params
    groups = pack_greedy(indices, lambda i: pair_length(pairs[i]), max_tokens)
    # A sharded model's forward is a collective (FSDP2 / ZeRO-3 gather each layer from every rank), so
    # every rank runs as many forwards as the busiest one: the others repeat a pair and drop the result.
    n = len(groups)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        t = torch.tensor([n], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        n = int(t)
    for k in range(n):
        g = groups[k] if k < len(groups) else [0]
        b = collate_pairs([pairs[i] for i in g], g)
        b = {key: (v.to(device) if torch.is_tensor(v) else v) for key, v in b.items()}
        sums, _ = sequence_logps(model, b, chunk_tokens)
        if k >= len(groups):
            continue  # a padding forward
        for j, i in enumerate(g):
            out[i] = (float(sums[2 * j]), float(sums[2 * j + 1]))
        tokens += sum(b["doc_lens"])
        # forward only: a third of a training step's FLOPs
        flops += train_flops(n_matmul, c.num_hidden_layers, c.hidden_size, b["doc_lens"]) / 3
    return out, tokens, flops


def load_reference_model(trainer):
    """With LoRA (model.lora.enabled), the policy itself with its adapters disabled: no second copy.
    Otherwise a frozen copy of the reference: from recipe.reference or model.name_or_path, or, for a
    model built from config, the same initial weights (the same shape and seed). It is kept in the
    training dtype (bf16 when rung.bf16: it is only ever run forward, so it needs no fp32 master)
    and, under fsdp2 and deepspeed_zero3, sharded like the policy (training/engine/engines.py, wrap_frozen),
    so it costs 2 bytes x params / world per device there instead of 4 x params whole."""
    from training.engine.engines import wrap_frozen
    from training.model.modeling import build_model

    cfg = trainer.cfg
    if lora.enabled(cfg):  # validation refused any other reference (lora.lora_problems)
        return lora.AdapterDisabled(trainer.model)
    dtype = torch.bfloat16 if cfg.rung.bf16 else torch.float32
    # FSDP2 moves each unit to the device as it shards it: built on the CPU, the reference is never
    # whole on the device. (DeepSpeed moves the whole module to its device before partitioning it,
    # so under ZeRO-3 loading still peaks at the whole model in bf16.)
    device = "cpu" if cfg.rung.engine.value == "fsdp2" else trainer.device
    model = build_model(
        cfg.model,
        trainer.tokenizer,
        device,
        cfg.trainer.seed,
        dtype=dtype,
        source=reference_source(cfg),
    )
    return wrap_frozen(cfg, model, trainer.world, trainer.layout)


def reference_logps(trainer, pairs: list[tuple]) -> torch.Tensor:
    cfg, world, device = trainer.cfg, trainer.world, trainer.device
    cache_dir = Path(cfg.trainer.run_root) / "cache" / "ref_logps"
    key = ref_cache.cache_key(reference_hash(cfg), trainer.tokenizer, cfg.data)
    t0 = time.perf_counter()
    cached = ref_cache.load(cache_dir, key, len(pairs))
    # Every rank must agree on hit or miss, or the ranks would wait on different collectives.
    hit = not distributed.any_rank(cached is None, device)
    record = {"cache_key": key, "cached": hit, "pairs": len(pairs)}
    if hit:
        logps = cached
        record.update(seconds=time.perf_counter() - t0, tokens=0, flops=0.0)
        log.info("reference log-probs for %d pairs from the cache (%s)", len(pairs), key)
    else:
        if lora.enabled(cfg):  # the base: the policy with its adapters disabled, at any step
            model = lora.AdapterDisabled(trainer.model)
        elif trainer.start_step == 0 and not cfg.recipe.reference:
            model = trainer.engine.module  # step 0: the policy is the reference
        else:
            model = load_reference_model(trainer)
        model.eval()
        mine = list(range(world.rank, len(pairs), world.size))
        scored, tokens, flops = score(
            model,
            pairs,
            mine,
            trainer.layout.micro_batch_tokens,
            device,
            trainer.cfg.trainer.loss_chunk_tokens,
        )
        model.train()
        logps = torch.zeros(len(pairs), 2, dtype=torch.float64, device=device)
        for i, (c, r) in scored.items():
            logps[i, 0], logps[i, 1] = c, r
        if world.size > 1:
            torch.distributed.all_reduce(logps)
        logps = logps.cpu()
        seconds = time.perf_counter() - t0
        tokens = distributed.all_sum(tokens, device)
        flops = distributed.all_sum(flops, device)
        record.update(
            seconds=seconds,
            tokens=tokens,
            flops=flops,
            tokens_per_s=tokens / seconds / world.size,
            mfu=mfu(flops, seconds, cfg.rung.peak_flops_per_device, world.size),
        )
        if world.main:
            ref_cache.store(
                cache_dir, key, logps, {"pairs": len(pairs), "reference": reference_hash(cfg)}
            )
        distributed.barrier()
        log.info("reference pass: %d pairs, %d tokens in %.1f s", len(pairs), tokens, seconds)
    if world.main:
        from training.common.safe_files import (
            write_atomic,
        )  # a link planted in the run folder is replaced, not followed

        write_atomic(trainer.run_dir / "reference_pass.json", json.dumps(record, indent=2) + "\n")
    trainer.reference_pass = record
    return logps.to(torch.float32)
