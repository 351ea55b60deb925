"""Cross-field rules, checked once before anything is built. They raise; they never fix a value.

    from training.config.validate import validate
    layout = validate(cfg, world_size=1)   # raises ConfigError listing every problem

The batch rule: global_batch_tokens = micro_batch_tokens x grad_accum x data-parallel size.
RL losses (family "rl" in training/recipes/losses.py) count their batch in answers instead: rl_batch_layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from training.common.errors import ConfigError
from training.config.config_errors import invalid
from training.config.paths import path_problems
from training.model.attention import attention_problem
from training.recipes.losses import LOSSES, is_rl, unknown_loss

SINGLE_PROCESS_ENGINES = {"single"}


@dataclass(frozen=True)
class BatchLayout:
    dp: int
    micro_batch_tokens: int
    grad_accum: int
    global_batch_tokens: (
        int  # RL: the step's capacity, micro_batch_tokens x grad_accum x dp (an upper bound)
    )
    answers_per_step: int | None = None  # RL only: recipe.prompts_per_step x recipe.num_generations
    answers_per_micro_batch: int | None = None  # RL only: micro_batch_tokens // data.max_seq_len

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


def generator_ranks(cfg: DictConfig) -> int:
    """The job's ranks that only generate (generator.placement=separate): none when colocated."""
    g = cfg.get("generator")
    return int(g.ranks) if g is not None and g.get("placement") == "separate" else 0


def batch_layout(cfg: DictConfig, world_size: int | None = None) -> BatchLayout:
    """The batch over the data-parallel (learner) ranks: the job's ranks less its generator ranks."""
    world = world_size if world_size is not None else cfg.rung.nodes * cfg.rung.gpus_per_node
    dp = world - generator_ranks(cfg)
    if dp < 1:
        raise ConfigError(
            f"generator.ranks={generator_ranks(cfg)} leaves no learner among the job's {world} "
            "rank(s): rung.nodes x rung.gpus_per_node must exceed generator.ranks"
        )
    if is_rl(cfg.recipe.loss):
        return rl_batch_layout(cfg, dp)
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
            "or change rung.micro_batch_tokens"
        )
    accum = glob // per_accum
    if cfg.trainer.grad_accum is not None and cfg.trainer.grad_accum != accum:
        raise ConfigError(
            f"inconsistent batch: trainer.grad_accum={cfg.trainer.grad_accum}, but "
            f"global_batch_tokens={glob} / (micro_batch_tokens={micro} x dp={dp}) = {accum}; "
            "set trainer.grad_accum=null to derive it, or change the global batch"
        )
    return BatchLayout(dp=dp, micro_batch_tokens=micro, grad_accum=accum, global_batch_tokens=glob)


