"""A model's shape, read one way for planning, MFU and the reference pass.

    from training.model.shape import model_shape, shape_of
    shape = model_shape(cfg)                    # `ladder plan`: parameters counted by arithmetic
    shape = shape_of(model.config, vocab)       # a built or loaded model (its own config, not cfg.model)
    shape.matmul_params                         # N of training/model/flops.py

The plan reads the config; a run reads the model it loaded, whose dimensions may come from a
pretrained checkpoint rather than cfg.model. Both go through shape_of, so the two cannot disagree
on what a dimension means.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from training.model.flops import matmul_params


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    params: int = 0  # all parameters, as the optimizer sees them (model_shape counts them)
    largest_module_params: int = 0  # the largest single module (gathered whole by ZeRO-3 / FSDP)

    @property
    def kv_hidden(self) -> int:
        """num_kv_heads x head_dim."""
        return self.kv_heads * (self.hidden // self.heads)

    @property
    def matmul_params(self) -> int:
        return matmul_params(
            self.hidden, self.intermediate, self.layers, self.heads, self.kv_heads, self.vocab
        )


def shape_of(config, vocab: int | None = None, **counts) -> ModelShape:
    """The shape of a transformers Llama config; vocab defaults to config.vocab_size (a run passes
    its embedding's row count); counts: params and largest_module_params where counted."""
    return ModelShape(
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads,
        vocab=config.vocab_size if vocab is None else vocab,
        **counts,
    )


def model_shape(cfg: DictConfig) -> ModelShape:
    """cfg.model's shape with parameter counts, by arithmetic over the Llama architecture
    transformers builds (no torch: `ladder plan` answers in a second). tests/test_plan.py checks
    it against meta_shape, the model built on the meta device, for every rung."""
    m = cfg.model
    vocab = m.vocab_size or _tokenizer_size(cfg.model)
    hidden, inter, heads = m.hidden_size, m.intermediate_size, m.num_heads
    head_dim = hidden // heads
    q_out, kv_out = heads * head_dim, m.num_kv_heads * head_dim
    layer = (
        hidden * q_out  # q_proj
        + 2 * hidden * kv_out  # k_proj, v_proj
        + q_out * hidden  # o_proj
        + 3 * hidden * inter  # gate_proj, up_proj, down_proj
        + 2 * hidden  # input and post-attention RMSNorm weights
    )
    embedding = vocab * hidden  # the LM head shares it when tied, else is as big again
    params = embedding + m.num_layers * layer + hidden + (0 if m.tie_word_embeddings else embedding)
    return ModelShape(
        layers=m.num_layers,
        hidden=hidden,
        intermediate=inter,
        heads=heads,
        kv_heads=m.num_kv_heads,
        vocab=vocab,
        params=params,
        largest_module_params=max(embedding, hidden * inter, hidden * q_out),
    )


def _tokenizer_size(model_cfg) -> int:
    from training.model.modeling import (
        load_tokenizer,
    )  # transformers: only for a model without vocab_size

    return len(load_tokenizer(model_cfg))


def meta_shape(cfg: DictConfig) -> ModelShape:
    """cfg.model's shape with parameter counts, from the model built on the meta device (no memory,
    no weights): what model_shape's arithmetic is checked against."""
    import torch
    from transformers import LlamaForCausalLM

    from training.model.modeling import llama_config

    vocab = cfg.model.vocab_size or _tokenizer_size(cfg.model)
    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(cfg.model, vocab))
    return shape_of(
        model.config,
        params=sum(p.numel() for p in model.parameters()),
        largest_module_params=max(
            sum(p.numel() for p in mod.parameters(recurse=False)) for mod in model.modules()
        ),
    )
