"""The GRPO batch source: each micro-batch is rollouts sampled from the current policy a moment ago.

    ladder train recipe=grpo recipe.prompts_per_step=16 recipe.num_generations=8
    python -m pytest -q tests/test_grpo.py

The batch of an RL step is set by the recipe: N = P x G answers, P = recipe.prompts_per_step,
G = recipe.num_generations (training/config/validate.py, rl_batch_layout). Step s (0-based) trains on
rollout batch b = s // ppo_epochs: prompts [b P, (b + 1) P) of a seeded order over the prompt set.
Rank r of dp owns prompts [b P + r P/dp, b P + (r + 1) P/dp) and generates all G answers of each
in one generator call (one batch for vLLM or the GPU), scores them, computes each group's
advantages (whole groups are on the rank), and splits its answers, in order, into grad_accum
micro-batches of at most A = micro_batch_tokens // data.max_seq_len answers (the last may hold
fewer). An answer is at most data.max_seq_len tokens, so a micro-batch never exceeds
rung.micro_batch_tokens. A group may straddle two micro-batches: the loop divides every summed loss
by the step's units over all micro-batches and ranks, so where a split falls does not change the
gradient. The loop asks for micro-batch `index` (global, rank-free) as it asks any stream: with M
micro-batches per step, index s M + r grad_accum + j is micro-batch j of rank r at step s
(training/run/trainer.py, Trainer.micro_batches). Each answer is sampled with its own seed (seed,
generation step, prompt, answer), so a resumed run, or another world size, redraws the same rollouts.

Each rollout batch records the policy version that produced it (the number of optimizer updates
before generation), so generation can later run ahead of training. With ppo_epochs > 1 each rank
also writes its rollouts (all its micro-batches, one file) under <run>/rollouts/, so a run resumed
in the middle of a rollout batch, on the same number of ranks, trains on the rollouts it had, not on
new ones from later weights. They hold tensors, numbers and lists only and load with
torch.load(weights_only=True): a file planted there is refused, never unpickled.

Per step the source reports (all ranks, summed; each rank's rollouts counted once per step, not per
micro-batch): reward_mean, reward_std, reward/<verifier>, frac_zero_std_groups, dropped_groups
(dapo), response_len_mean/max, frac_truncated, clip_frac, kl, entropy (-mean log-prob of the sampled
tokens: a Monte Carlo estimate), gen_time_s, logprob_time_s, train_time_s, gen_tokens_per_s,
policy_version, and the FLOPs of generation and log-prob passes (on the step that generated them),
which the loop adds to the step's for MFU.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from training.common.errors import ConfigError
from training.common.safe_files import remove_path
from training.common.seeds import data_order_seed
from training.data.chat_data import IGNORE
from training.data.packing import collate
from training.engine.distributed import learner_group
from training.model.flops import forward_flops, generate_flops
from training.model.lm_loss import token_logps
from training.rl.generator import make_generator, sample_key
from training.rl.policy_lag import PolicyHistory, behaviour_version
from training.rl.rlvr_data import load_prompts
from training.rl.verifiers.registry import verify
from training.run.checkpoint import load_state_file, save_state_file

SUMS = (
    "samples",
    "reward",
    "reward_sq",
    "groups",
    "flat_groups",
    "dropped_groups",
    "len",
    "truncated",
    "gen_tokens",
    "gen_time",
    "logprob_time",
    "flops",
    "weight_sync",
    "learner_wait",
    "generator_wait",
)
COSTS = (
    "gen_time",
    "logprob_time",
    "flops",
    "gen_tokens",
    "weight_sync",
)  # spent once per rollout batch, on its first pass
# the recipe's token-level sums of a step (GRPO.take_token_stats), in the order they are reduced
TOKEN_SUMS = ("tokens", "clipped", "kl", "neg_logp", "is_ratio", "is_clipped")
STD_EPS = 1e-4  # a group's std below this is all agreement: the advantage stays finite


def group_advantages(rewards: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards [groups, G] -> advantages [groups, G] and which groups' rewards all agree [groups]."""
    mean = rewards.mean(dim=1, keepdim=True)
    flat = (rewards == rewards[:, :1]).all(dim=1)
    if loss == "dr_grpo":
        return rewards - mean, flat
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + STD_EPS), flat


