"""The compute plan of a job, before anything is launched: `ladder plan [overrides] [--json]`.

    ladder plan rung=405b                     # parameters, FLOPs, memory per GPU, fit, GPU-hours, cost
    ladder plan rung=405b rung.nodes=1        # does not fit: says what to change
    ladder plan rung=8b trainer.max_steps=2000 --json

Parameters are counted from the model's shape (training/model/shape.py); FLOPs from training/model/flops.py (the
one definition MFU also uses) for trainer.max_steps x the global batch, with attention counted
at the document lengths `ladder data inspect` measured for this data (launch/planning/doc_lengths.py), else as
if every document were data.max_seq_len tokens long (an upper bound for packed data); memory
from launch/planning/memory.py. Time is FLOPs / (GPUs x peak x MFU), where MFU is the median measured
on earlier runs of the same rung in the ledger, else by bench/gpu.py at the rung's shape and
settings (`ladder bench import`; launch/planning/rates.py), else rung.assumed_mfu; on a device with no known
peak (a CPU) it is tokens / (devices x tokens/s), measured or rung.assumed_tokens_per_s. DPO's
reference forward passes (once over the data set, or in every step with
recipe.precompute_reference=false) are added to FLOPs and time, and a live reference's weights to
memory (launch/planning/plan_dpo.py); GRPO's generation is planned in launch/planning/plan_rl.py.
A job's fixed cost (start-up, saves, in-process evals, wrap-up) is added once to the time and
GPU-hours: the median measured on completed jobs of the rung, else rung.assumed_overhead_s
(launch/planning/overhead.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from omegaconf import DictConfig

from launch.console import make_console, num, si
from launch.planning.doc_lengths import planning_length
from launch.planning.memory import ENGINES, GiB, Memory, estimate, lora_states
from launch.planning.overhead import Overhead, duration, planning_overhead
from launch.planning.plan_dpo import ReferencePlan, reference_memory, reference_plan
from launch.planning.plan_dpo import render_row as render_reference_row
from launch.planning.plan_rl import RLPlan, is_rl, render_rows, rl_memory, rl_plan, rl_seconds
from launch.planning.rates import planning_rate
from launch.planning.rl_split import RLSplit, render_split, rl_split
from training.common.errors import ConfigError
from training.config.validate import generator_ranks, global_batch_tokens, validate
from training.model import lora
from training.model.flops import train_flops
from training.model.shape import ModelShape, model_shape

# Of a GPU's memory, the CUDA context, NCCL buffers and allocator fragmentation take about a tenth.
USABLE_FRACTION = 0.9
MAX_NODES = 1024  # how far the planner looks for a node count that fits


@dataclass
class Plan:
    rung: str
    model: str
    gpu_type: str
    engine: str
    nodes: int
    gpus_per_node: int
    gpus: int
    offload: bool
    activation_checkpointing: bool
    micro_batch_tokens: int
    grad_accum: int
    global_batch_tokens: int
    steps: int
    tokens: int
    doc_tokens: int
    params: int
    matmul_params: int
    flops: float
    memory: Memory
    gpu_memory_gb: float
    cpu_memory_gb: float
    fits: bool
    problem: str | None
    fixes: list[tuple[str, float]]  # (overrides, memory per GPU in GiB with them)
    by_engine: dict[str, Memory | None]
    rate: float  # MFU, or tokens/s per device where the peak is unknown
    rate_kind: str  # "mfu" | "tokens_per_s"
    rate_source: str
    wall_clock_h: float  # the steps and the overhead below
    gpu_hours: float
    price_per_gpu_hour: float
    overhead: Overhead  # start-up and wrap-up, once per job, in wall_clock_h and gpu_hours
    doc_source: str = "data.max_seq_len"  # where doc_tokens (the attention length) came from
    rl: RLPlan | None = (
        None  # recipe=grpo: generation and training on rollouts (launch/planning/plan_rl.py)
    )
    # DPO's reference forward passes, counted in flops and the time (launch/planning/plan_dpo.py)
    reference: ReferencePlan | None = None
    # recipe=grpo: GPUs for generation and learning, idle time, a split (launch/planning/rl_split.py)
    rl_split: RLSplit | None = None
    # model.lora: the adapters' trainable parameters, and this job's memory with full fine-tuning
    lora_params: int = 0
    # training FLOPs per token, in words: 6 x N, or with LoRA 4 x the frozen + 6 x the trained
    flops_rule: str = ""
    lora_base: str = ""  # how the frozen base is stored: bf16, fp32 or nf4
    full_memory: Memory | None = None
    cost: float = field(init=False)

    def __post_init__(self):
        self.cost = self.gpu_hours * self.price_per_gpu_hour

    @property
    def usable_gb(self) -> float:
        return self.gpu_memory_gb * USABLE_FRACTION

    def to_json(self) -> dict:
        d = asdict(self)
        d["memory_breakdown_gb"] = self.memory.gib()
        d["memory_per_gpu_gb"] = self.memory.total / GiB
        d["cpu_memory_per_node_gb"] = self.memory.cpu_per_node / GiB
        d["usable_gpu_memory_gb"] = self.usable_gb
        d["by_engine_gb"] = {
            k: (None if m is None else m.total / GiB) for k, m in self.by_engine.items()
        }
        d["fixes"] = [{"overrides": o, "memory_per_gpu_gb": g} for o, g in self.fixes]
        if self.full_memory is not None:
            d["full_finetune_memory_per_gpu_gb"] = self.full_memory.total / GiB
        del d["memory"], d["by_engine"], d["full_memory"]
        return d


def memory_for(shape: ModelShape, cfg: DictConfig, full: bool = False, **changes) -> Memory:
    """Memory per GPU for the config's rung with some of its fields changed; an RL recipe adds its
    reference and generator (launch/planning/plan_rl.py). With model.lora the model states are the
    frozen base and the adapters (memory.lora_states) and there is no reference copy; full=True
    plans the same job as full fine-tuning, for the comparison `ladder plan` shows."""
    m = _memory_for(shape, cfg, **changes)
    if full or not lora.enabled(cfg):
        return m
    r = cfg.rung
    nodes = changes.get("nodes", r.nodes)
    p, g, o, cpu = lora_states(
        shape,
        lora.adapter_params(shape, cfg.model.lora),
        r.bf16,
        cfg.model.quantize.value,
        changes.get("engine", r.engine.value),
        nodes * r.gpus_per_node,
        nodes,
        changes.get("offload", r.offload),
    )
    return replace(m, params=p, grads=g, optimizer=o, cpu_per_node=cpu, reference=0.0)


def _memory_for(shape: ModelShape, cfg: DictConfig, **changes) -> Memory:
    r = cfg.rung
    v = {
        "engine": r.engine.value,
        "nodes": r.nodes,
        "micro_batch_tokens": r.micro_batch_tokens,
        "activation_checkpointing": r.activation_checkpointing,
        "offload": r.offload,
        **changes,
    }
    gpus = v["nodes"] * r.gpus_per_node
    m = estimate(
        shape,
        v["engine"],
        gpus,
        v["nodes"],
        v["micro_batch_tokens"],
        r.bf16,
        v["activation_checkpointing"],
        v["offload"],
    )
    if is_rl(cfg):
        return replace(m, **rl_memory(cfg, shape, gpus, v["engine"]))
    # DPO with precompute_reference=false: the reference's weights beside the policy's
    return replace(m, reference=reference_memory(cfg, shape, gpus, v["engine"]))


def fits(m: Memory, r) -> bool:
    return (
        m.total <= r.gpu_memory_gb * USABLE_FRACTION * GiB
        and m.cpu_per_node <= r.cpu_memory_gb * GiB
    )


def find_fixes(cfg: DictConfig, shape: ModelShape) -> list[tuple[str, float]]:
    """Changes that make the job fit: more nodes, offload, activation checkpointing, a smaller
    micro-batch, a sharded engine (with the nodes it needs), in that order. Every one offered is
    verified: applied to the config, it passes validation and fits (a fix that cannot be applied,
    such as offload with ZeRO-2, or more nodes for an engine that replicates the model, is never
    offered)."""
    r = cfg.rung

    rl = is_rl(cfg)

    def batch_ok(nodes: int, micro: int | None = None) -> bool:
        if rl:  # the RL batch is in answers: whole prompts per learner rank (training/config/validate.py)
            return (
                cfg.recipe.prompts_per_step % (nodes * r.gpus_per_node - generator_ranks(cfg)) == 0
            )
        glob, _ = global_batch_tokens(cfg)
        return glob % ((micro or r.micro_batch_tokens) * nodes * r.gpus_per_node) == 0

    def more_nodes(**changes) -> str | None:
        """The override string for the fewest nodes (from today's) at which `changes` fit."""
        for n in range(r.nodes + (0 if changes else 1), MAX_NODES + 1):
            if not fits(memory_for(shape, cfg, nodes=n, **changes), r):
                continue
            # The smallest count from n up that also keeps the global batch whole, if one is near.
            n = next((k for k in range(n, 2 * n + 1) if batch_ok(k)), n)
            parts = [f"rung.{k}={str(v).lower()}" for k, v in changes.items()]
            parts += [f"rung.nodes={n}"] if n != r.nodes else []
            if not batch_ok(n) and rl:
                dp = n * r.gpus_per_node - generator_ranks(cfg)  # learners: generators do not train
                parts.append(
                    f"recipe.prompts_per_step={-(-cfg.recipe.prompts_per_step // dp) * dp}"
                )
            elif not batch_ok(n):
                glob, _ = global_batch_tokens(cfg)
                dp_tokens = r.micro_batch_tokens * n * r.gpus_per_node
                parts.append(f"trainer.global_batch_tokens={-(-glob // dp_tokens) * dp_tokens}")
            return " ".join(parts)
        return None

    candidates: list[str | None] = []
    sharded = r.engine.value in ("fsdp2", "deepspeed_zero3")
    if sharded:  # sharded state shrinks with more GPUs
        candidates.append(more_nodes())
    if r.engine.value == "deepspeed_zero3" and not r.offload:
        candidates.append(more_nodes(offload=True))
    if not r.activation_checkpointing:
        candidates.append("rung.activation_checkpointing=true")
    micro = r.micro_batch_tokens // 2
    while micro >= cfg.data.max_seq_len and micro > 0:
        if fits(memory_for(shape, cfg, micro_batch_tokens=micro), r) and batch_ok(r.nodes, micro):
            candidates.append(f"rung.micro_batch_tokens={micro}")
            break
        micro //= 2
    if not sharded:  # a replicated engine: shard the state, on more nodes where it needs them
        for engine in ("deepspeed_zero3", "fsdp2"):
            candidates.append(more_nodes(engine=engine))
        candidates.append(more_nodes(engine="deepspeed_zero3", offload=True))
    fixes, seen = [], set()
    for overrides in candidates:
        if overrides and overrides not in seen and (fix := verified_fix(cfg, shape, overrides)):
            seen.add(overrides)
            fixes.append(fix)
    return fixes


def verified_fix(cfg: DictConfig, shape: ModelShape, overrides: str) -> tuple[str, float] | None:
    """(overrides, GiB per GPU) if the config with these overrides validates and fits, else None."""
    from omegaconf import OmegaConf

    try:
        fixed = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides.split()))
        validate(fixed)
    except (ConfigError, ValueError):
        return None
    m = memory_for(shape, fixed)
    return (overrides, m.total / GiB) if fits(m, fixed.rung) else None


