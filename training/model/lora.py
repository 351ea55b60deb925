"""LoRA and QLoRA through peft: the frozen base, its adapters, and the base with them switched off.

    ladder train rung=tiny model.lora.enabled=true model.lora.r=8
    model = build_policy(cfg, tokenizer, device, seed, resume_from)   # a PeftModel when LoRA is on
    ref = AdapterDisabled(model)        # DPO's reference, GRPO's KL: the same weights, adapters off
    adapter_params(shape, cfg.model.lora)   # the planner's count, equal to peft's

The base is built or loaded as for full fine-tuning (training/model/modeling.py), frozen, and
wrapped by `peft.get_peft_model`; the base is stored in bf16 under rung.bf16 (fp32 otherwise), the
adapters in fp32 whatever the base's dtype (peft's autocast_adapter_dtype). A checkpoint holds the
adapter in peft's own format (adapter_model.safetensors, adapter_config.json:
`PeftModel.from_pretrained` and vLLM's LoRA loader read it), `ladder_base.json` naming the base it
adapts (its identity, so the content hash covers it), and with trainer.save_merged the merged
Hugging Face weights in merged/. model.quantize=nf4 (QLoRA) loads the base in 4-bit with
bitsandbytes, on CUDA only; bitsandbytes is imported only there.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from training.common.errors import CheckpointError, ConfigError

log = logging.getLogger("ladder.lora")
BASE_FILE = "ladder_base.json"  # in an adapter checkpoint: which base the adapter belongs to
ADAPTER_CONFIG = "adapter_config.json"
MERGED_DIR = "merged"  # trainer.save_merged: the merged Hugging Face weights, inside the checkpoint
# Leaf module names of the Llama transformers builds (modeling.py): what a target may name when
# the model is built from config. A loaded model is checked against its own modules in apply_lora.
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLAMA_MODULES = (*LLAMA_LINEAR, "lm_head", "embed_tokens")
# Every engine trains LoRA. Under fsdp2 and deepspeed_zero2/3 the checkpoint's adapter is gathered
# onto rank 0 and the merged weights are streamed (training/engine/lora_sharded.py).
LORA_ENGINES = ("single", "ddp", "fsdp2", "deepspeed_zero2", "deepspeed_zero3")
# QLoRA's 4-bit base on the engines that hold it whole on each rank (see nf4_problems)
NF4_ENGINES = ("single", "ddp")


def enabled(cfg: DictConfig) -> bool:
    """model.lora.enabled; False for a config saved before the key existed."""
    lora = OmegaConf.select(cfg, "model.lora")
    return bool(lora is not None and lora.get("enabled", False))


def adapter_record(cfg: DictConfig) -> dict | None:
    """What marks a run as an adapter run wherever it is recorded (the ledger's jobs.adapter, the
    W&B config and checkpoint artifacts): its method, r, alpha, targets and the base's storage;
    None for full fine-tuning. Each key is read from the config, never filled in."""
    if not enabled(cfg):
        return None
    lc = cfg.model.lora
    quantize = cfg.model.get("quantize", "none")
    return {
        "method": "qlora" if quantize == "nf4" else "lora",
        "r": int(lc.r),
        "alpha": int(lc.alpha),
        "dropout": float(lc.dropout),
        "target_modules": [str(t) for t in lc.target_modules],
        "modules_to_save": [str(t) for t in lc.modules_to_save],
        "quantize": str(getattr(quantize, "value", quantize)),
    }


def is_adapter_checkpoint(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def lora_problems(cfg: DictConfig, here: bool = False) -> list[str]:
    """What cannot work, each with its reason (training/config/validate.py calls this). here: this
    machine runs the job, so bitsandbytes must import for nf4."""
    m, problems = cfg.model, []
    quantize = m.get("quantize", "none")
    if not enabled(cfg):
        if quantize == "nf4":
            problems.append(
                "model.quantize=nf4 stores the base in 4 bits, which cannot be trained: QLoRA trains "
                "adapters on a frozen 4-bit base; set model.lora.enabled=true"
            )
        return problems
    lc, r = m.lora, cfg.rung
    if not lc.target_modules:
        problems.append(
            "model.lora.target_modules is empty: the adapters would train nothing; "
            f"default: [{', '.join(LLAMA_LINEAR)}]"
        )
    if not m.name_or_path:  # built from config: a Llama whose module names are known here
        for key in ("target_modules", "modules_to_save"):
            unknown = [t for t in lc[key] if t not in LLAMA_MODULES]
            if unknown:
                problems.append(
                    f"model.lora.{key}: no module named {', '.join(unknown)} in the model; its "
                    f"modules are {', '.join(LLAMA_MODULES)}"
                )
    if r.engine.value not in LORA_ENGINES:
        problems.append(
            f"model.lora.enabled=true with rung.engine={r.engine.value}: LoRA runs on "
            f"{', '.join(LORA_ENGINES)}"
        )
    ref = cfg.recipe.reference
    if ref and ref != m.name_or_path:
        problems.append(
            f"recipe.reference={ref} with model.lora.enabled=true: the reference of a LoRA run is the "
            "base model with its adapters disabled (model.name_or_path), with no second copy; "
            "set recipe.reference=null, or train without LoRA to use other reference weights"
        )
    g = cfg.get("generator")
    if g is not None and cfg.recipe.loss in ("grpo", "dr_grpo", "dapo"):
        if g.name.value != "hf" or g.impl.value not in ("auto", "eager"):
            problems.append(
                f"generator.name={g.name.value} generator.impl={g.impl.value} with model.lora.enabled=true: "
                "LoRA samples with generator=hf generator.impl=eager (peft's generate); vLLM's weight "
                "sync and the static and continuous decoders drive the base model's modules directly"
            )
        if g.placement.value == "separate":
            problems.append(
                "generator.placement=separate with model.lora.enabled=true: the generator ranks receive "
                "the full model's weights by name, not the adapters; use generator.placement=colocated"
            )
    if quantize == "nf4":
        problems += nf4_problems(cfg, here)
    return problems


def nf4_problems(cfg: DictConfig, here: bool) -> list[str]:
    problems = []
    if cfg.rung.device.value != "cuda":
        problems.append(
            f"model.quantize=nf4 on rung.device={cfg.rung.device.value}: the 4-bit base (QLoRA) "
            "saves GPU memory, and bitsandbytes' CPU layers dequantize every weight at every "
            "matmul; use model.quantize=none"
        )
    engine = cfg.rung.engine.value
    if engine not in NF4_ENGINES:
        why = (
            "DeepSpeed casts the whole module to its training dtype at initialize, and the 4-bit "
            "weights have not been tested through that"
            if engine == "deepspeed_zero2"
            else f"{engine} shards the frozen base, and a bitsandbytes 4-bit weight is packed bytes "
            "whose quantization state (block scales, shape) is not a parameter, so a gathered "
            "shard cannot be dequantized"
        )
        problems.append(
            f"model.quantize=nf4 with rung.engine={engine}: {why}; QLoRA runs on "
            f"{' and '.join(NF4_ENGINES)}, or use model.quantize=none on {engine}"
        )
    if not cfg.model.name_or_path:
        problems.append(
            "model.quantize=nf4 quantizes pretrained weights as they load; set model.name_or_path "
            "(a model built from config has none to quantize)"
        )
    if cfg.trainer.get("save_merged") not in (None, "none"):
        problems.append(
            f"trainer.save_merged={cfg.trainer.save_merged} with model.quantize=nf4: merging into a "
            "4-bit base loses the adapter's precision; set trainer.save_merged=none and merge "
            "against the bf16 base offline"
        )
    if here:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            problems.append(
                "model.quantize=nf4 needs bitsandbytes on this machine (pip install bitsandbytes; CUDA only)"
            )
    return problems


def merged_steps(cfg: DictConfig) -> str:
    """trainer.save_merged with its default filled in: final, every or none."""
    chosen = cfg.trainer.get("save_merged")
    if chosen is None:
        return "none" if cfg.model.get("quantize", "none") == "nf4" else "final"
    return str(chosen.value if hasattr(chosen, "value") else chosen)


def peft_config(lc: DictConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=lc.r,
        lora_alpha=lc.alpha,
        lora_dropout=lc.dropout,
        target_modules=list(lc.target_modules),
        modules_to_save=list(lc.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )


def apply_lora(model, lc: DictConfig):
    """Freeze `model` and wrap it with fresh adapters (A random, B zero: at step 0 the policy is the
    base exactly). A target that names no module of this model is a ConfigError listing its modules."""
    import torch
    from peft import get_peft_model

    leaves = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n}
    for key in ("target_modules", "modules_to_save"):
        unknown = [t for t in lc[key] if t not in leaves]
        if unknown:
            linear = sorted(
                {
                    n.rsplit(".", 1)[-1]
                    for n, x in model.named_modules()
                    if isinstance(x, torch.nn.Linear)
                }
            )
            raise ConfigError(
                f"model.lora.{key}: no module named {', '.join(unknown)} in the model; its linear "
                f"modules are {', '.join(linear)}"
            )
    return get_peft_model(model, peft_config(lc))


def base_load_kwargs(cfg: DictConfig) -> dict:
    """from_pretrained arguments of the base: 4-bit NF4 for QLoRA (bitsandbytes, imported there)."""
    if cfg.model.get("quantize", "none") != "nf4":
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    }


def build_policy(cfg: DictConfig, tokenizer, device: str, seed: int, resume_from=None):
    """The base (model.name_or_path, or built from config with `seed`), frozen, with adapters: fresh
    ones, or a checkpoint's (resume_from) loaded trainable, the optimizer state following by name."""
    import torch
    from peft import PeftModel

    from training.model.modeling import build_model

    quantized = cfg.model.get("quantize", "none") == "nf4"
    # The base is frozen, so an fp32 master copy of it buys nothing: under rung.bf16 it is built
    # and kept in bf16 on every engine (the plan's 2 bytes per parameter; autocast, FSDP2 and
    # DeepSpeed computed in bf16 anyway), while peft keeps the adapters in fp32
    # (autocast_adapter_dtype). Without rung.bf16 everything stays fp32.
    base = build_model(
        cfg.model,
        tokenizer,
        device,
        seed,
        dtype=torch.bfloat16 if quantized or cfg.rung.bf16 else torch.float32,
        load_kwargs=base_load_kwargs(cfg),
    )
    if resume_from is None:
        return apply_lora(base, cfg.model.lora)
    if not is_adapter_checkpoint(resume_from):
        raise CheckpointError(
            f"{resume_from} holds no adapter ({ADAPTER_CONFIG}): it is a full fine-tuning checkpoint, "
            "and model.lora.enabled=true resumes LoRA checkpoints only"
        )
    check_base(resume_from, cfg)
    return PeftModel.from_pretrained(base, str(resume_from), is_trainable=True).to(device)


