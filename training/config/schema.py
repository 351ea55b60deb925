"""Typed schemas for every config node, registered with Hydra as structured configs.

Composing goes through `training.config.compose.compose(overrides)`; these dataclasses make an
unknown key or a wrong type fail at compose time with the full key in the message
(e.g. `Key 'lrr' not in 'OptimConfig' ... full_key: optim.lrr`). Cross-field rules
live in `training.config.validate`, which runs before any model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

from omegaconf import MISSING


class Engine(StrEnum):
    single = "single"  # one process, no wrapper
    ddp = "ddp"
    fsdp2 = "fsdp2"
    deepspeed_zero2 = "deepspeed_zero2"
    deepspeed_zero3 = "deepspeed_zero3"


class TrackerMode(StrEnum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


class DataFormat(StrEnum):
    """What a data set's rows hold; each loss reads one (training/recipes/losses.py: data_format)."""

    messages = "messages"  # chat transcripts (SFT)
    preference = "preference"  # chosen/rejected pairs (DPO, SimPO)
    rlvr = "rlvr"  # prompts with an answer and a verifier (GRPO)


class Device(StrEnum):
    """Where a run trains (rung.device)."""

    cpu = "cpu"
    cuda = "cuda"


class EvalDevice(StrEnum):
    """Where an evaluation runs (eval.device)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class AttnImplementation(StrEnum):
    """model.attn_implementation; auto: sdpa (training/model/attention.py chooses and checks)."""

    auto = "auto"
    eager = "eager"
    sdpa = "sdpa"
    flex_attention = "flex_attention"
    flash_attention_2 = "flash_attention_2"


class GeneratorName(StrEnum):
    """What samples GRPO's answers (training/rl/generator.py)."""

    hf = "hf"  # transformers generate with the seeded sampler
    vllm = "vllm"  # vLLM colocated on the training GPUs


class GeneratorImpl(StrEnum):
    """How generator=hf decodes (training/rl/generator.py); every impl draws the same tokens."""

    auto = "auto"  # the default: static on a CPU, eager on a GPU and for a LoRA policy
    eager = "eager"  # transformers generate: finished rows ride along to the end
    static = "static"  # Ladder's static-cache loop: shared prefill, drops finished rows
    static_compiled = "static_compiled"  # the same loop, decode step under torch.compile
    continuous = "continuous"  # transformers continuous batching (paged attention), one process


class EvalGeneratorName(StrEnum):
    """What generates the built-in eval tasks' answers; auto: vllm where it runs, else hf."""

    auto = "auto"
    hf = "hf"
    vllm = "vllm"


class Placement(StrEnum):
    """Where GRPO generates (generator.placement)."""

    colocated = "colocated"  # every rank generates, then trains
    separate = "separate"  # generator.ranks of the job's ranks only generate


class Quantize(StrEnum):
    """How the frozen base of a LoRA run is stored (model.quantize; training/model/lora.py)."""

    none = "none"  # the training dtype (bf16 with rung.bf16, else fp32)
    nf4 = "nf4"  # QLoRA: 4-bit NormalFloat with bitsandbytes, on CUDA only


# Every linear layer of a Llama decoder's attention and MLP: "LoRA Without Regret" (Thinking
# Machines, 2025) found attention-only LoRA underperforms, and all layers with the MLP matches full
# fine-tuning for RL even at rank 1.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraConfig:
    """Low-rank adapters through peft (model.lora; training/model/lora.py): the base is frozen and
    only the adapters (and modules_to_save) train. DPO's and GRPO's reference is then the policy
    with its adapters disabled, so no second copy of the model is held."""

    enabled: bool = False
    r: int = 16  # the adapters' rank
    alpha: int = 32  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapters' input; 0 keeps a run bit for bit reproducible
    # module names (the last part of each path) that get adapters: default all of attention and MLP
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    # modules trained whole beside the adapters and saved with them (e.g. [lm_head])
    modules_to_save: list[str] = field(default_factory=list)
    # With optim.lr null the rate is rung.lr x recipe.lr_scale x lr_scale: "LoRA Without Regret"
    # (Thinking Machines, 2025) measured LoRA's best learning rate at about 10x full fine-tuning's.
    lr_scale: float = 10.0


class SaveMerged(StrEnum):
    """Which checkpoints of a LoRA run also hold the merged Hugging Face weights (trainer.save_merged)."""

    final = "final"  # the checkpoint at trainer.max_steps only
    every = "every"  # every checkpoint
    none = "none"  # adapters only


class Schedule(StrEnum):
    cosine = "cosine"  # linear warmup, cosine decay to min_lr_ratio x lr
    constant = "constant"  # linear warmup, then constant