def pack(prompts: list[list[int]], completions: list[list[int]]) -> dict:
    """Prompt + answer documents packed in one row; only the answer's tokens are labelled."""
    items = []
    for p, c in zip(prompts, completions):
        # pre-shifted like training.data.chat_data: position t is labelled with token t + 1
        items.append((p + c, [IGNORE] * (len(p) - 1) + c + [IGNORE]))
    return collate(items)


class RolloutStream:
    source_names = ()  # one source: no per-source sums (a BatchSource, training/recipes/protocol.py)

    def __init__(self, cfg, tokenizer, recipe, seed: int):
        r = cfg.recipe
        self.cfg, self.tokenizer, self.recipe, self.seed = cfg, tokenizer, recipe, seed
        self.prompts = load_prompts(cfg.data, tokenizer, cfg.generator.max_new_tokens, seed)
        self.docs = self.prompts  # what the loop counts in its start-up log
        self.G, self.P, self.E = r.num_generations, r.prompts_per_step, r.ppo_epochs
        self.lag = r.max_policy_lag  # 0: the synchronous run, no copy of the weights kept
        # generator.placement=separate: learners receive their shares over a link
        # (training/rl/async_rollouts.py); a generator rank generates with the version it holds
        self.separate = cfg.generator.placement == "separate"
        self.link = None
        self.held = None  # (version, model) on a generator rank
        self.verifiers = sorted({p.verifier for p in self.prompts})
        self.cache: dict[
            tuple[int, int], dict
        ] = {}  # (rollout batch, rank) -> that rank's rollouts
        self._orders: dict[int, list[int]] = {}
        self.trainer = None

    def attach(self, trainer) -> None:
        """Called once the model and engine exist (GRPO.prepare)."""
        self.trainer, layout = trainer, trainer.layout
        self.M, self.dp, self.ga = layout.micro_batches_per_step, layout.dp, layout.grad_accum
        self.A = (
            layout.answers_per_micro_batch
        )  # validate() checked P % dp and derived grad_accum from A
        self.per_rank = self.P // self.dp
        self.generator = make_generator(
            self.cfg.generator,
            self.tokenizer,
            trainer.cfg.rung.engine.value,
            trainer.world.size,
            max_model_len=self.cfg.data.max_seq_len,
        )
        self.rollout_dir = trainer.run_dir / "rollouts"
        self.history = (
            PolicyHistory(
                self.lag,
                self.rollout_dir / "policy",
                trainer.cfg.trainer.save_every,
                trainer.world.main,
            )
            if self.lag and not getattr(trainer, "is_generator", False)
            else None
        )
        self.reset_step()
        if self.separate and not getattr(trainer, "is_generator", False):
            from training.rl.async_rollouts import LearnerLink

            self.link = LearnerLink(self, trainer, trainer.job_world.size - trainer.world.size)
            if self.lag and trainer.world.main:  # the live weights are version start_step
                self.history.record(trainer.start_step, trainer.model)
            self.link.start(trainer.start_step)
        if (
            self.E > 1 and trainer.start_step % self.E
        ):  # resumed inside a rollout batch: reload what it trained on
            self.load_saved(trainer.start_step // self.E)

    def reset_step(self) -> None:
        self.sums = dict.fromkeys(SUMS, 0.0)
        self.per_verifier = torch.zeros(
            len(self.verifiers), 2, dtype=torch.float64
        )  # reward sum, count
        self.len_max = 0.0

    # ---- the stream interface the loop uses ----------------------------------------------
    def order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            if len(self._orders) > 2:
                self._orders.clear()
            n = len(self.prompts)
            g = torch.Generator().manual_seed(data_order_seed(self.seed, epoch))
            self._orders[epoch] = (
                torch.randperm(n, generator=g).tolist() if self.cfg.data.shuffle else list(range(n))
            )
        return self._orders[epoch]

    def prompt_at(self, i: int):
        epoch, j = divmod(i, len(self.prompts))
        return self.prompts[self.order(epoch)[j]]

    def epoch_of(self, index: int) -> int:
        return (index // self.M // self.E) * self.P // len(self.prompts)

    def micro_batch(self, index: int) -> dict:
        s, m = divmod(index, self.M)
        rank, j = divmod(m, self.ga)
        b, first_pass = s // self.E, s % self.E == 0
        if (b, rank) not in self.cache:
            for key in [key for key in self.cache if key[0] != b]:
                del self.cache[key]
            if self.link is not None:
                chunk, waited = self.link.receive(b)
                chunk["stats"]["learner_wait"] = waited
                chunk["stats"]["flops"] = (
                    0.0  # spent on the generator ranks, not in this step's MFU
                )
                self.cache[(b, rank)] = chunk
            else:
                self.cache[(b, rank)] = self.rollout(b, rank)
        chunk = self.cache[(b, rank)]
        if j == 0:  # the rank's rollouts enter the step's metrics once, with its first micro-batch
            self.add_stats(chunk["stats"], costs=first_pass)
        self.data_end = time.perf_counter()
        return {**chunk["micro"][j], "first_pass": first_pass}

    # ---- generation, rewards, advantages ---------------------------------------------------
    @property
    def model(self):
        return (
            self.trainer.model
        )  # the Hugging Face model under the engine: generation needs no grad

    def after_update(self, step: int) -> None:
        """The loop calls this after each optimizer step: separate generators get new weights."""
        if self.link is not None:
            self.sums["weight_sync"] += self.link.after_update(step)

    def policy_for(self, b: int):
        """(version, model, seconds) that generate rollout batch b: the live model, or under
        recipe.max_policy_lag a kept copy of version max(0, b - lag), or on a generator rank the
        version it received."""
        if self.held is not None:
            return self.held[0], self.held[1], 0.0
        version, model, sync_s = b * self.E, self.model, 0.0
        if self.lag:  # generated by version max(0, b - lag) (ppo_epochs=1: version b is live now)
            t_sync = time.perf_counter()
            if version not in self.history.versions:
                self.history.record(version, self.model)
            if behaviour_version(b, self.lag) != version:
                version = behaviour_version(b, self.lag)
                model = self.history.model_for(version, self.model)
            self.history.prune(b)
            sync_s = time.perf_counter() - t_sync
        return version, model, sync_s

    def rollout(self, b: int, rank: int) -> dict:
        """Rank `rank`'s share of rollout batch b: its prompts' answers in grad_accum micro-batches."""
        gen_step, k = b * self.E + 1, self.per_rank
        version, model, sync_s = self.policy_for(b)
        lagged = version != b * self.E  # the learners will be at version b when they train on it
        prompts = [self.prompt_at(b * self.P + rank * k + i) for i in range(k)]
        keys = [sample_key(self.seed, gen_step, p.index, j) for p in prompts for j in range(self.G)]
        inputs = [p.prompt_ids for p in prompts for _ in range(self.G)]
        completions, gen_s = self.generator.sample(model, inputs, keys, version=version)
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        rewards = torch.tensor(
            [
                verify(
                    p.verifier,
                    texts[i * self.G + j],
                    p.ground_truth,
                    f"{p.where} (answer {j} at step {gen_step})",
                )
                for i, p in enumerate(prompts)
                for j in range(self.G)
            ],
            dtype=torch.float64,
        )
        adv, flat = group_advantages(rewards.view(k, self.G), self.recipe.name)
        weights = torch.ones(k, self.G, dtype=torch.float64)
        dropped = 0
        if self.recipe.name == "dapo" and not bool(flat.all()):
            # Dynamic sampling: groups that all agree carry no signal. A rank where every group agrees
            # keeps them (zero advantage, no policy gradient) so its micro-batches still have loss units.
            weights[flat] = 0.0
            dropped = int(flat.sum())
        adv, weights = adv.flatten(), weights.flatten()
        lens_t = torch.tensor([len(c) for c in completions])
        units = weights * self.recipe.sequence_units(lens_t)
        n_matmul, cfg_m = self.trainer.n_matmul, self.model.config
        flops = generate_flops(n_matmul, sum(len(p) + len(c) for p, c in zip(inputs, completions)))
        t0 = time.perf_counter()
        micro = []
        for lo in range(
            0, len(inputs), self.A
        ):  # in order: at most A answers, so at most micro_batch_tokens
            part = slice(lo, lo + self.A)
            batch = pack(inputs[part], completions[part])
            batch.update(
                advantages=adv[part].float(),
                weights=weights[part].float(),
                policy_version=version,
                n_units=float(units[part].sum()),
            )
            # log-prob passes per micro-batch: each forward stays within micro_batch_tokens, as training's
            if self.E > 1:  # the rollout policy's log-probs, for the ratio of later passes
                batch["old_logps"] = self.logps(self.model, batch)
                flops += forward_flops(
                    n_matmul, cfg_m.num_hidden_layers, cfg_m.hidden_size, batch["doc_lens"]
                )
            if lagged:  # the behaviour policy's log-probs: the importance weight of a lagged batch
                batch["behaviour_logps"] = self.logps(model, batch)
                flops += forward_flops(
                    n_matmul, cfg_m.num_hidden_layers, cfg_m.hidden_size, batch["doc_lens"]
                )
            if self.recipe.reference_model is not None:
                batch["ref_logps"] = self.logps(self.recipe.reference_model, batch)
                flops += forward_flops(
                    n_matmul, cfg_m.num_hidden_layers, cfg_m.hidden_size, batch["doc_lens"]
                )
            micro.append(batch)
        assert len(micro) == self.ga, (
            len(micro),
            self.ga,
        )  # rl_batch_layout derived grad_accum the same way
        eos = self.tokenizer.eos_token_id
        verifier_idx = torch.tensor(
            [self.verifiers.index(p.verifier) for p in prompts for _ in range(self.G)]
        )
        stats = {
            "samples": len(texts),
            "reward": float(rewards.sum()),
            "reward_sq": float((rewards**2).sum()),
            "groups": k,
            "flat_groups": int(flat.sum()),
            "dropped_groups": dropped,
            "len": float(lens_t.sum()),
            "len_max": float(lens_t.max()),
            "truncated": sum(1 for c in completions if not c or c[-1] != eos),
            "gen_tokens": float(lens_t.sum()),
            "gen_time": gen_s,
            "logprob_time": time.perf_counter() - t0,
            "flops": flops,
            "weight_sync": sync_s,
            "learner_wait": 0.0,
            "generator_wait": 0.0,
            "per_verifier": torch.zeros(len(self.verifiers), 2, dtype=torch.float64).index_add_(
                0, verifier_idx, torch.stack([rewards, torch.ones_like(rewards)], 1)
            ),
        }
        chunk = {"micro": micro, "stats": stats}
        if self.E > 1:
            self.save(b, rank, chunk)
        return chunk

    @torch.no_grad()
    def logps(self, model, batch: dict) -> torch.Tensor:
        device = next(model.parameters()).device
        was = model.training
        model.eval()
        lp, _ = token_logps(
            model, {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
        )
        model.train(was)
        return lp.detach().float().cpu()

    # ---- rollouts kept across a resume (ppo_epochs > 1) -------------------------------------
    def chunk_path(self, b: int, rank: int):
        # named by the world size too: another dp splits the prompts differently
        return self.rollout_dir / f"batch_{b:06d}" / f"rank_{rank:05d}_of_{self.dp:05d}.pt"

    def save(self, b: int, rank: int, chunk: dict) -> None:
        path = self.chunk_path(b, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_state_file(chunk, path)  # tensors, numbers and lists only, under a temporary name
        for old in self.rollout_dir.glob("batch_*"):  # keep this batch and the one before
            if int(old.name.split("_")[1]) < b - 1:
                remove_path(old)

    def load_saved(self, b: int) -> None:
        t = self.trainer
        path = self.chunk_path(b, t.world.rank)
        if not path.is_file():
            raise ConfigError(
                f"resuming at step {t.start_step + 1}, inside rollout batch {b} "
                f"(recipe.ppo_epochs={self.E}), needs this rank's rollouts, but {path} is missing "
                f"(they are kept per rank, for the world size that made them); resume on the same "
                f"number of ranks, or from a checkpoint at a multiple of {self.E} steps"
            )
        # weights_only: a file planted in the run folder is refused (a CheckpointError naming it), never run
        self.cache[(b, t.world.rank)] = load_state_file(path)

    # ---- per-step metrics (the loop calls this on every rank) ---------------------------------
    def add_stats(self, st: dict, costs: bool) -> None:
        """One rank's rollouts into the step's sums; costs=False on a later pass over the same rollouts,
        which costs no generation or log-prob pass again."""
        for k in SUMS:
            if costs or k not in COSTS:
                self.sums[k] += st[k]
        self.per_verifier += st["per_verifier"]
        self.len_max = max(self.len_max, st["len_max"])

    def wait_metrics(self, s: dict, gen_s: float, train_s: float, world: int) -> dict:
        if self.separate:
            return {
                # mean over learners of the time blocked receiving the step's rollouts
                "learner_wait_s": s["learner_wait"] / world,
                # mean over the shares of the time their generator waited for weights first
                "generator_wait_s": s["generator_wait"] / world,
                # learner 0's time broadcasting this step's new weights (0 when none is needed)
                "weight_sync_s": s["weight_sync"],
            }
        # colocated, every rank makes its own batch: the learner waits for all of it, and the
        # generator (the same rank) waits while it trains; weight_sync: keeping/loading past versions
        return {
            "learner_wait_s": gen_s + (s["logprob_time"] + s["weight_sync"]) / world,
            "generator_wait_s": train_s,
            "weight_sync_s": s["weight_sync"] / world,
        }

    def step_metrics(self, step: int) -> dict:
        tok = self.recipe.take_token_stats()
        vec = torch.tensor(
            [
                *(self.sums[k] for k in SUMS),
                *(tok[k] for k in TOKEN_SUMS),
                *self.per_verifier.flatten().tolist(),
            ],
            dtype=torch.float64,
        )
        mx = torch.tensor([self.len_max, self.sums["gen_time"]], dtype=torch.float64)
        if dist.is_initialized():
            device, group = self.trainer.device, learner_group()
            vec, mx = vec.to(device), mx.to(device)
            dist.all_reduce(vec, group=group)
            dist.all_reduce(mx, op=dist.ReduceOp.MAX, group=group)
            vec, mx = vec.cpu(), mx.cpu()
        s = dict(zip(SUMS, vec[: len(SUMS)].tolist()))
        n_tok_sums = len(TOKEN_SUMS)
        ntok, clipped, kl, neg_logp, is_ratio, is_clipped = vec[
            len(SUMS) : len(SUMS) + n_tok_sums
        ].tolist()
        pv = vec[len(SUMS) + n_tok_sums :].view(-1, 2)
        n = max(s["samples"], 1.0)
        mean = s["reward"] / n
        world = self.trainer.world.size
        train_s = time.perf_counter() - self.data_end
        out = {
            "reward_mean": mean,
            "reward_std": max(s["reward_sq"] / n - mean * mean, 0.0) ** 0.5,
            **{
                f"reward/{v}": float(pv[i, 0] / pv[i, 1])
                for i, v in enumerate(self.verifiers)
                if pv[i, 1] > 0
            },
            "frac_zero_std_groups": s["flat_groups"] / max(s["groups"], 1.0),
            "dropped_groups": s["dropped_groups"],
            "response_len_mean": s["len"] / n,
            "response_len_max": float(mx[0]),
            "frac_truncated": s["truncated"] / n,
            "clip_frac": clipped / max(ntok, 1.0),
            "entropy": neg_logp / max(ntok, 1.0),
            "gen_time_s": float(mx[1]),
            "logprob_time_s": s["logprob_time"] / world,
            "train_time_s": train_s,
            "gen_tokens_per_s": s["gen_tokens"] / float(mx[1]) if mx[1] > 0 else None,
            # the version that generated the step's rollouts, and how far it lags the learners'
            "policy_version": behaviour_version((step - 1) // self.E, self.lag) * self.E,
            "policy_lag": (step - 1) // self.E * self.E
            - behaviour_version((step - 1) // self.E, self.lag) * self.E,
            **self.wait_metrics(s, float(mx[1]), train_s, world),
            # truncated importance sampling (lagged batches; 1 and 0 on a batch of the live policy)
            "is_ratio_mean": is_ratio / max(ntok, 1.0) if ntok else 1.0,
            "is_clipped_frac": is_clipped / max(ntok, 1.0),
            "flops": s["flops"],
        }
        if self.recipe.kl_beta > 0:
            out["kl"] = kl / max(ntok, 1.0)
        self.reset_step()
        return out
