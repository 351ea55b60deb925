"""Build or load the model and tokenizer. One path for the tiny rung and for real models.

    tok = load_tokenizer(cfg.model)
    model = build_model(cfg.model, tok, device="cpu", seed=0)

With `model.name_or_path` unset, a `LlamaForCausalLM` is built from the config fields (no hub
access) with the checked-in byte-level BPE tokenizer. With it set, weights and tokenizer load
by hub name or from a local directory in Hugging Face format, with `from_pretrained`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from training.common.errors import ConfigError
from training.model.attention import choose_attention

log = logging.getLogger(__name__)
TINY_TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tokenizer"


def tokenizer_source(model_cfg: DictConfig) -> str:
    return model_cfg.tokenizer or model_cfg.name_or_path or str(TINY_TOKENIZER)


def load_tokenizer(model_cfg: DictConfig):
    src = tokenizer_source(model_cfg)
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except OSError as e:
        raise ConfigError(f"cannot load the tokenizer from {src!r}: {e}") from None
    if not tok.chat_template:
        raise ConfigError(
            f"the tokenizer at {src!r} has no chat template; set model.tokenizer "
            "to an instruct tokenizer that has one"
        )
    return tok


def llama_config(model_cfg: DictConfig, vocab_size: int, tokenizer=None) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        num_key_value_heads=model_cfg.num_kv_heads,
        max_position_embeddings=model_cfg.max_position_embeddings,
        rope_theta=model_cfg.rope_theta,
        tie_word_embeddings=model_cfg.tie_word_embeddings,
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        eos_token_id=getattr(tokenizer, "eos_token_id", None),
        pad_token_id=getattr(tokenizer, "pad_token_id", None),
    )


def build_model(
    model_cfg: DictConfig,
    tokenizer,
    device: str = "cpu",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    source: str | None = None,
    load_kwargs: dict | None = None,
):
    """Build from config, or load from `source` (a checkpoint) or `model.name_or_path`; load_kwargs
    go to from_pretrained (QLoRA's 4-bit quantization_config: training/model/lora.py)."""
    attn = choose_attention(model_cfg.attn_implementation, device)
    src = source or model_cfg.name_or_path
    if src:
        if (Path(src) / "adapter_config.json").is_file() and not (
            Path(src) / "config.json"
        ).is_file():
            raise ConfigError(
                f"{src} is a LoRA adapter checkpoint, not a whole model: start from its merged "
                f"weights, {Path(src) / 'merged'} (trainer.save_merged), or its base"
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(
                src, attn_implementation=attn, dtype=dtype, **(load_kwargs or {})
            )
        except OSError as e:
            raise ConfigError(f"cannot load a model from {src!r}: {e}") from None
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            raise ConfigError(
                f"the model at {src!r} has fewer embeddings than the tokenizer has tokens"
            )
    else:
        vocab = model_cfg.vocab_size or len(tokenizer)
        if vocab < len(tokenizer):
            raise ConfigError(
                f"model.vocab_size={vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)"
            )
        torch.manual_seed(seed)
        config = llama_config(model_cfg, vocab, tokenizer)
        config._attn_implementation = attn
        model = LlamaForCausalLM(config).to(dtype)
    log.info(
        "attention implementation: %s%s",
        attn,
        f" (model.attn_implementation=auto on {device})"
        if model_cfg.attn_implementation == "auto"
        else "",
    )
    if load_kwargs and "quantization_config" in load_kwargs:
        return model  # bitsandbytes placed the 4-bit weights on the GPU as it loaded them
    return model.to(device)


def compile_layers(model) -> None:
    """torch.compile each decoder layer in place (trainer.compile=true), as torchtitan does: one
    compiled graph reused by every layer, with the wrappers (FSDP2 per layer, checkpointing)
    and the LM head's chunked loss left outside, so each engine wraps compiled layers as before."""
    if hasattr(model, "get_base_model"):  # a peft model (model.lora): its adapters compile inside
        model = model.get_base_model()
    for layer in model.model.layers:
        layer.compile()
    log.info("compiled %d decoder layers with torch.compile", len(model.model.layers))
