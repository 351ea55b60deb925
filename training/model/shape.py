"""A model's shape, read one way for planning, MFU and the reference pass.

    from training.model.shape import model_shape, shape_of
    shape = model_shape(cfg)                    # `ladder plan`: built on the meta device, parameters counted
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
    """cfg.model's shape with parameter counts, from the model built on the meta device (no memory,
    no weights)."""
    import torch
    from transformers import LlamaForCausalLM

    from training.model.modeling import llama_config, load_tokenizer

    vocab = cfg.model.vocab_size or len(load_tokenizer(cfg.model))
    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(cfg.model, vocab))
    return shape_of(
        model.config,
        params=sum(p.numel() for p in model.parameters()),
        largest_module_params=max(
            sum(p.numel() for p in mod.parameters(recurse=False)) for mod in model.modules()
        ),
    )
