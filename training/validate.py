"""Cross-field rules, checked once before anything is built. They raise; they never fix a value.

    from training.validate import validate
    layout = validate(cfg, world_size=1)   # raises ConfigError listing every problem

The batch rule: global_batch_tokens = micro_batch_tokens x grad_accum x data-parallel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from training.errors import ConfigError

SUPPORTED_LOSSES = {"sft", "dpo_sigmoid", "dpo_norm", "simpo"}
SINGLE_PROCESS_ENGINES = {"single"}


@dataclass(frozen=True)
class BatchLayout:
    dp: int
    micro_batch_tokens: int
    grad_accum: int
    global_batch_tokens: int

    @property
    def micro_batches_per_step(self) -> int:
        """Micro-batches per optimizer step across all ranks; fixed whatever the world size."""
        return self.grad_accum * self.dp


def global_batch_tokens(cfg: DictConfig) -> tuple[int, str]:
    """The global batch in tokens and the key it came from: trainer.global_batch_tokens when set,
    otherwise the rung's (each rung carries the batch its recipe practice asks for)."""
    if cfg.trainer.global_batch_tokens is not None:
        return cfg.trainer.global_batch_tokens, "trainer.global_batch_tokens"
    return cfg.rung.global_batch_tokens, "rung.global_batch_tokens"


def batch_layout(cfg: DictConfig, dp: int | None = None) -> BatchLayout:
    dp = dp if dp is not None else cfg.rung.nodes * cfg.rung.gpus_per_node
    micro = cfg.rung.micro_batch_tokens
    glob, key = global_batch_tokens(cfg)
    per_accum = micro * dp
    if micro <= 0 or glob <= 0:
        raise ConfigError(f"rung.micro_batch_tokens and {key} must be positive")
    if glob % per_accum:
        raise ConfigError(
            f"inconsistent batch: {key}={glob} is not a multiple of "
            f"rung.micro_batch_tokens={micro} x data-parallel size {dp} = {per_accum}; "
            f"set trainer.global_batch_tokens to one that is, e.g. {max(1, glob // per_accum) * per_accum}, "
            "or change rung.micro_batch_tokens")
    accum = glob // per_accum
    if cfg.trainer.grad_accum is not None and cfg.trainer.grad_accum != accum:
        raise ConfigError(
            f"inconsistent batch: trainer.grad_accum={cfg.trainer.grad_accum}, but "
            f"global_batch_tokens={glob} / (micro_batch_tokens={micro} x dp={dp}) = {accum}; "
            "set trainer.grad_accum=null to derive it, or change the global batch")
    return BatchLayout(dp=dp, micro_batch_tokens=micro, grad_accum=accum, global_batch_tokens=glob)


def effective_lr(cfg: DictConfig) -> float:
    """optim.lr when set, else the rung's learning rate times the recipe's scale (the ladder's
    transfer rule: larger models and preference tuning take gentler rates)."""
    return cfg.optim.lr if cfg.optim.lr is not None else cfg.rung.lr * cfg.recipe.lr_scale


def warmup_steps(cfg: DictConfig) -> int:
    return math.ceil(cfg.optim.warmup_ratio * cfg.trainer.max_steps)