@dataclass
class ModelConfig:
    """A model shape. With `name_or_path` unset it is built from these fields (no hub access);
    with it set, weights and tokenizer load from that hub name or local directory."""

    name: str = MISSING
    name_or_path: Optional[str] = None
    # DPO and GRPO start from a trained model (name_or_path); with it unset they would train from
    # random weights, which validation refuses unless this says it is meant (training/config/validate.py).
    from_scratch: bool = False
    tokenizer: Optional[str] = None  # default: name_or_path, else the checked-in tiny tokenizer
    vocab_size: Optional[int] = None  # default: the tokenizer's size
    hidden_size: int = 192
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    # auto: flash_attention_2 when flash-attn imports and a GPU is present, else sdpa.
    attn_implementation: AttnImplementation = AttnImplementation.auto
    # Published parameter count of this shape, checked by the tests (null for ad-hoc shapes).
    published_params: Optional[int] = None
    lora: LoraConfig = field(default_factory=LoraConfig)
    # nf4 (QLoRA) loads the frozen base in 4-bit; it needs model.lora.enabled=true and CUDA
    quantize: Quantize = Quantize.none


@dataclass
class RungConfig:
    """Hardware and parallelism for one scale of the ladder."""

    name: str = MISSING
    nodes: int = 1
    gpus_per_node: int = 1
    device: Device = Device.cpu
    engine: Engine = Engine.single
    offload: bool = False  # ZeRO-3 only: keep parameters and optimizer states in CPU memory
    micro_batch_tokens: int = 1024  # tokens in one packed micro-batch on one device
    # Learning rate used when optim.lr is null: larger models take a gentler rate (see README).
    lr: float = 1e-3
    bf16: bool = False
    activation_checkpointing: bool = False
    # Defaults for trainer.save_initial / trainer.eval_on_save when those are null: the tiny
    # rung keeps its untrained checkpoint and scores every checkpoint in-process.
    save_initial: bool = False
    eval_on_save: bool = False
    # Peak dense FLOP/s of one device, for MFU; null when unknown (a CPU), and MFU is null.
    peak_flops_per_device: Optional[float] = None
    # Tokens per optimizer step across all devices when trainer.global_batch_tokens is null.
    global_batch_tokens: int = 2048
    # recipe=grpo's prompts per step (configs/recipe/grpo.yaml reads it): RL batches are counted in
    # answers, not tokens, and each rank generates whole prompts, so a multiple of nodes x gpus_per_node.
    rl_prompts_per_step: int = 16
    # -- for `ladder plan` (launch/planning/plan.py); the trainer does not read these --
    gpu_type: str = "cpu"  # the accelerator, as shown in plans and the ledger (e.g. H100-80GB)
    gpu_memory_gb: float = 8.0  # memory of one device in GiB (2**30 bytes)
    cpu_memory_gb: float = 16.0  # host memory of one node in GiB, checked when rung.offload is on
    assumed_mfu: float = 0.35  # MFU for plans when the ledger has no measured run of this rung
    # Tokens per second per device for plans where peak_flops_per_device is null (a CPU).
    assumed_tokens_per_s: Optional[float] = None
    # Wall seconds a job is charged beyond its steps (start-up, the initial and periodic saves,
    # in-process evals, wrap-up), added once to a plan's time while the ledger has no completed
    # job of this rung to measure it from (launch/planning/overhead.py). Each rung in configs/rung/
    # sets its own and says where it comes from; 600 is a guess for a GPU rung that sets none.
    assumed_overhead_s: float = 600.0


@dataclass
class RecipeConfig:
    """A recipe is a loss and a batch format; the training loop is shared."""

    name: str = MISSING
    loss: str = "sft"  # a name in training/recipes/losses.py (sft, dpo_sigmoid, ..., dapo); validation refuses others
    beta: float = 0.1  # DPO / SimPO inverse temperature
    label_smoothing: float = 0.0  # conservative DPO: the share of preference labels assumed flipped
    simpo_gamma: float = 0.5  # SimPO target reward margin
    # The DPO reference model: a hub name or checkpoint directory; null = the model training starts from.
    reference: Optional[str] = None
    lr_scale: float = 1.0  # the learning rate is rung.lr x lr_scale when optim.lr is null
    # DPO: score the reference once, before training, into a shared cache (true), or run the
    # reference model beside the policy on every batch (false: no cache, one more forward per step).
    precompute_reference: bool = True
    # -- GRPO (recipe=grpo; training/rl/grpo.py) --
    num_generations: int = 8  # G, answers sampled per prompt (a group); at least 2
    prompts_per_step: int = (
        16  # prompts per rollout batch (recipe=grpo: the rung's); a multiple of data-parallel size
    )
    ppo_epochs: int = (
        1  # optimizer steps (passes) per rollout batch; the ratio is exactly 1 on the first
    )
    clip_low: float = 0.2  # the ratio is clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float = 0.2  # dapo's asymmetric clipping raises this (0.28 in the paper)
    kl_beta: float = 0.0  # k3 KL penalty to the reference; 0 loads no reference model
    # Asynchronous RL (training/rl/policy_lag.py): rollout batch b is generated by policy version
    # max(0, b - max_policy_lag); 0 is the synchronous run, bit for bit.
    max_policy_lag: int = 0
    # Truncated importance sampling: the weight pi_old / pi_behaviour of a lagged batch is capped
    # here (TRL's vllm_importance_sampling_cap); only lagged batches are weighted.
    is_cap: float = 2.0


