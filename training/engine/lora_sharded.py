"""LoRA under the engines that shard or manage the weights (fsdp2, deepspeed_zero2, deepspeed_zero3).

    specs, fetch = engine.tensors()                    # the module's tensors, gathered one at a time
    adapter = gather_adapter(peft_model, specs, fetch, main)      # rank 0: {name: full tensor}
    write_merged(ckpt, peft_model, specs, fetch, adapter, tokenizer, main)   # ckpt/merged/

Under these engines no rank holds the PeftModel's weights as peft reads them (FSDP2 keeps DTensor
shards, ZeRO-3 empty partitions, DeepSpeed hooks the module), so the checkpoint's files are written
from gathered tensors instead: the adapter is gathered onto rank 0 tensor by tensor and handed to
peft's own save_pretrained (state_dict=...), so its files are peft's format; the merged weights
stream base tensor by base tensor (training/engine/consolidate.py), each with its LoRA delta added
by peft's own get_delta_weight on the gathered A and B, so no rank holds the whole model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

from training.engine.consolidate import write_streamed
from training.model.lora import MERGED_DIR

PEFT_PREFIX = (
    "base_model.model."  # a PeftModel's names: base_model (LoraModel) . model (the HF model)
)


def gather_adapter(
    peft_model, specs: dict, fetch: Callable[[str], torch.Tensor | None], main: bool
) -> dict[str, torch.Tensor] | None:
    """The trainable tensors (the adapters and any modules_to_save) in full on rank 0, by the
    PeftModel's names; None elsewhere. Every rank gathers the same names in the same order."""
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    missing = [n for n in trainable if n not in specs]
    if missing:
        raise RuntimeError(f"trainable tensors not in the engine's state: {', '.join(missing)}")
    out = {n: fetch(n) for n in trainable}
    return out if main else None


def merged_names(peft_model, specs: dict) -> dict[str, str]:
    """{Hugging Face name: PeftModel name} of the merged model's tensors: each LoRA layer's base
    weight under its own name, a module kept whole (modules_to_save) as its trained copy; the
    adapters and the untrained originals of saved modules are not written."""
    out, adapter = {}, next(iter(peft_model.peft_config))
    for name in specs:
        if ".lora_" in name or ".original_module." in name:
            continue
        hf = (
            name.removeprefix(PEFT_PREFIX)
            .replace(".base_layer.", ".")
            .replace(f".modules_to_save.{adapter}.", ".")
        )
        out[hf] = name
    return out


def lora_delta(peft_model, name: str, adapter: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The delta peft's merge adds to the base weight `name` (a PeftModel name), computed by the
    LoRA layer's own get_delta_weight on the gathered A and B; None for a weight without adapter."""
    if not name.endswith(".base_layer.weight"):
        return None
    from peft.tuners.lora import Embedding, Linear

    layer_name = name.removesuffix(".base_layer.weight")
    layer = peft_model.get_submodule(layer_name)
    (active,) = layer.active_adapters
    if layer.use_dora.get(active) or layer.lora_bias.get(active):
        raise NotImplementedError(f"{layer_name}: DoRA and LoRA biases are not merged here")
    stub = SimpleNamespace(fan_in_fan_out=getattr(layer, "fan_in_fan_out", False))
    stub.scaling = layer.scaling
    if isinstance(layer, Embedding):
        stub.lora_embedding_A = {active: adapter[f"{layer_name}.lora_embedding_A.{active}"]}
        stub.lora_embedding_B = {active: adapter[f"{layer_name}.lora_embedding_B.{active}"]}
    elif isinstance(layer, Linear):
        stub.lora_A = {
            active: SimpleNamespace(weight=adapter[f"{layer_name}.lora_A.{active}.weight"])
        }
        stub.lora_B = {
            active: SimpleNamespace(weight=adapter[f"{layer_name}.lora_B.{active}.weight"])
        }
    else:
        raise NotImplementedError(f"{layer_name}: {type(layer).__name__} is not merged here")
    return type(layer).get_delta_weight(stub, active)


def write_merged(
    ckpt: Path,
    peft_model,
    specs: dict,
    fetch: Callable[[str], torch.Tensor | None],
    adapter: dict[str, torch.Tensor] | None,
    tokenizer,
    main: bool,
) -> None:
    """ckpt/merged/: the weights peft's merge_and_unload would give, in Hugging Face format, and the
    tokenizer. A collective: every rank calls it (adapter: rank 0's gather_adapter)."""
    out = Path(ckpt) / MERGED_DIR
    if main:
        out.mkdir()
    names = merged_names(peft_model, specs)

    def fetch_merged(hf: str):
        name = names[hf]
        w = fetch(name)  # a collective: every rank
        if not main:
            return None
        delta = lora_delta(peft_model, name, adapter)
        return w if delta is None else w + delta.to(w.dtype)  # as peft's merge casts it

    base, kept = peft_model.get_base_model(), set(names.values())
    write_streamed(
        out,
        base,
        {hf: specs[name] for hf, name in names.items()},
        fetch_merged,
        main,
        # ZeRO-3's partitioned parameters know their full size; a DTensor's numel is global
        total_parameters=sum(
            getattr(p, "ds_numel", p.numel()) for n, p in peft_model.named_parameters() if n in kept
        ),
    )
    if main:
        tokenizer.save_pretrained(out)