def trainable_count(model) -> tuple[int, int]:
    """(trainable, all) parameters, as peft's get_nb_trainable_parameters counts them."""
    return model.get_nb_trainable_parameters()


# ---- the reference: the policy with its adapters disabled ---------------------------------------
class AdapterDisabled:
    """The base model, as DPO's reference pass and GRPO's KL see it: calls run the policy itself under
    `disable_adapter()`, so the reference holds no weights of its own (not an nn.Module: nothing to
    register, move or shard). `module` is the PeftModel, which unwrap() (lm_loss.py) reaches."""

    def __init__(self, policy):
        self.module = policy

    @property
    def config(self):
        return self.module.config

    @property
    def training(self) -> bool:
        return self.module.training

    def parameters(self):
        return self.module.parameters()

    def eval(self):
        self.module.eval()
        return self

    def train(self, mode: bool = True):
        self.module.train(mode)
        return self

    def __call__(self, *args, **kwargs):
        with self.module.disable_adapter():
            return self.module(*args, **kwargs)


# ---- identity: which base an adapter belongs to -------------------------------------------------
def base_identity(cfg: DictConfig) -> str:
    """The base's identity: the content hash of a local folder, a hub name, or, for a model built from
    config, a hash of its shape and seed (its initial weights are a function of them); and its storage."""
    from training.common.checkpoint_hash import model_identity

    src = cfg.model.name_or_path
    if src:
        ident = model_identity(src)
    else:
        shape = {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k not in ("lora",)}
        blob = json.dumps([shape, cfg.trainer.seed], sort_keys=True, default=str)
        ident = "init:" + hashlib.sha256(blob.encode()).hexdigest()
    return f"{ident};quantize={cfg.model.get('quantize', 'none')}"