@dataclass
class DataSourceConfig:
    """One source of a mixture (data.sources.<name>; training/data/mixture.py). Its documents per mixture
    round: `weight` (a share of the round's documents, relative to the other sources' weights; every
    source has one or none does), else `epochs` passes over its rows (default 1)."""

    train_files: list[str] = field(default_factory=list)  # local .jsonl files
    hub_name: Optional[str] = None
    hub_split: str = "train"
    weight: Optional[float] = None
    epochs: Optional[float] = None  # null: 1 without weights; not allowed with a weight
    max_samples: Optional[int] = None  # use the first N rows of the source


@dataclass
class DecontaminationConfig:
    """`ladder data decontaminate` and the check of `ladder launch` (evals/tasks/decontaminate.py): a training
    row matches an eval prompt when at least `threshold` of the prompt's word n-grams occur in the row."""

    ngram: int = 8  # Tulu 3 used 8-grams
    threshold: float = (
        0.5  # share of the eval prompt's n-grams; prompts shorter than ngram words match whole
    )


@dataclass
class DataConfig:
    """Chat data in the `messages` format: local jsonl files or a hub dataset by name, or a mixture
    of named sources (`sources`; then train_files and hub_name stay empty)."""

    name: str = MISSING
    format: DataFormat = DataFormat.messages
    train_files: list[str] = field(default_factory=list)  # local .jsonl files
    hub_name: Optional[str] = None  # e.g. allenai/tulu-3-sft-mixture, loaded with datasets
    hub_split: str = "train"
    max_seq_len: int = 256  # longer documents are truncated (and counted in the log)
    max_samples: Optional[int] = None
    shuffle: bool = True
    sources: dict[str, DataSourceConfig] = field(default_factory=dict)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)


@dataclass
class LmEvalConfig:
    """Tasks run through lm-evaluation-harness with its Hugging Face model on the checkpoint."""

    tasks: list[str] = field(default_factory=list)  # lm-eval task names, e.g. [gsm8k_cot, ifeval]
    include_path: Optional[str] = (
        None  # a directory of local task YAMLs, searched before lm-eval's own
    )
    num_fewshot: Optional[int] = None  # null: each task's own default
    apply_chat_template: bool = True  # prompts go through the checkpoint's chat template
    limit: Optional[int] = None  # examples per task; null: eval.max_examples
    batch_size: int = 16
    confirm_run_unsafe_code: bool = False  # tasks that execute model-written code (HumanEval)


@dataclass
class EvalGeneratorConfig:
    """What generates the built-in tasks' answers (training/rl/generator.py, the component GRPO samples
    with): auto is vllm on a GPU where vllm imports, else hf (transformers generate)."""

    name: EvalGeneratorName = EvalGeneratorName.auto
    gpu_memory_utilization: float = 0.5  # vllm only: its share of the GPU beside the loaded model


@dataclass
class EvalConfig:
    """An eval suite: the tasks to score each checkpoint on (evals/runner.py)."""

    name: str = MISSING
    tasks: list[str] = field(default_factory=list)  # built-in tasks: reverse, ifeval_lite
    heldout_file: Optional[str] = None  # the reverse task's held-out split
    instructions_file: Optional[str] = None  # the ifeval_lite prompts and their checks
    max_examples: Optional[int] = None  # per task; null: all
    max_new_tokens: int = 24  # greedy generation budget of the built-in tasks
    batch_size: int = 64
    device: EvalDevice = EvalDevice.auto  # auto: cuda when available, else cpu
    generator: EvalGeneratorConfig = field(default_factory=EvalGeneratorConfig)
    lm_eval: LmEvalConfig = field(default_factory=LmEvalConfig)


