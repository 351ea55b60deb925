"""GRPO: the RL-with-verifiable-rewards recipe, a batch source of rollouts plus a clipped loss.

    ladder train recipe=grpo model.name_or_path=runs/<sft>/checkpoints/step_000050
    ladder train recipe=grpo recipe.loss=dapo recipe.clip_high=0.28 recipe.kl_beta=0.01
    python -m pytest -q tests/test_grpo.py

The batch source (training/rl/rollouts.py) samples recipe.num_generations answers per prompt with the
current policy, scores them with the verifiers and computes each answer's advantage A from its
group's rewards r (the group = the answers to one prompt):
  grpo      A = (r - mean) / (std + 1e-4)     std unbiased, as TRL
  dr_grpo   A = r - mean                      (Liu et al.: no std scaling)
  dapo      A = (r - mean) / (std + 1e-4), and dynamic sampling: groups whose rewards all agree
            carry no signal and are dropped (weight 0, not counted in the step's loss units)
Per answer token t, with the policy's log-prob lp, the rollout policy's old, the reference's ref:
  ratio = exp(lp - old);  pg_t = -min(ratio A, clip(ratio, 1 - clip_low, 1 + clip_high) A)
  l_t = pg_t + kl_beta * (exp(ref - lp) - (ref - lp) - 1)          (k3 estimator; only if kl_beta>0)
On the first of recipe.ppo_epochs passes over a rollout batch, old = lp.detach(): the ratio is
exactly 1 and clipping cannot act. Later passes use log-probs recorded at generation time.

Loss units, for the loop's one normalisation rule (summed loss / units of the whole step):
  grpo     sequences: each answer's mean token loss, averaged over answers
  dr_grpo  a constant: num answers x generator.max_new_tokens, so long answers are not discounted
  dapo     tokens: the token-level mean over the step
"""

from __future__ import annotations

import torch

from training.model.lm_loss import token_logps


class GRPO:
    data_format = "rlvr"
    reference_in_loss = False  # the batch source scores rollouts with the reference, and counts it

    def __init__(self, cfg):
        r = cfg.recipe
        self.name, self.cfg = r.loss, cfg
        self.unit = {
            "grpo": "sequences",
            "dr_grpo": "max_new_tokens per sequence",
            "dapo": "tokens",
        }[r.loss]
        self.clip_low, self.clip_high, self.kl_beta = r.clip_low, r.clip_high, r.kl_beta
        self.max_new_tokens = cfg.generator.max_new_tokens
        self.reference_model = None  # the KL reference, loaded only when kl_beta > 0
        self.acc = self._zero_acc()

    @staticmethod
    def _zero_acc() -> dict:
        # token-level sums of one step, read by the batch source's step metrics
        return {"tokens": 0.0, "clipped": 0.0, "kl": 0.0, "neg_logp": 0.0}

    def build_stream(self, cfg, tokenizer, micro_batch_tokens: int, seed: int):
        from training.rl.rollouts import RolloutStream

        self.stream = RolloutStream(cfg, tokenizer, self, seed)
        return self.stream, 0

    def prepare(self, trainer) -> None:
        if self.kl_beta > 0:  # kl_beta=0 (the default): no reference model is loaded at all
            from training.recipes.reference import load_reference_model

            self.reference_model = load_reference_model(trainer)
        self.stream.attach(trainer)

    @staticmethod
    def count(batch: dict) -> float:
        return batch["n_units"]

    def sequence_units(self, lens: torch.Tensor) -> torch.Tensor:
        """Loss units of each answer (before its weight): see the module doc."""
        if self.name == "grpo":
            return torch.ones_like(lens, dtype=torch.float64)
        if self.name == "dr_grpo":
            return torch.full_like(lens, self.max_new_tokens, dtype=torch.float64)
        return lens.to(torch.float64)

    def loss_sum(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        logp, mask = token_logps(model, batch)
        lens = torch.tensor(batch["doc_lens"], device=logp.device)
        doc = torch.repeat_interleave(torch.arange(len(lens), device=logp.device), lens)
        m = mask.to(logp.dtype)
        adv = batch["advantages"].to(logp.dtype)[doc]
        old = logp.detach() if batch["first_pass"] else batch["old_logps"].to(logp.dtype)
        ratio = torch.exp(logp - old)
        low, high = 1.0 - self.clip_low, 1.0 + self.clip_high
        unclipped, clipped = ratio * adv, torch.clamp(ratio, low, high) * adv
        per_token = -torch.minimum(unclipped, clipped)
        kl = None
        if self.kl_beta > 0:
            d = batch["ref_logps"].to(logp.dtype) - logp
            kl = torch.exp(d) - d - 1.0
            per_token = per_token + self.kl_beta * kl
        w = batch["weights"].to(logp.dtype)
        per_token = per_token * m
        if self.name == "grpo":  # each answer's token mean, then summed over answers
            n_tok = torch.zeros(len(lens), device=logp.device, dtype=logp.dtype).index_add_(
                0, doc, m
            )
            seq = torch.zeros(len(lens), device=logp.device, dtype=logp.dtype).index_add_(
                0, doc, per_token
            )
            loss = (w * seq / n_tok.clamp(min=1.0)).sum()
        else:  # dr_grpo and dapo: the sum over tokens (their units differ: see sequence_units)
            loss = (w[doc] * per_token).sum()
        with (
            torch.no_grad()
        ):  # token-level diagnostics, summed; the batch source reports them per step
            tok_w = w[doc] * m
            a = self.acc
            a["tokens"] += float(tok_w.sum())
            a["clipped"] += float(
                (((ratio < low) & (adv < 0)) | ((ratio > high) & (adv > 0)))
                .to(logp.dtype)
                .mul(tok_w)
                .sum()
            )
            a["neg_logp"] += float((-logp * tok_w).sum())
            if kl is not None:
                a["kl"] += float((kl * tok_w).sum())
        return loss, {}

    def take_token_stats(self) -> dict:
        a, self.acc = self.acc, self._zero_acc()
        return a


def grpo_problems(cfg, layout=None, here: bool = False) -> list[str]:
    """Start-up checks of a GRPO config (training/config/validate.py calls this); they never fix a value."""
    r, problems = cfg.recipe, []
    if r.num_generations < 2:
        problems.append(
            f"recipe.num_generations={r.num_generations}: GRPO compares the answers within a "
            "prompt's group, so a group needs at least 2 (8 is usual)"
        )
    # prompts_per_step against the data-parallel size: training/config/validate.py, rl_batch_layout
    if r.ppo_epochs < 1:
        problems.append(f"recipe.ppo_epochs={r.ppo_epochs} must be at least 1")
    for key in ("clip_low", "clip_high"):
        if not 0 < r[key] < (1 if key == "clip_low" else float("inf")):
            problems.append(
                f"recipe.{key}={r[key]} must be in (0, {'1' if key == 'clip_low' else 'inf'})"
            )
    if not r.kl_beta >= 0:
        problems.append(f"recipe.kl_beta={r.kl_beta} must be 0 (off) or positive")
    if cfg.data.max_seq_len <= cfg.generator.max_new_tokens:
        problems.append(
            f"generator.max_new_tokens={cfg.generator.max_new_tokens} leaves no room for a prompt in "
            f"data.max_seq_len={cfg.data.max_seq_len}"
        )
    from training.rl.generator import generator_problems

    return problems + generator_problems(cfg, here)
