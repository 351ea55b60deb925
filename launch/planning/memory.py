"""Memory per GPU of a training job, by engine: the arithmetic behind `ladder plan`.

    ladder plan rung=70b                  # shows these numbers for the rung's engine and the others
    from launch.planning.memory import estimate, ModelShape

Mixed precision is bf16 compute with fp32 master weights and Adam (m and v in fp32). Bytes per
parameter, with P parameters, N GPUs in the data-parallel (sharding) group and `largest` the
parameters of the largest single module (the embedding or the LM head for Llama):

  engine            params                 grads                  optimizer        on the GPU
  single, ddp       4P fp32 (the master;   4P fp32                8P (m, v)        16P
                    autocast makes bf16)
  fsdp2             4P/N fp32 shard        4P/N fp32 shard        8P/N             16P/N + 4 largest
                    + 2 largest bf16       + 2 largest bf16
                    (gathered module)      (before reduce-scatter)
  deepspeed_zero2   2P bf16, replicated    2P/N bf16 + 4P/N fp32  12P/N (fp32      2P + 18P/N
                                           partitions             master, m, v)
  deepspeed_zero3   2P/N bf16 partition    4P/N fp32 partition    12P/N            18P/N + 4 largest
                    + 2 largest gathered   + 2 largest bf16
  zero3 + offload   2 largest gathered     2 largest              0 (CPU)          4 largest

The two DeepSpeed rows are DeepSpeed's own estimators (estimate_zero2/3_model_states_mem_needs,
checked in tests/test_plan.py); with offload the CPU of each node holds 18P/nodes x 1.5, as
DeepSpeed estimates it (the 1.5 is its allowance for buffers).

Activations (there is no tensor or sequence parallelism, so they are not sharded), for one
micro-batch of m tokens, L layers, hidden h, KV width h_kv, MLP width i, activation bytes a
(2 in bf16, else 4). A Llama layer saves about 7h + 3h_kv + 4i values per token for backward
(two norm inputs and outputs, q, k, v, rotated q and k, the attention output, gate, up, silu(gate)
and its product with up); FlashAttention and SDPA keep no s x s matrix. With activation
checkpointing only each layer's input (h) is kept, plus one layer recomputed during backward.
The logits add m x vocab x (a + 8): the bf16 logits, their fp32 copy for the loss and its grad.

LoRA (model.lora.enabled; training/model/lora.py) replaces the model states: the frozen base is
stored once in the training dtype (2P in bf16, 4P without) or, with model.quantize=nf4, its decoder
linear layers in 4-bit NF4 with double-quantized block constants (NF4_BYTES per parameter) and the
rest (embeddings, LM head, norms) in bf16; it has no gradients or optimizer state. The A adapter
parameters are trained parameters like any, counted by the table above with P = A and no gathered
module: 4A + 4A + 8A under single and ddp, 16A/N under fsdp2, 2A + 18A/N under ZeRO-2, 18A/N under
ZeRO-3 (on the CPU with offload). fsdp2 and ZeRO-3 shard the frozen base too (base/N, plus 2 largest
for the module gathered at a time; with offload the base's partitions sit in the nodes' CPU memory
with DeepSpeed's 1.5 allowance); the other engines hold it whole on each GPU. The reference is the
policy with its adapters disabled: 0 bytes.

RL (recipe=grpo) adds two kinds, planned in launch/planning/plan_rl.py: the KL reference's weights and the
rollout generator's memory (a KV cache, or vLLM's share of the GPU). They are zero otherwise. The
reference (reference_bytes) is frozen and run forward only, so it is kept in the training dtype, with
no gradients or optimizer state (training/recipes/reference.py): 2P in bf16 (4P without), sharded like the
policy under fsdp2 and deepspeed_zero3 (2P/N; never offloaded), whole under single, ddp and zero2.
Its gathered layer is transient and freed before the step's own gathers, so it is not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from training.model.shape import ModelShape

GiB = 2**30
ZERO_CPU_BUFFER_FACTOR = 1.5  # DeepSpeed's additional_buffer_factor for CPU memory with offload
ENGINES = ("single", "ddp", "fsdp2", "deepspeed_zero2", "deepspeed_zero3")


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU by kind, and bytes of host memory per node (offload only)."""

    params: float
    grads: float
    optimizer: float
    activations: float
    cpu_per_node: float = 0.0
    reference: float = 0.0  # RL with recipe.kl_beta > 0: the KL reference's weights
    generation: float = (
        0.0  # RL: the generation KV cache (generator=hf) or vLLM's share (generator=vllm)
    )

    @property
    def total(self) -> float:
        # RL's generation memory is counted beside training's activations, as if both were held at
        # once: an upper bound (the KV cache is freed before the step's forward passes)
        return (
            self.params
            + self.grads
            + self.optimizer
            + self.activations
            + self.reference
            + self.generation
        )

    def gib(self) -> dict[str, float]:
        d = {k: v / GiB for k, v in asdict(self).items()}
        d["total"] = self.total / GiB
        return d


