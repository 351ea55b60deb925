"""What the training loop asks of a recipe and of the batch source the recipe builds.

    recipe: Recipe = make_recipe(cfg)        # SFT, DPO (training/recipes/registry.py), GRPO (training/rl/grpo.py)
    stream, truncated = recipe.build_stream(cfg, tokenizer, micro_batch_tokens, seed)

Both are typing.Protocols: a recipe or a source declares every member below, so the trainer
(training/run/trainer.py) calls them without probing for optional ones (tests/test_protocols.py
checks each one has them). The batch sources are
PackedStream and MixtureStream (training/data/) and GRPO's RolloutStream (training/rl/rollouts.py).
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from training.recipes.headline import Headline


@runtime_checkable
class BatchSource(Protocol):
    docs: Sized  # the examples (RL: the prompts) it draws from; the start-up log counts them
    # A mixture's source names, in the order of the per-source sums its recipe's loss returns
    # (training/data/mixture.py); empty for a single source.
    source_names: Sequence[str]

    def micro_batch(self, index: int) -> dict:
        """The micro-batch at a global, rank-free index (training/data/packing.py has the order)."""
        ...

    def epoch_of(self, index: int) -> int: ...

    def step_metrics(self, step: int) -> dict:
        """Metrics of its own for the step, after it: e.g. GRPO's rewards, and under "flops" what
        making the batches cost (sampling from the current weights), which counts toward MFU."""
        ...


@runtime_checkable
class Recipe(Protocol):
    name: str  # the loss (training/recipes/losses.py)
    unit: str  # the loss units `count` counts, as the start-up log names them
    data_format: str
    # The frozen reference model beside the policy, None when none is loaded (SFT; DPO with a
    # precomputed reference or SimPO; GRPO with kl_beta=0).
    reference_model: nn.Module | None
    # True when loss_sum runs reference_model on the step's own tokens (DPO without precompute): the
    # loop counts that forward pass in MFU. GRPO's reference scores rollouts in the batch source,
    # which counts its FLOPs itself.
    reference_in_loss: bool
    # The step metrics the progress bar and log line show (training/recipes/headline.py).
    headline: tuple[Headline, ...]

    def build_stream(
        self, cfg: Any, tokenizer: Any, micro_batch_tokens: int, seed: int
    ) -> tuple[BatchSource, int]:
        """The batch source, and how many examples were truncated to data.max_seq_len."""
        ...

    def prepare(self, trainer: Any) -> None:
        """Before the first step, with the model and engine built (the trainer is passed whole:
        DPO's reference pass, GRPO's generator read it)."""
        ...

    def count(self, batch: dict) -> float:
        """The micro-batch's loss units: the step's loss is the summed loss over their total."""
        ...

    def loss_sum(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        """The summed loss over the micro-batch, and statistics summed alike."""
        ...