def make_plan(cfg: DictConfig, ledger=None) -> Plan:
    layout = validate(cfg)  # the batch rule and every other cross-field rule
    r = cfg.rung
    shape = model_shape(cfg)
    tokens = cfg.trainer.max_steps * layout.global_batch_tokens
    doc, doc_source = planning_length(
        cfg
    )  # measured by `ladder data inspect`, else data.max_seq_len
    n_matmul = shape.matmul_params
    # with LoRA: the adapters' products too, and no weight gradient for the frozen base (flops.py)
    mm = lora.matmuls(shape, cfg)
    flops = train_flops(mm.policy, shape.layers, shape.hidden, [doc], mm.frozen) * tokens / doc
    reference = reference_plan(cfg, tokens, mm.base, shape.layers, shape.hidden, doc)
    if reference is not None:
        flops += reference.flops
    memory = memory_for(shape, cfg)
    ok = fits(memory, r)
    problem = None
    if not ok:
        over = []
        if memory.total > r.gpu_memory_gb * USABLE_FRACTION * GiB:
            over.append(
                f"{memory.total / GiB:,.1f} GiB per GPU, but each {r.gpu_type} has "
                f"{r.gpu_memory_gb * USABLE_FRACTION:,.1f} usable ({USABLE_FRACTION:.0%} of {r.gpu_memory_gb:g})"
            )
        if memory.cpu_per_node > r.cpu_memory_gb * GiB:
            over.append(
                f"{memory.cpu_per_node / GiB:,.1f} GiB of host memory per node for offload, "
                f"but a node has {r.cpu_memory_gb:g} (rung.cpu_memory_gb)"
            )
        problem = "needs " + "; and ".join(over)
    by_engine = {}
    for engine in lora.LORA_ENGINES if lora.enabled(cfg) else ENGINES:
        if engine == "single" and r.nodes * r.gpus_per_node > 1:
            by_engine[engine] = None  # one process cannot use several GPUs
        else:
            by_engine[engine] = memory_for(shape, cfg, engine=engine, offload=False)
    if r.engine.value == "deepspeed_zero3":
        by_engine["deepspeed_zero3 + offload"] = memory_for(shape, cfg, offload=True)
    rate, kind, source = planning_rate(cfg, ledger)
    gpus = r.nodes * r.gpus_per_node
    if kind == "mfu":
        seconds = flops / (gpus * r.peak_flops_per_device * rate)
    else:  # a reference token is a forward pass only: a third of a trained token's time
        seconds = (tokens + (reference.tokens / 3 if reference else 0)) / (gpus * rate)
    rl = split = None
    if is_rl(
        cfg
    ):  # GRPO trains on rollouts it generates: both are planned (launch/planning/plan_rl.py)
        measured = (
            doc if doc < cfg.data.max_seq_len else None
        )  # planning_length fell back to the bound
        rl = rl_plan(cfg, layout, mm, shape.layers, shape.hidden, measured)
        tokens, flops = rl.train_tokens, rl.train_flops + rl.gen_flops
        seconds = rl_seconds(rl, gpus, r.peak_flops_per_device, rate, kind)
        split = rl_split(cfg, rl, rate, kind, ledger)
    overhead = planning_overhead(cfg, ledger, gpus)
    seconds += overhead.seconds
    return Plan(
        rung=r.name,
        model=cfg.model.name,
        gpu_type=r.gpu_type,
        engine=r.engine.value,
        nodes=r.nodes,
        gpus_per_node=r.gpus_per_node,
        gpus=gpus,
        offload=r.offload,
        activation_checkpointing=r.activation_checkpointing,
        micro_batch_tokens=layout.micro_batch_tokens,
        grad_accum=layout.grad_accum,
        global_batch_tokens=layout.global_batch_tokens,
        steps=cfg.trainer.max_steps,
        tokens=tokens,
        doc_tokens=round(doc),
        doc_source=doc_source,
        params=shape.params,
        matmul_params=n_matmul,
        flops=flops,
        memory=memory,
        gpu_memory_gb=r.gpu_memory_gb,
        cpu_memory_gb=r.cpu_memory_gb,
        fits=ok,
        problem=problem,
        fixes=[] if ok else find_fixes(cfg, shape),
        by_engine=by_engine,
        rate=rate,
        rate_kind=kind,
        rate_source=source,
        wall_clock_h=seconds / 3600,
        gpu_hours=gpus * seconds / 3600,
        price_per_gpu_hour=cfg.budget.price_per_gpu_hour,
        overhead=overhead,
        rl=rl,
        reference=reference,
        rl_split=split,
        lora_params=lora.adapter_params(shape, cfg.model.lora) if lora.enabled(cfg) else 0,
        flops_rule=(
            f"(4 x {si(mm.frozen)} frozen + 6 x {si(mm.policy - mm.frozen)} trained) matmul params"
            if mm.frozen
            else f"6 x {si(mm.policy)} matmul params"
        ),
        full_memory=memory_for(shape, cfg, full=True) if lora.enabled(cfg) else None,
        lora_base=(
            "4-bit nf4 (embeddings, LM head and norms in bf16)"
            if cfg.model.quantize.value == "nf4"
            else ("bf16" if r.bf16 else "fp32")
        ),
    )


