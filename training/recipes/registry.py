"""Recipes: a batch format and a loss over one packed micro-batch; the loop is shared.

    recipe = make_recipe(cfg)          # SFT, DPO or GRPO: recipe.loss's family (training/recipes/losses.py)
                                       # a Recipe (training/recipes/protocol.py)
    stream = recipe.build_stream(cfg, tokenizer, micro_batch_tokens, seed)
    loss_sum, stats = recipe.loss_sum(model, batch)

One normalisation rule for every recipe: the loop divides each micro-batch's summed loss by
the number of loss units of the whole optimizer step, across micro-batches and ranks (`count`:
trained tokens for SFT, preference pairs for DPO). So the gradient is that of the mean loss
over the step, whatever the accumulation, the packing or the world size (torchtune #2307).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.data.chat_data import IGNORE
from training.data.mixture import SOURCE_STATS, build_stream, source_sums
from training.data.preference import sequence_logps
from training.model.lm_loss import token_logps
from training.recipes.headline import LOSS, Headline
from training.recipes.losses import loss_spec
from training.recipes.protocol import Recipe


class SFT:
    """Cross-entropy on assistant tokens, packed padding-free. Labels are pre-shifted per
    document (training.data.chat_data.encode_chat), so no target crosses a document boundary."""

    name = "sft"
    unit = "tokens"
    data_format = "messages"
    reference_model = None
    reference_in_loss = False
    headline = (LOSS,)

    def build_stream(self, cfg, tokenizer, micro_batch_tokens: int, seed: int):
        # plain data or a mixture (training/data/mixture.py), tokenised through the token cache
        return build_stream(cfg, tokenizer, micro_batch_tokens, seed, self.data_format)

    def prepare(self, trainer) -> None:
        pass

    @staticmethod
    def count(batch: dict) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def __init__(self, chunk_tokens: int = 1024):
        self.chunk_tokens = chunk_tokens  # trainer.loss_chunk_tokens (training/model/lm_loss.py)

    def loss_sum(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        logp, trained = token_logps(model, batch, self.chunk_tokens, summed=True)
        if "token_sources" not in batch:
            return -logp.sum(), {}
        # a mixture: the per-token losses, summed per source on the device as well as in total
        return -logp.sum(), {
            SOURCE_STATS: source_sums(
                -logp, trained, trained, batch["token_sources"], batch["n_sources"]
            )
        }


class DPO:
    """Direct preference optimisation on chosen/rejected pairs.

    With policy and reference log-probabilities of the final assistant turn, summed over its
    tokens (pi_c, pi_r, ref_c, ref_r) and its lengths (n_c, n_r):
      dpo_sigmoid  z = (pi_c - ref_c) - (pi_r - ref_r)                       (Rafailov et al.)
      dpo_norm     z = (pi_c - ref_c) / n_c - (pi_r - ref_r) / n_r            (length-normalised, Tulu 3)
      simpo        z = pi_c / n_c - pi_r / n_r - gamma / beta                 (reference-free, Meng et al.)
      loss = -(1 - eps) log sigmoid(beta z) - eps log sigmoid(-beta z)       (eps = label smoothing)
    Rewards are beta times each side's term of z; accuracy is the share of pairs whose chosen reward
    is above the rejected one (the margin's basis: for SimPO, without gamma, as TRL reports it).
    """

    unit = "pairs"
    data_format = "preference"
    reference_in_loss = True  # a live reference (precompute=false) runs in loss_sum
    # loss_sum's per-pair means: the chosen-minus-rejected reward and the share ranked right
    headline = (
        LOSS,
        Headline("rewards/margin", "margin", ".3f"),
        Headline("rewards/accuracy", "acc", ".2f"),
    )

    def __init__(
        self,
        loss: str,
        beta: float,
        label_smoothing: float,
        gamma: float,
        precompute: bool = True,
        chunk_tokens: int = 1024,
    ):
        self.name, self.beta, self.eps, self.gamma = loss, beta, label_smoothing, gamma
        self.chunk_tokens = chunk_tokens  # trainer.loss_chunk_tokens (training/model/lm_loss.py)
        self.needs_reference = loss != "simpo"
        self.precompute = precompute
        self.ref_logps: torch.Tensor | None = (
            None  # [n_pairs, 2]: summed log-probs of chosen, rejected
        )
        self.reference_model = None  # precompute=false: the reference runs beside the policy

    def build_stream(self, cfg, tokenizer, micro_batch_tokens: int, seed: int):
        # plain data or a mixture (training/data/mixture.py), tokenised through the token cache
        stream, truncated = build_stream(cfg, tokenizer, micro_batch_tokens, seed, self.data_format)
        self.pairs = stream.docs  # a mixture's pairs are its sources' in order: pair_ids index them
        return stream, truncated

    def prepare(self, trainer) -> None:
        if not self.needs_reference:
            return
        if self.precompute:
            from training.recipes.reference import reference_logps

            self.ref_logps = reference_logps(trainer, self.pairs)
        else:
            from training.recipes.reference import load_reference_model

            self.reference_model = load_reference_model(trainer)

    @staticmethod
    def count(batch: dict) -> int:
        return len(batch["pair_ids"])

    # in training/data/preference.py, which the reference pass (training/recipes/reference.py) shares without
    # importing this module: recipes -> reference -> preference, no circle
    sequence_logps = staticmethod(sequence_logps)

    def loss_sum(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        sums, counts = self.sequence_logps(model, batch, self.chunk_tokens)
        pc, pr, nc, nr = sums[0::2], sums[1::2], counts[0::2], counts[1::2]
        if self.needs_reference and self.reference_model is not None:
            with torch.no_grad():
                ref_sums, _ = self.sequence_logps(self.reference_model, batch, self.chunk_tokens)
            rc, rr = ref_sums[0::2], ref_sums[1::2]
        elif self.needs_reference:
            ref = self.ref_logps[batch["pair_ids"].cpu()].to(pc.device)
            rc, rr = ref[:, 0], ref[:, 1]
        if self.name == "dpo_sigmoid":
            chosen, rejected = pc - rc, pr - rr
        elif self.name == "dpo_norm":
            chosen, rejected = (pc - rc) / nc, (pr - rr) / nr
        else:  # simpo
            chosen, rejected = pc / nc, pr / nr
        z = chosen - rejected - (self.gamma / self.beta if self.name == "simpo" else 0.0)
        losses = -(1 - self.eps) * F.logsigmoid(self.beta * z) - self.eps * F.logsigmoid(
            -self.beta * z
        )
        rc_, rr_ = (self.beta * chosen).detach(), (self.beta * rejected).detach()
        # sums left on the device: the trainer reduces them with the loss in one transfer
        stats = {
            "rewards/chosen": rc_.sum(),
            "rewards/rejected": rr_.sum(),
            # accuracy on the margin's basis (chosen reward above rejected, without SimPO's gamma), as TRL
            "rewards/margin": (rc_ - rr_).sum(),
            "rewards/accuracy": (rc_ > rr_).float().sum(),
        }
        if "pair_sources" in batch:  # a mixture: each source's loss, pairs and trained tokens
            stats[SOURCE_STATS] = source_sums(
                losses, torch.ones_like(losses), nc + nr, batch["pair_sources"], batch["n_sources"]
            )
        return losses.sum(), stats


def recipe_class(loss: str) -> type:
    """The recipe class a loss trains with, for what it declares (its `headline` metrics) without
    building it: the compare report draws each recipe's headline curves."""
    family = loss_spec(loss).family
    if family == "sft":
        return SFT
    if family == "rl":
        from training.rl.grpo import GRPO

        return GRPO
    return DPO


def make_recipe(cfg) -> Recipe:
    r = cfg.recipe
    chunk = cfg.trainer.loss_chunk_tokens
    family = loss_spec(r.loss).family  # training/recipes/losses.py: the one table of losses
    if family == "sft":
        return SFT(chunk)
    if family == "rl":  # RL with verifiable rewards: training/rl/grpo.py
        from training.rl.grpo import GRPO

        return GRPO(cfg)
    return DPO(
        r.loss,
        r.beta,
        r.label_smoothing,
        r.simpo_gamma,
        precompute=r.precompute_reference,
        chunk_tokens=chunk,
    )