def adapter_fingerprint(cfg: DictConfig) -> str:
    lc = OmegaConf.to_container(cfg.model.lora)
    lc.pop("lr_scale", None)  # the rate changes no output of the model
    return hashlib.sha256(json.dumps(lc, sort_keys=True).encode()).hexdigest()[:32]


def base_record(cfg: DictConfig, identity: str) -> dict:
    return {"source": cfg.model.name_or_path, "identity": identity}


def check_base(ckpt: Path, cfg: DictConfig, identity: str | None = None) -> None:
    """The adapter at ckpt was trained on the base cfg names (its ladder_base.json agrees), or a
    CheckpointError saying which base it needs."""
    from training.common.safe_files import read_text

    try:
        saved = json.loads(read_text(Path(ckpt) / BASE_FILE))
        want = saved["identity"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{Path(ckpt) / BASE_FILE} cannot be read ({e})") from None
    have = identity or base_identity(cfg)
    if have != want:
        raise CheckpointError(
            f"the adapter at {ckpt} was trained on the base {saved.get('source') or want}, but this "
            f"config's base is {cfg.model.name_or_path or 'built from config'} ({have}); use the base "
            "it was trained on"
        )


# ---- saving ------------------------------------------------------------------------------------
def save_adapter(
    model, tmp: Path, identity: str, cfg: DictConfig, state_dict: dict | None = None
) -> None:
    """peft's files (adapter_model.safetensors, adapter_config.json) and ladder_base.json into tmp
    (rank 0). state_dict: the adapter's tensors gathered by a sharding engine (engine.adapter_state),
    else peft reads them from the model. No README: peft's model card is not an input."""
    from training.common.safe_files import write_atomic

    model.save_pretrained(
        str(tmp), safe_serialization=True, save_embedding_layers=False, state_dict=state_dict
    )
    (Path(tmp) / "README.md").unlink(missing_ok=True)
    write_atomic(Path(tmp) / BASE_FILE, json.dumps(base_record(cfg, identity), indent=2) + "\n")


def save_merged(model, tmp: Path, tokenizer) -> None:
    """The merged Hugging Face weights in tmp/merged/: a copy of the model merged and unloaded by
    peft, so the training model keeps its adapters (merging in place and unmerging is not exact)."""
    import copy

    out = Path(tmp) / MERGED_DIR
    merged = copy.deepcopy(model).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del merged


def load_adapter_checkpoint(ckpt: Path, cfg: DictConfig, tokenizer, device: str, dtype):
    """Base plus adapter for evaluation, nothing merged on disk: the base as the saved config names
    it, checked against the checkpoint's ladder_base.json, then peft's adapter on top."""
    from peft import PeftModel

    from training.model.modeling import build_model

    if cfg is None:
        raise CheckpointError(
            f"{ckpt} is an adapter checkpoint without ladder_config.yaml: its base is unknown"
        )
    check_base(ckpt, cfg)
    base = build_model(
        cfg.model,
        tokenizer,
        device,
        cfg.trainer.seed,
        dtype=dtype,
        load_kwargs=base_load_kwargs(cfg),
    )
    return PeftModel.from_pretrained(base, str(ckpt)).to(device).eval()


# ---- the planner's count ----------------------------------------------------------------------
def _linear_dims(shape) -> dict[str, tuple[int, int]]:
    h, i = shape.hidden, shape.intermediate
    q, kv = shape.heads * (h // shape.heads), shape.kv_hidden
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def matmuls(shape, cfg: DictConfig):
    """The run's matmul parameters for its FLOPs (training/model/flops.py: Matmuls), one rule for the
    plan and the trainer's MFU. With LoRA the forward multiplies by the base and the adapters; the
    base gets no weight gradient (4 FLOPs per parameter and token, not 6) except the modules it
    saves whole, which train; the reference is the base alone. An embedding adapter's A is a lookup:
    only its B (r x hidden) is a product; a saved embedding is a lookup too."""
    from training.model.flops import Matmuls

    n = shape.matmul_params
    if not enabled(cfg):
        return Matmuls.full(n)
    lc, dims, h, v = cfg.model.lora, _linear_dims(shape), shape.hidden, shape.vocab
    adapter = shape.layers * sum(lc.r * sum(dims[t]) for t in lc.target_modules if t in dims)
    adapter += lc.r * (h + v) if "lm_head" in lc.target_modules else 0
    adapter += lc.r * h if "embed_tokens" in lc.target_modules else 0
    saved = sum(
        v * h if t == "lm_head" else shape.layers * dims[t][0] * dims[t][1]
        for t in lc.modules_to_save
        if t == "lm_head" or t in dims
    )
    return Matmuls(policy=n + adapter, frozen=n - saved, base=n)


def adapter_params(shape, lc) -> int:
    """Trainable parameters of the adapters (and modules_to_save) on a Llama of `shape`, by arithmetic:
    r x (in + out) per targeted linear layer, the whole module for each module saved. Equal to peft's
    get_nb_trainable_parameters (tests/test_lora.py checks it on the tiny model and the 8B shape)."""
    h, v, dims = shape.hidden, shape.vocab, _linear_dims(shape)
    per_layer = sum(lc.r * sum(dims[t]) for t in lc.target_modules if t in dims)
    total = shape.layers * per_layer
    if "lm_head" in lc.target_modules:
        total += lc.r * (h + v)
    if "embed_tokens" in lc.target_modules:
        total += lc.r * (v + h)
    for name in lc.modules_to_save:
        if name in ("lm_head", "embed_tokens"):
            total += v * h
        elif name in dims:
            total += shape.layers * dims[name][0] * dims[name][1]
    return total