def rl_batch_layout(cfg: DictConfig, dp: int) -> BatchLayout:
    """An RL step trains on N = P x G answers (P = recipe.prompts_per_step, G = num_generations),
    whatever the token count. Each answer (prompt + sampled tokens) is at most L = data.max_seq_len
    tokens (training/rl/rlvr_data.py refuses a prompt that leaves no room), so a micro-batch of
    A = micro_batch_tokens // L answers never exceeds micro_batch_tokens. Each rank generates whole
    prompts, P / dp of them, and trains on their answers in grad_accum = ceil(P / dp x G / A)
    micro-batches (the last may hold fewer). Nothing here is rounded into agreement."""
    r, micro, seq = cfg.recipe, cfg.rung.micro_batch_tokens, cfg.data.max_seq_len
    if cfg.trainer.global_batch_tokens is not None:
        raise ConfigError(
            f"trainer.global_batch_tokens={cfg.trainer.global_batch_tokens} does not apply to recipe.loss={r.loss}: "
            "the batch of an RL step is recipe.prompts_per_step x recipe.num_generations answers "
            f"(here {r.prompts_per_step} x {r.num_generations}); set those and trainer.global_batch_tokens=null"
        )
    if micro <= 0 or seq <= 0 or r.prompts_per_step < 1 or r.num_generations < 1:
        raise ConfigError(
            "rung.micro_batch_tokens, data.max_seq_len, recipe.prompts_per_step and "
            "recipe.num_generations must be positive"
        )
    if seq > micro:
        raise ConfigError(
            f"data.max_seq_len={seq} exceeds rung.micro_batch_tokens={micro}: a micro-batch must "
            "hold at least one whole answer (prompt + generator.max_new_tokens)"
        )
    if r.prompts_per_step % dp:
        raise ConfigError(
            f"recipe.prompts_per_step={r.prompts_per_step} is not a multiple of the data-parallel size {dp}: "
            "each rank generates whole prompt groups; e.g. "
            f"recipe.prompts_per_step={-(-r.prompts_per_step // dp) * dp}"
        )
    per_micro = micro // seq
    accum = -(-(r.prompts_per_step // dp) * r.num_generations // per_micro)
    if cfg.trainer.grad_accum is not None and cfg.trainer.grad_accum != accum:
        raise ConfigError(
            f"inconsistent batch: trainer.grad_accum={cfg.trainer.grad_accum}, but an RL step's "
            f"{r.prompts_per_step} / dp {dp} prompts x {r.num_generations} answers, at most {per_micro} answers "
            f"per micro-batch (rung.micro_batch_tokens={micro} // data.max_seq_len={seq}), take {accum}; "
            "set trainer.grad_accum=null to derive it"
        )
    return BatchLayout(
        dp=dp,
        micro_batch_tokens=micro,
        grad_accum=accum,
        global_batch_tokens=accum * dp * micro,
        answers_per_step=r.prompts_per_step * r.num_generations,
        answers_per_micro_batch=per_micro,
    )


def lora_lr_scale(cfg: DictConfig) -> float:
    """model.lora.lr_scale with LoRA on, else 1 (a config saved before model.lora: 1)."""
    lora = OmegaConf.select(cfg, "model.lora")
    return float(lora.lr_scale) if lora is not None and lora.get("enabled") else 1.0


def effective_lr(cfg: DictConfig) -> float:
    """optim.lr when set, else the rung's learning rate times the recipe's scale (the ladder's
    transfer rule: larger models and preference tuning take gentler rates), times LoRA's."""
    if cfg.optim.lr is not None:
        return cfg.optim.lr
    return cfg.rung.lr * cfg.recipe.lr_scale * lora_lr_scale(cfg)


def lr_rule(cfg: DictConfig) -> str:
    """Where the learning rate comes from, in words: `ladder config` prints it."""
    if cfg.optim.lr is not None:
        return f"{effective_lr(cfg):.3g} = optim.lr"
    rule = f"{effective_lr(cfg):.3g} = rung.lr {cfg.rung.lr:g} x recipe.lr_scale {cfg.recipe.lr_scale:g}"
    if lora_lr_scale(cfg) != 1.0 or OmegaConf.select(cfg, "model.lora.enabled"):
        rule += f" x model.lora.lr_scale {lora_lr_scale(cfg):g}"
    return rule


def warmup_steps(cfg: DictConfig) -> int:
    return math.ceil(cfg.optim.warmup_ratio * cfg.trainer.max_steps)


# Every numeric field of the schema, with the range it must lie in. Interval notation: "(0, inf)"
# is positive, "[0, 1)" may be 0 but not 1. A float field must also be finite (NaN passes every
# comparison, so it is refused explicitly). None of these is ever clamped into range.
INF = math.inf
RANGES: dict[str, tuple[float, float, str]] = {
    "model.vocab_size": (0, INF, "()"),
    "model.hidden_size": (0, INF, "()"),
    "model.intermediate_size": (0, INF, "()"),
    "model.num_layers": (0, INF, "()"),
    "model.num_heads": (0, INF, "()"),
    "model.num_kv_heads": (0, INF, "()"),
    "model.max_position_embeddings": (0, INF, "()"),
    "model.rope_theta": (0, INF, "()"),
    "model.published_params": (0, INF, "()"),
    "model.lora.r": (1, INF, "[)"),
    "model.lora.alpha": (0, INF, "()"),
    "model.lora.dropout": (0, 1, "[)"),
    "model.lora.lr_scale": (0, INF, "()"),
    "rung.nodes": (1, INF, "[)"),
    "sweep.seeds": (1, INF, "[)"),
    "rung.gpus_per_node": (1, INF, "[)"),
    "rung.micro_batch_tokens": (0, INF, "()"),
    "rung.lr": (0, INF, "()"),
    "rung.peak_flops_per_device": (0, INF, "()"),
    "rung.global_batch_tokens": (0, INF, "()"),
    "rung.gpu_memory_gb": (0, INF, "()"),
    "rung.cpu_memory_gb": (0, INF, "()"),
    "rung.assumed_mfu": (0, 1, "(]"),
    "rung.assumed_tokens_per_s": (0, INF, "()"),
    "rung.assumed_overhead_s": (0, INF, "[)"),
    "rung.rl_prompts_per_step": (1, INF, "[)"),
    "recipe.beta": (0, INF, "()"),
    "recipe.label_smoothing": (0, 0.5, "[)"),
    "recipe.simpo_gamma": (-INF, INF, "()"),
    "recipe.lr_scale": (0, INF, "()"),
    "data.max_seq_len": (0, INF, "()"),
    "data.max_samples": (0, INF, "()"),
    "data.decontamination.ngram": (1, INF, "[)"),
    "data.decontamination.threshold": (0, 1, "(]"),
    "eval.max_examples": (0, INF, "()"),
    "eval.max_new_tokens": (0, INF, "()"),
    "eval.batch_size": (0, INF, "()"),
    "eval.lm_eval.num_fewshot": (0, INF, "[)"),
    "eval.lm_eval.limit": (0, INF, "()"),
    "eval.lm_eval.batch_size": (0, INF, "()"),
    "eval.generator.gpu_memory_utilization": (0, 1, "(]"),
    "registry.busy_timeout_s": (0, INF, "[)"),
    "ledger.busy_timeout_s": (0, INF, "[)"),
    "ledger.retry_s": (0, INF, "[)"),
    "launcher.cpus_per_task": (1, INF, "[)"),
    "launcher.signal_before_s": (0, INF, "[)"),
    "launcher.max_parallel": (1, INF, "[)"),
    "launcher.rdzv_port": (1024, 64535, "[]"),
    "budget.price_per_gpu_hour": (0, INF, "[)"),
    "optim.lr": (0, INF, "()"),
    "optim.weight_decay": (0, INF, "[)"),
    "optim.beta1": (0, 1, "[)"),
    "optim.beta2": (0, 1, "[)"),
    "optim.eps": (0, INF, "[)"),
    "optim.warmup_ratio": (0, 1, "[]"),
    "optim.min_lr_ratio": (0, 1, "[]"),
    "optim.max_grad_norm": (0, INF, "()"),
    "trainer.seed": (0, 2**32 - 1, "[]"),
    "trainer.max_steps": (0, INF, "()"),
    "trainer.global_batch_tokens": (0, INF, "()"),
    "trainer.grad_accum": (1, INF, "[)"),
    "trainer.save_every": (0, INF, "()"),
    "trainer.keep_last": (1, INF, "[)"),
    "trainer.average_last": (0, INF, "[)"),  # 1 and more than the saves: average_last_problems
    "trainer.log_every": (0, INF, "()"),
    "trainer.step_timeout_s": (0, INF, "[)"),
    "trainer.loss_chunk_tokens": (0, INF, "[)"),
    "recipe.num_generations": (1, INF, "[)"),
    "recipe.prompts_per_step": (1, INF, "[)"),
    "recipe.ppo_epochs": (1, INF, "[)"),
    "recipe.clip_low": (0, 1, "[)"),
    "recipe.clip_high": (0, INF, "[)"),
    "recipe.kl_beta": (0, INF, "[)"),
    "recipe.max_policy_lag": (0, INF, "[)"),
    "recipe.is_cap": (0, INF, "()"),
    "generator.ranks": (0, INF, "[)"),
    "generator.temperature": (0, INF, "()"),
    "generator.top_p": (0, 1, "(]"),
    "generator.max_new_tokens": (1, INF, "[)"),
    "generator.gpu_memory_utilization": (0, 1, "(]"),
    "generator.assumed_decode_mfu": (0, 1, "(]"),
}


def range_problems(cfg: DictConfig) -> list[str]:
    """Every numeric value outside its range, or not finite. Null means "unset" and is allowed
    wherever the schema allows it; the schema has already checked the types."""
    problems = []
    for key, (lo, hi, ends) in RANGES.items():
        value = OmegaConf.select(cfg, key)
        if value is None or isinstance(value, bool):
            continue
        interval = f"{ends[0]}{lo:g}, {hi:g}{ends[1]}"
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{key}={value} must be a finite number in {interval}")
        elif not (
            (lo < value if ends[0] == "(" else lo <= value)
            and (value < hi if ends[1] == ")" else value <= hi)
        ):
            problems.append(f"{key}={value} must be in {interval}")
    return problems


# ---- launcher.env: what a cluster profile may set in the job's environment -------------------
# launcher.env is exported by the sbatch script before the job runs (launch/cluster/slurm_script.py), so a
# key there can take over the job: PATH, LD_PRELOAD, PYTHONPATH, BASH_ENV, IFS or SHELLOPTS change
# what runs and how the script parses, SLURM_* are the job's own (SLURM_ARRAY_TASK_ID picks the sweep
# point), and MASTER_ADDR, RANK and the like are torchrun's. A cluster profile holds network and
# library settings only, so keys come from these prefixes, each for a reason:
ENV_PREFIXES = {
    "NCCL_": "NCCL: interfaces, InfiniBand, protocol, debug level (configs/launcher/*.yaml)",
    "FI_": "libfabric, the EFA provider on AWS (configs/launcher/slurm_efa.yaml)",
    "OFI_NCCL_": "the aws-ofi-nccl plugin that carries NCCL over libfabric on EFA clusters",
    "UCX_": "UCX, the transport of InfiniBand clusters that use it (UCX_NET_DEVICES, UCX_TLS)",
    "GLOO_": "Gloo, torch.distributed's CPU backend: GLOO_SOCKET_IFNAME, as NCCL_SOCKET_IFNAME for NCCL",
    "TORCH_": "torch.distributed's own switches: TORCH_NCCL_ASYNC_ERROR_HANDLING, TORCH_DISTRIBUTED_DEBUG",
    "CUDA_": "CUDA runtime settings: CUDA_DEVICE_MAX_CONNECTIONS (configs/launcher/*.yaml)",
}
# Inside those prefixes, what SLURM sets per job: the GPUs it bound to this job (a fixed list would
# put two jobs of a node on the same GPUs).
ENV_JOB_OWNED = {"CUDA_VISIBLE_DEVICES"}
# Not allowed, on purpose: OMP_NUM_THREADS (the script derives it from launcher.cpus_per_task and
# would overwrite it), HF_* and WANDB_* (they reach the job from the submitting shell, which sbatch
# passes on; a token never belongs in a config).


def env_problems(env) -> list[str]:
    """launcher.env keys outside ENV_PREFIXES, or owned by the job, naming each key."""
    problems = []
    for name in env or {}:
        name = str(name)
        if name in ENV_JOB_OWNED:
            problems.append(
                f"launcher.env.{name}: SLURM sets it for each job; a launcher profile cannot"
            )
        elif not name.startswith(tuple(ENV_PREFIXES)):
            problems.append(
                f"launcher.env.{name}: not a network or library setting a cluster profile may set; "
                f"launcher.env keys start with {', '.join(ENV_PREFIXES)} (training/config/validate.py "
                "ENV_PREFIXES says why each)"
            )
    return problems


def start_problem(cfg: DictConfig) -> str | None:
    """A preference or RL run starts from a trained model. With model.name_or_path unset it would
    train from random weights and look like it works (losses fall, rewards stay low), so it is
    refused unless model.from_scratch=true says it is meant. A run resuming another run's
    checkpoint (trainer.resume=<dir>) takes that checkpoint's weights."""
    spec = LOSSES.get(cfg.recipe.loss)
    if spec is None or spec.family == "sft" or cfg.model.name_or_path or cfg.model.from_scratch:
        return None
    if cfg.trainer.resume not in ("auto", "none"):
        return None
    return (
        f"recipe.loss={cfg.recipe.loss} starts from a trained model, but model.name_or_path is "
        "unset, so it would train from random weights: set model.name_or_path=<an SFT checkpoint "
        "or model> (e.g. runs/<sft-run>/checkpoints/step_NNNNNN), or model.from_scratch=true to "
        "train from random weights on purpose"
    )


def validate(
    cfg: DictConfig, world_size: int | None = None, here: bool = False, trains: bool = True
) -> BatchLayout:
    """here=True in the process that runs the job: also check what this machine must have (vllm
    and a GPU for generator=vllm). Planning and launching from a login node check the config only.
    trains=False for commands that only read the data (`ladder data inspect`): where the weights
    come from does not matter there."""
    problems: list[str] = range_problems(cfg) + env_problems(cfg.launcher.env)
    if trains and (start := start_problem(cfg)):
        problems.append(start)
    paths = path_problems(cfg)
    if paths:  # the file checks below would raise OSError or ValueError on these
        raise invalid(problems + paths)
    m, r, d, t = cfg.model, cfg.rung, cfg.data, cfg.trainer

    layout = None
    try:
        layout = batch_layout(cfg, world_size)
    except ConfigError as e:
        problems.append(str(e))
    if world_size is not None and world_size != r.nodes * r.gpus_per_node:
        problems.append(
            f"the job has {world_size} process(es) but rung.nodes x rung.gpus_per_node = "
            f"{r.nodes} x {r.gpus_per_node}; make them agree"
        )

    if m.hidden_size % m.num_heads:
        problems.append(
            f"model.hidden_size={m.hidden_size} is not divisible by model.num_heads={m.num_heads}"
        )
    if m.num_heads % m.num_kv_heads:
        problems.append(
            f"model.num_heads={m.num_heads} is not divisible by model.num_kv_heads={m.num_kv_heads}"
        )
    attn_problem = attention_problem(m.attn_implementation, cfg.rung.device)
    if attn_problem:
        problems.append(attn_problem)
    from training.model.lora import lora_problems  # model.lora and model.quantize

    problems += lora_problems(cfg, here)
    from training.config.checkpoint_schedule import average_last_problems

    problems += average_last_problems(cfg)

    if r.engine.value in SINGLE_PROCESS_ENGINES and r.nodes * r.gpus_per_node > 1:
        problems.append(
            f"rung.engine=single runs one process, but the rung asks for {r.nodes} x "
            f"{r.gpus_per_node} devices; pick ddp, fsdp2, deepspeed_zero2 or deepspeed_zero3"
        )
    if r.offload and r.engine.value != "deepspeed_zero3":
        problems.append(
            f"rung.offload=true needs rung.engine=deepspeed_zero3 (it is {r.engine.value})"
        )

    rc = cfg.recipe
    if rc.loss not in LOSSES:  # training/recipes/losses.py: the one table of losses
        problems.append(unknown_loss(rc.loss))
    elif d.format != (want := LOSSES[rc.loss].data_format):
        problems.append(
            f"data.format={d.format.value!r}: recipe.loss={rc.loss} needs data in the {want!r} format"
        )
    from training.rl.rl_checks import grpo_problems, placement_problems

    problems += placement_problems(cfg, world_size, here)
    if is_rl(rc.loss):
        problems += grpo_problems(cfg, layout, here)
    if d.sources:  # a mixture: its own rules (training/data/mixture_config.py)
        from training.data.mixture_config import mixture_problems

        problems += mixture_problems(d)
    elif bool(d.train_files) == bool(d.hub_name):
        problems.append(
            "set exactly one of data.train_files (local jsonl) and data.hub_name, or data.sources"
        )
    for f in d.train_files:
        if not Path(f).is_file():
            problems.append(f"data.train_files: no such file: {f}")
    if d.max_seq_len > r.micro_batch_tokens and not is_rl(rc.loss):  # RL: rl_batch_layout says it
        problems.append(
            f"data.max_seq_len={d.max_seq_len} exceeds rung.micro_batch_tokens={r.micro_batch_tokens}: "
            "a packed micro-batch must hold at least one whole document"
        )
    if d.max_seq_len > m.max_position_embeddings:
        problems.append(
            f"data.max_seq_len={d.max_seq_len} exceeds model.max_position_embeddings={m.max_position_embeddings}"
        )

    urls = {
        "trainer.checkpoint_url": t.checkpoint_url,
        "trainer.resume": t.resume if "://" in t.resume else None,
    }
    if any(urls.values()):
        from training.run.remote import (
            url_problem,
        )  # imports fsspec and torch: only when a URL is given

        problems += [p for key, url in urls.items() if url and (p := url_problem(url, key))]
    # the learning rate (optim.lr, or rung.lr x recipe.lr_scale) is positive: RANGES checks all three

    if cfg.eval.heldout_file is not None and not Path(cfg.eval.heldout_file).is_file():
        problems.append(f"eval.heldout_file: no such file: {cfg.eval.heldout_file}")
    from training.rl.rl_checks import eval_generator_problems

    problems += eval_generator_problems(
        cfg.eval.generator.name,
        cfg.rung.device if cfg.eval.device == "auto" else cfg.eval.device,
        here,
    )

    if problems:
        raise invalid(problems)
    assert layout is not None
    return layout