@dataclass
class GeneratorConfig:
    """How rollouts are sampled (training/rl/generator.py): hf (transformers generate on the trainer's
    weights; CPU and every engine) or vllm (colocated on the training GPUs; needs vllm)."""

    name: GeneratorName = GeneratorName.hf
    impl: GeneratorImpl = GeneratorImpl.auto  # generator=hf only: how it decodes
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    gpu_memory_utilization: float = 0.3  # vllm only: its share of the GPU beside training
    # colocated: every rank generates and trains; separate: the last `ranks` ranks of the job only
    # generate and the rest only train (learners = world size - ranks; training/rl/policy_lag.py)
    placement: Placement = Placement.colocated
    ranks: int = 0  # generator ranks under placement=separate; 0 under colocated
    # For `ladder plan` only: the MFU decoding reaches, an assumption (decode is memory-bound; far below training's)
    assumed_decode_mfu: float = 0.1


@dataclass
class RegistryConfig:
    """The local registry of checkpoints and eval scores (evals/store/registry.py)."""

    # sqlite:///<path> or a plain path; null: registry.db in the run root, the one a checkpoint
    # lives in (runs/ for runs/<name>/checkpoints/step_N), else trainer.run_root.
    url: Optional[str] = None
    busy_timeout_s: float = 60.0


@dataclass
class TrackerConfig:
    name: str = "wandb"
    mode: TrackerMode = TrackerMode.offline
    project: str = "ladder"
    entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LauncherConfig:
    """Where a job runs: `local` (this machine) or `slurm` (launch/cluster/slurm.py). The trainer never reads it."""

    name: str = MISSING
    # SLURM only: the #SBATCH resources; null leaves the cluster's default.
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: Optional[str] = None  # wall-clock limit per allocation, e.g. "24:00:00" or "2-00:00:00"
    cpus_per_task: Optional[int] = None  # per node (one launcher task per node)
    mem: Optional[str] = None  # per node, e.g. "0" for all of it
    constraint: Optional[str] = None
    exclusive: bool = False
    # USR1 this many seconds before the time limit: the trainer checkpoints and the job requeues.
    signal_before_s: int = 120
    requeue: bool = True
    max_parallel: Optional[int] = None  # at most this many jobs of a sweep's array at once
    rdzv_port: int = 29500  # torchrun rendezvous port on the first node (+ job id mod 1000)
    profile: str = "generic"  # the cluster network profile whose environment `env` holds
    # NCCL and network settings, exported by the sbatch script: keys start with NCCL_, FI_, OFI_NCCL_,
    # UCX_, GLOO_, TORCH_ or CUDA_ (training/validate.ENV_PREFIXES says why); never secrets
    env: dict[str, str] = field(default_factory=dict)
    python: Optional[str] = None  # the interpreter on the nodes; null: the one that launches


@dataclass
class BudgetConfig:
    """The team a job is charged to. Its allocation (GPU-hours per period) is data in the ledger,
    set with `ladder budget set` (launch/commands/budget_cmd.py), never by a job's own config."""

    name: str = MISSING
    team: str = "default"
    price_per_gpu_hour: float = 2.0  # for the cost in plans and reports


@dataclass
class SweepConfig:
    name: Optional[str] = None
    # Replicates: each point of the sweep runs with this many seeds (trainer.seed, seed+1, ...),
    # which change the initialisation of a model built from config, the data order and dropout.
    seeds: int = 1
    # The point a replicate belongs to, set by `ladder launch` (launch/cluster/sweep.py): the
    # runs of one point share it, so leaderboards and promotion average over their seeds.
    point: Optional[str] = None


@dataclass
class LedgerConfig:
    """Where launches, GPU-hours and waste are recorded (launch/accounting/ledger.py)."""

    # sqlite:///<path> (relative or, with a fourth slash, absolute) or a plain file path.
    url: str = "sqlite:///${trainer.run_root}/ladder.db"
    busy_timeout_s: float = 60.0  # how long a writer waits for another process's lock
    # how long a write to a server ledger that was reached retries through an outage, with backoff
    retry_s: float = 30.0


@dataclass
class OptimConfig:
    lr: Optional[float] = None  # null: the rung's lr
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    schedule: Schedule = Schedule.cosine
    warmup_ratio: float = 0.1  # warmup steps = ceil(warmup_ratio x trainer.max_steps)
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0