def fix_message(plan: Plan) -> str:
    if plan.fits:
        return "fits"
    if not plan.fixes:
        return (
            f"does not fit: {plan.problem}. No change of nodes, engine, offload, activation checkpointing "
            f"or micro-batch up to {MAX_NODES} nodes makes it fit; it needs a smaller model or devices with "
            "more memory"
        )
    options = "\n".join(f"  {o}   ({g:,.1f} GiB per GPU)" for o, g in plan.fixes)
    return f"does not fit: {plan.problem}. Any one of these fixes it (each checked: it validates and fits):\n{options}"


def render(plan: Plan, console=None) -> None:
    from rich.table import Table

    console = console or make_console()
    p = plan
    unit = "device" if p.gpu_type == "cpu" else "GPU"
    console.print(
        f"[bold]Plan[/bold]: rung {p.rung} · model {p.model} · {p.nodes} node(s) x {p.gpus_per_node} "
        f"{p.gpu_type} = {p.gpus} {unit}(s) · {p.engine}{' + offload' if p.offload else ''}"
        f"{' · activation checkpointing' if p.activation_checkpointing else ''}"
    )

    work = Table(title="Model and work", title_justify="left", show_header=False)
    work.add_column(no_wrap=True)
    work.add_column(justify="right", no_wrap=True)
    work.add_column(style="dim")
    work.add_row("parameters", si(p.params), f"{p.params:,} (from the model's shape)")
    work.add_row(
        "global batch",
        f"{p.global_batch_tokens:,} tokens",
        f"micro-batch {p.micro_batch_tokens:,} x accum {p.grad_accum} x dp {p.gpus}"
        + (
            ": the RL step's capacity, an upper bound; its batch is answers (below)" if p.rl else ""
        ),
    )
    work.add_row(
        "planned tokens",
        si(p.tokens),
        f"{p.steps:,} steps (trainer.max_steps) x "
        + ("rollout tokens per step" if p.rl else "global batch"),
    )
    work.add_row(
        "training FLOPs",
        f"{p.flops:.3e}",
        f"{p.flops_rule or '6 x ' + si(p.matmul_params) + ' matmul params'} x tokens + attention "
        f"at {p.doc_tokens:,}-token documents"
        + (", with the reference FLOPs below" if p.reference else ""),
    )
    if p.reference is not None:
        render_reference_row(work, p.reference)
    work.add_row("document length", f"{p.doc_tokens:,} tokens", p.doc_source)
    if p.rl is not None:
        render_rows(work, p.rl)
    if p.rl_split is not None:
        render_split(work, p.rl_split)
    console.print(work)

    mem = Table(
        title=f"Memory per {unit}, GiB (usable: {p.usable_gb:,.1f} of {p.gpu_memory_gb:g} per {p.gpu_type})",
        title_justify="left",
    )
    kinds = ["params", "grads", "optimizer", "activations"]
    if (
        p.rl is not None
    ):  # what RL adds (launch/planning/plan_rl.py): the KL reference, the generator's memory
        kinds += ["reference", "generation"]
    elif p.memory.reference:  # DPO's live reference (launch/planning/plan_dpo.py)
        kinds += ["reference"]
    for col in ("engine", *kinds, "total", "host/node", "fits"):
        mem.add_column(col, justify="left" if col == "engine" else "right", no_wrap=True)
    for name, m in p.by_engine.items():
        chosen = name == p.engine + (" + offload" if p.offload else "")
        if m is None:
            mem.add_row(name, *["-"] * (len(kinds) + 2), "n/a (one process)")
            continue
        g = m.gib()
        ok = g["total"] <= p.usable_gb and g["cpu_per_node"] <= p.cpu_memory_gb
        label = f"[bold]{name}[/bold] <- this job" if chosen else name
        mem.add_row(
            label,
            *(num(g[k]) for k in (*kinds, "total")),
            f"{g['cpu_per_node']:,.0f}" if g["cpu_per_node"] else "-",
            "[green]yes[/green]" if ok else "[red]no[/red]",
        )
    console.print(mem)
    if p.rl is not None:
        gen = (
            "vLLM's share, generator.gpu_memory_utilization of the GPU"
            if p.rl.generator == "vllm"
            else f"KV cache of {p.rl.sequences_per_rank:,} sequences x {p.rl.prompt_tokens + p.rl.new_tokens:,} tokens"
        )
        ref = (
            "weights in the training dtype, sharded under fsdp2 and deepspeed_zero3, whole otherwise "
            "(recipe.kl_beta > 0)"
            if p.rl.kl_reference
            else "none (recipe.kl_beta=0)"
        )
        console.print(
            f"[dim]RL: reference = {ref}; generation = {gen}; counted beside the activations "
            "(an upper bound)[/dim]"
        )

    if p.rl is None and p.memory.reference:
        console.print(
            "[dim]DPO: reference = the frozen reference's weights in the training dtype beside the "
            "policy, sharded under fsdp2 and deepspeed_zero3, whole otherwise "
            "(recipe.precompute_reference=false)[/dim]"
        )
    if p.full_memory is not None:
        full, saved = p.full_memory.total / GiB, (p.full_memory.total - p.memory.total) / GiB
        console.print(
            f"[dim]LoRA: {p.lora_params:,} adapter parameters in fp32 with their gradients and Adam "
            f"states, the frozen base in {p.lora_base}, no reference copy (the base is the policy "
            f"with adapters disabled): {num(p.memory.total / GiB)} GiB per {unit} against "
            f"{num(full)} for full fine-tuning on {p.engine}, {num(saved)} GiB saved[/dim]"
        )
    if p.fits:
        console.print(
            f"[green bold]FITS[/green bold]: {num(p.memory.total / GiB)} of {p.usable_gb:,.1f} GiB per {unit}"
        )
    else:
        console.print(
            f"[red bold]DOES NOT FIT[/red bold]: {fix_message(p)[len('does not fit: ') :]}"
        )

    cost = Table(title="Time and cost", title_justify="left", show_header=False)
    cost.add_column(no_wrap=True)
    cost.add_column(justify="right", no_wrap=True)
    cost.add_column(style="dim")
    rate = f"{p.rate:.1%}" if p.rate_kind == "mfu" else f"{p.rate:,.0f} tokens/s per device"
    cost.add_row("MFU" if p.rate_kind == "mfu" else "throughput", rate, p.rate_source)
    cost.add_row(
        "start-up and wrap-up", duration(p.overhead.seconds), f"once per job: {p.overhead.source}"
    )
    steps_s = p.wall_clock_h * 3600 - p.overhead.seconds
    cost.add_row(
        "wall-clock",
        f"{p.wall_clock_h:,.2f} h",
        f"{p.wall_clock_h / 24:,.2f} days: steps {duration(steps_s)} + start-up and wrap-up",
    )
    cost.add_row(f"{unit}-hours", num(p.gpu_hours), f"{p.gpus} {unit}(s) x wall-clock")
    cost.add_row(
        "cost",
        f"${num(p.cost, 0)}",
        f"at ${p.price_per_gpu_hour:g} per GPU-hour (budget.price_per_gpu_hour)",
    )
    console.print(cost)


def cmd_plan(args) -> int:
    from rich.console import Console

    from launch.accounting.ledger import Ledger
    from training.config.compose import compose

    # A plan takes about a second (no torch: shapes by arithmetic, training/model/shape.py), more
    # where the ledger is a server: say what is going on (a spinner on stderr when it is a
    # terminal; nothing in a pipe or a log).
    with Console(stderr=True).status("composing and validating the config") as status:
        cfg = compose(args.overrides)
        status.update("reading measured MFU of earlier runs from the ledger")
        ledger = Ledger.existing(cfg)
        status.update(f"planning {cfg.model.name}: memory, FLOPs and GPU-hours")
        plan = make_plan(cfg, ledger)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        render(plan)
    return 0 if plan.fits else 1