def validate(cfg: DictConfig, world_size: int | None = None) -> BatchLayout:
    problems: list[str] = []
    m, r, d, t, o = cfg.model, cfg.rung, cfg.data, cfg.trainer, cfg.optim

    layout = None
    try:
        layout = batch_layout(cfg, world_size)
    except ConfigError as e:
        problems.append(str(e))
    if world_size is not None and world_size != r.nodes * r.gpus_per_node:
        problems.append(
            f"the job has {world_size} process(es) but rung.nodes x rung.gpus_per_node = "
            f"{r.nodes} x {r.gpus_per_node}; make them agree")

    if m.hidden_size % m.num_heads:
        problems.append(f"model.hidden_size={m.hidden_size} is not divisible by model.num_heads={m.num_heads}")
    if m.num_heads % m.num_kv_heads:
        problems.append(f"model.num_heads={m.num_heads} is not divisible by model.num_kv_heads={m.num_kv_heads}")
    if m.attn_implementation not in {"auto", "sdpa", "eager", "flash_attention_2"}:
        problems.append(f"model.attn_implementation={m.attn_implementation!r}: use auto, sdpa, eager or flash_attention_2")

    if r.device not in {"cpu", "cuda"}:
        problems.append(f"rung.device={r.device!r}: use cpu or cuda")
    if r.engine.value in SINGLE_PROCESS_ENGINES and r.nodes * r.gpus_per_node > 1:
        problems.append(f"rung.engine=single runs one process, but the rung asks for {r.nodes} x "
                        f"{r.gpus_per_node} devices; pick ddp, fsdp2, deepspeed_zero2 or deepspeed_zero3")
    if r.offload and r.engine.value != "deepspeed_zero3":
        problems.append(f"rung.offload=true needs rung.engine=deepspeed_zero3 (it is {r.engine.value})")

    rc = cfg.recipe
    if rc.loss not in SUPPORTED_LOSSES:
        problems.append(f"recipe.loss={rc.loss!r}: supported losses are {sorted(SUPPORTED_LOSSES)}")
    else:
        want = "messages" if rc.loss == "sft" else "preference"
        if d.format != want:
            problems.append(f"data.format={d.format!r}: recipe.loss={rc.loss} needs data in the {want!r} format")
    if rc.beta <= 0:
        problems.append(f"recipe.beta={rc.beta} must be positive")
    if not 0.0 <= rc.label_smoothing < 0.5:
        problems.append(f"recipe.label_smoothing={rc.label_smoothing} must be in [0, 0.5)")
    if bool(d.train_files) == bool(d.hub_name):
        problems.append("set exactly one of data.train_files (local jsonl) and data.hub_name")
    for f in d.train_files:
        if not Path(f).is_file():
            problems.append(f"data.train_files: no such file: {f}")
    if d.max_seq_len > r.micro_batch_tokens:
        problems.append(
            f"data.max_seq_len={d.max_seq_len} exceeds rung.micro_batch_tokens={r.micro_batch_tokens}: "
            "a packed micro-batch must hold at least one whole document")
    if d.max_seq_len > m.max_position_embeddings:
        problems.append(f"data.max_seq_len={d.max_seq_len} exceeds model.max_position_embeddings={m.max_position_embeddings}")
    if d.max_samples is not None and d.max_samples <= 0:
        problems.append("data.max_samples must be positive or null")

    if t.max_steps <= 0:
        problems.append(f"trainer.max_steps={t.max_steps} must be positive")
    if t.save_every <= 0:
        problems.append(f"trainer.save_every={t.save_every} must be positive")
    if t.keep_last < 1:
        problems.append(f"trainer.keep_last={t.keep_last} must be at least 1")
    if t.log_every <= 0:
        problems.append(f"trainer.log_every={t.log_every} must be positive")
    urls = {"trainer.checkpoint_url": t.checkpoint_url, "trainer.resume": t.resume if "://" in t.resume else None}
    if any(urls.values()):
        from training.remote import url_problem  # imports fsspec and torch: only when a URL is given
        problems += [p for key, url in urls.items() if url and (p := url_problem(url, key))]
    if effective_lr(cfg) <= 0:
        problems.append(f"the learning rate must be positive (optim.lr={o.lr}, rung.lr={r.lr})")
    if not 0.0 <= o.warmup_ratio <= 1.0:
        problems.append(f"optim.warmup_ratio={o.warmup_ratio} must be in [0, 1]")
    if not 0.0 <= o.min_lr_ratio <= 1.0:
        problems.append(f"optim.min_lr_ratio={o.min_lr_ratio} must be in [0, 1]")
    if o.max_grad_norm <= 0:
        problems.append(f"optim.max_grad_norm={o.max_grad_norm} must be positive")

    if cfg.eval.heldout_file is not None and not Path(cfg.eval.heldout_file).is_file():
        problems.append(f"eval.heldout_file: no such file: {cfg.eval.heldout_file}")
    if cfg.eval.batch_size <= 0 or cfg.eval.max_new_tokens <= 0:
        problems.append("eval.batch_size and eval.max_new_tokens must be positive")

    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
    assert layout is not None
    return layout