@dataclass
class TrainerConfig:
    run_name: Optional[str] = None  # default: <rung>-<recipe>-<data>
    run_root: str = "runs"
    seed: int = 0
    max_steps: int = 150
    # Tokens per optimizer step across all devices; null: the rung's. grad_accum is derived from it:
    # global_batch_tokens = micro_batch_tokens x grad_accum x data-parallel size.
    global_batch_tokens: Optional[int] = None
    grad_accum: Optional[int] = None  # null: derived; set, it must agree with the rule above
    save_every: int = 50
    keep_last: int = 3
    save_initial: Optional[bool] = (
        None  # also checkpoint the untrained model as step 0; null: the rung's
    )
    resume: str = "auto"  # auto | none | a checkpoint directory (or its URL)
    # On resume, a config that changes the math (optimizer, schedule, steps, data, recipe, seed,
    # batch, precision) against the checkpoint's is refused; true applies it from the next step
    # (the scheduler rebuilt at the current step) and records it in run_meta.json and the ledger.
    allow_config_change: bool = False
    # Resume a DeepSpeed state that this run did not save (another run's, or a copy whose run key is
    # gone). DeepSpeed's loader unpickles it, which runs any code its writer put there: only for a
    # checkpoint whose writer you trust. Nothing else in a checkpoint is ever unpickled (checkpoint.py).
    trust_checkpoint: bool = False
    # Also keep checkpoints at this fsspec URL (s3://bucket/ladder, gs://..., file:///mnt/ckpts):
    # run NAME's go to <url>/NAME/checkpoints/step_N, uploaded after the local save with COMPLETE
    # last, and resume=auto trusts only those (training/run/remote.py). null: local checkpoints only.
    checkpoint_url: Optional[str] = None
    eval_on_save: Optional[bool] = None  # evaluate each checkpoint as it is saved; null: the rung's
    # Evaluate saved checkpoints in a background process (evals.async_eval) so training never
    # waits for them; false evaluates in the training process, between steps.
    eval_async: bool = True
    # At the end of the run, leave the checkpoints not yet evaluated to eval jobs of their own
    # (<run_dir>/pending_evals.json, run by `ladder eval --pending RUN_DIR`) instead of holding the
    # job's devices while they finish. `ladder launch` sets it: its launchers run those jobs and
    # record them in the ledger as kind eval. false (`ladder train`): wait for them here.
    eval_handoff: bool = False
    log_every: int = 10  # print a progress line every N steps (metrics.jsonl gets every step)
    # Stop a run whose loss is NaN or inf instead of training on.
    stop_on_nonfinite: bool = True
    # A step (or a collective) that takes longer is reported with every thread's stack and the
    # run exits, instead of waiting forever; 0 disables the watchdog.
    step_timeout_s: float = 1800.0
    # The loss runs the LM head and cross-entropy over this many tokens at a time, each chunk
    # recomputed in backward, so full-vocabulary fp32 logits never exist (training/model/lm_loss.py);
    # 0: the plain head, full logits.
    loss_chunk_tokens: int = 1024
    # torch.compile each decoder layer (as torchtitan does); the first steps pay the compile time.
    compile: bool = False
    # model.lora only: also write the merged weights (base + adapter, plain Hugging Face) into
    # <checkpoint>/merged/, loadable by transformers and vLLM without peft. null: final, or none
    # with model.quantize=nf4 (merging into a 4-bit base would lose the adapter's precision)
    save_merged: Optional[SaveMerged] = None
    # At the end of the run, also write the uniform average of the weights of the last K scheduled
    # checkpoints (every save_every steps and the last step; not step 0, nor a preemption's extra
    # save, so a resumed run averages what an uninterrupted one would) as
    # checkpoints/avg_lastK_step_N: evaluated and registered like any other checkpoint, its inputs
    # in its lineage (training/run/average.py). 0: off; else 2 or more, at most the run's
    # scheduled saves and trainer.keep_last (training/config/checkpoint_schedule.py).
    average_last: int = 0


@dataclass
class LadderConfig:
    model: ModelConfig = MISSING
    rung: RungConfig = MISSING
    recipe: RecipeConfig = MISSING
    data: DataConfig = MISSING
    eval: EvalConfig = MISSING
    tracker: TrackerConfig = MISSING
    launcher: LauncherConfig = MISSING
    budget: BudgetConfig = MISSING
    sweep: SweepConfig = field(default_factory=SweepConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)


GROUP_SCHEMAS: dict[str, Any] = {
    "model": ModelConfig,
    "rung": RungConfig,
    "recipe": RecipeConfig,
    "data": DataConfig,
    "eval": EvalConfig,
    "tracker": TrackerConfig,
    "launcher": LauncherConfig,
    "budget": BudgetConfig,
    "sweep": SweepConfig,
    "generator": GeneratorConfig,
}