def model_states(
    engine: str, params: int, largest: int, gpus: int, nodes: int, offload: bool = False
) -> tuple[float, float, float, float]:
    """(params, grads, optimizer) bytes per GPU and host bytes per node, as in the table above."""
    P, N, big = float(params), gpus, float(largest)
    if offload and engine != "deepspeed_zero3":
        raise ValueError("offload is modelled for deepspeed_zero3 only")
    if engine in ("single", "ddp"):
        return 4 * P, 4 * P, 8 * P, 0.0
    if engine == "fsdp2":
        return 4 * P / N + 2 * big, 4 * P / N + 2 * big, 8 * P / N, 0.0
    if engine == "deepspeed_zero2":
        return 2 * P, 6 * P / N, 12 * P / N, 0.0
    if engine == "deepspeed_zero3":
        if offload:
            return 2 * big, 2 * big, 0.0, 18 * P / nodes * ZERO_CPU_BUFFER_FACTOR
        return 2 * P / N + 2 * big, 4 * P / N + 2 * big, 12 * P / N, 0.0
    raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")


# bitsandbytes NF4 with double quantization: 4 bits per weight, one 8-bit absmax per block of 64
# weights, and one fp32 constant per 256 of those blocks (QLoRA, Dettmers et al. 2023)
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)


def lora_states(
    shape: ModelShape,
    adapter: int,
    bf16: bool,
    quantize: str = "none",
    engine: str = "single",
    gpus: int = 1,
    nodes: int = 1,
    offload: bool = False,
) -> tuple[float, float, float, float]:
    """(params, grads, optimizer) bytes per GPU and host bytes per node of a LoRA run with
    `adapter` trainable parameters on `engine` (see the module doc)."""
    if quantize == "nf4":  # the decoder's linear layers (attention and MLP) are quantized
        h, q = shape.hidden, shape.heads * (shape.hidden // shape.heads)
        linear = shape.layers * (2 * h * q + 2 * h * shape.kv_hidden + 3 * h * shape.intermediate)
        base = NF4_BYTES * linear + 2 * (shape.params - linear)
    else:
        base = (2 if bf16 else 4) * float(shape.params)
    p, g, o, cpu = model_states(engine, adapter, 0, gpus, nodes, offload)
    if engine in ("fsdp2", "deepspeed_zero3"):  # the frozen base is sharded like the policy
        if offload:
            cpu += base / nodes * ZERO_CPU_BUFFER_FACTOR
            base = 0.0
        else:
            base = base / gpus
        base += 2 * shape.largest_module_params  # the module gathered for its forward
    return base + p, g, o, cpu


def reference_bytes(engine: str, params: int, gpus: int, bf16: bool) -> float:
    """Bytes per GPU of a frozen reference model (see the module doc)."""
    whole = (2 if bf16 else 4) * float(params)
    return whole / gpus if engine in ("fsdp2", "deepspeed_zero3") else whole


def activation_bytes(
    shape: ModelShape, micro_batch_tokens: int, bf16: bool, checkpointing: bool
) -> float:
    a = 2 if bf16 else 4
    m = micro_batch_tokens
    per_layer = a * m * (7 * shape.hidden + 3 * shape.kv_hidden + 4 * shape.intermediate)
    if checkpointing:
        layers = shape.layers * a * m * shape.hidden + per_layer
    else:
        layers = shape.layers * per_layer
    logits = m * shape.vocab * (a + 8)
    return float(layers + logits)


def estimate(
    shape: ModelShape,
    engine: str,
    gpus: int,
    nodes: int,
    micro_batch_tokens: int,
    bf16: bool,
    checkpointing: bool,
    offload: bool = False,
) -> Memory:
    p, g, o, cpu = model_states(
        engine, shape.params, shape.largest_module_params, gpus, nodes, offload
    )
    return Memory(
        params=p,
        grads=g,
        optimizer=o,
        cpu_per_node=cpu,
        activations=activation_bytes(shape, micro_batch_tokens, bf16, checkpointing),
    )
