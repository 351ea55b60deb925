"""Recipes: a loss over one packed micro-batch, plus the count that normalises it.

The loop divides every micro-batch's summed loss by one number: the trained tokens of the
whole optimizer step, across micro-batches and ranks. So the gradient is that of the mean
loss over the step's tokens, whatever the accumulation or the packing (torchtune #2307).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.chat_data import IGNORE


class SFT:
    name = "sft"

    @staticmethod
    def count(batch: dict) -> int:
        """Trained tokens: those with a label (assistant tokens)."""
        return int((batch["labels"] != IGNORE).sum())

    @staticmethod
    def loss_sum(model, batch: dict) -> torch.Tensor:
        """Summed next-token cross-entropy over assistant tokens. Labels are pre-shifted per
        document (training.chat_data.encode_chat), so no target crosses a document boundary."""
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
        logits = out.logits.float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), batch["labels"].view(-1),
                               ignore_index=IGNORE, reduction="sum")


RECIPES = {"sft": SFT}
