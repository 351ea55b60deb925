"""The one training entry point, shared by every rung, recipe and launcher.

    ladder train rung=tiny recipe=sft trainer.max_steps=200
    python -m training.trainer rung=tiny          # the same, without the CLI

It validates the config, builds the tokenizer, model and packed data, resumes from the last
complete checkpoint when there is one (trainer.resume=auto), trains, writes metrics.jsonl,
checkpoints atomically, evaluates each checkpoint when trainer.eval_on_save is on, and logs
to W&B. It knows nothing of clusters or schedulers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import get_scheduler

from training.chat_data import load_documents
from training.checkpoint import (check_checkpoint, git_commit, latest_checkpoint, load_trainer_state,
                                 save_checkpoint)
from training.errors import CheckpointError, TrainingError
from training.heartbeat import Heartbeat
from training.flops import model_matmul_params, mfu, train_flops
from training.metrics import MetricsFile
from training.modeling import build_model, load_tokenizer
from training.packing import PackedStream
from training.recipes import RECIPES
from training.tracking import Tracker
from training.validate import BatchLayout, effective_lr, validate, warmup_steps

log = logging.getLogger("ladder.train")


@dataclass
class RunResult:
    run_dir: Path
    checkpoints: list[Path] = field(default_factory=list)
    evals: dict[int, dict] = field(default_factory=dict)  # checkpoint step -> scores
    final_loss: float | None = None
    wandb_dir: str | None = None


def default_run_name(cfg: DictConfig) -> str:
    return f"{cfg.rung.name}-{cfg.recipe.name}-{cfg.data.name}"


def with_run_name(cfg: DictConfig) -> DictConfig:
    """The config with trainer.run_name filled in when it was null (a derived default)."""
    if cfg.trainer.run_name:
        return cfg
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))  # a writable copy; the schema is kept below
    from training.schema import LadderConfig
    cfg = OmegaConf.merge(OmegaConf.structured(LadderConfig), cfg)
    cfg.trainer.run_name = default_run_name(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    mode = cfg.trainer.resume
    if mode == "none":
        return None
    if mode == "auto":
        return latest_checkpoint(run_dir)
    return check_checkpoint(mode)


def peak_memory_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, process peak RSS


def make_scheduler(cfg: DictConfig, optimizer):
    o = cfg.optim
    if o.schedule.value == "cosine":
        return get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=warmup_steps(cfg),
                             num_training_steps=cfg.trainer.max_steps,
                             scheduler_specific_kwargs={"min_lr_rate": o.min_lr_ratio})
    return get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup_steps(cfg))


class Trainer:
    def __init__(self, cfg: DictConfig, world_size: int = 1, rank: int = 0):
        self.layout: BatchLayout = validate(cfg, world_size=world_size)
        self.cfg = with_run_name(cfg)
        self.rank, self.world_size = rank, world_size
        self.run_dir = Path(self.cfg.trainer.run_root) / self.cfg.trainer.run_name
        self.device = self.cfg.rung.device
        self.recipe = RECIPES[self.cfg.recipe.loss]
        t, r = self.cfg.trainer, self.cfg.rung
        self.save_initial = r.save_initial if t.save_initial is None else t.save_initial
        self.eval_on_save = r.eval_on_save if t.eval_on_save is None else t.eval_on_save

    # ---- setup -------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, t = self.cfg, self.cfg.trainer
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        (self.run_dir / "run_meta.json").write_text(json.dumps(
            {"git_commit": git_commit(), "argv": sys.argv, "world_size": self.world_size}, indent=2) + "\n")
        seed_everything(t.seed)
        self.tokenizer = load_tokenizer(cfg.model)
        self.resume_from = resolve_resume(cfg, self.run_dir)
        self.model = build_model(cfg.model, self.tokenizer, self.device, t.seed, source=self.resume_from)
        docs, truncated = load_documents(cfg.data, self.tokenizer)
        if truncated:
            log.warning("%d of %d documents were longer than data.max_seq_len=%d and were truncated",
                        truncated, len(docs), cfg.data.max_seq_len)
        self.stream = PackedStream(docs, self.layout.micro_batch_tokens, t.seed, cfg.data.shuffle)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=effective_lr(cfg), betas=(o.beta1, o.beta2),
                                           eps=o.eps, weight_decay=o.weight_decay)
        self.scheduler = make_scheduler(cfg, self.optimizer)
        vocab = self.model.get_input_embeddings().num_embeddings
        self.n_matmul = model_matmul_params(self.model_shape(), vocab)
        self.start_step, self.tokens_seen = 0, 0
        if self.resume_from is not None:
            state = load_trainer_state(self.resume_from)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            self.start_step, self.tokens_seen = state["step"], state["tokens_seen"]
            log.info("resumed from %s (step %d)", self.resume_from, self.start_step)
        self.metrics = MetricsFile(self.run_dir / "metrics.jsonl")
        self.metrics.truncate_after(self.start_step)  # steps after the checkpoint are redone
        self.tracker = Tracker(cfg, self.run_dir)
        self.heartbeat = Heartbeat(self.run_dir, self.world_size, t.max_steps, enabled=self.rank == 0)
        self.heartbeat.update(step=self.start_step)

    def model_shape(self):
        """Shape for FLOPs: the config for built models, the loaded model's own config otherwise."""
        c = self.model.config
        return OmegaConf.create({"hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
                                 "num_layers": c.num_hidden_layers, "num_heads": c.num_attention_heads,
                                 "num_kv_heads": c.num_key_value_heads})

    # ---- one optimizer step ------------------------------------------------------------
    def micro_batches(self, step: int) -> list[dict]:
        """This rank's micro-batches for `step` (1-based): a slice of a global, rank-free order."""
        per_step, accum = self.layout.micro_batches_per_step, self.layout.grad_accum
        first = (step - 1) * per_step + self.rank * accum
        return [self.stream.micro_batch(first + j) for j in range(accum)]

    def train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        batches = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in b.items()}
                   for b in self.micro_batches(step)]
        n_trained = sum(self.recipe.count(b) for b in batches)
        n_processed = sum(b["input_ids"].numel() for b in batches)
        if n_trained == 0:
            raise TrainingError(f"step {step} has no trained tokens: check the data's assistant turns")
        t1 = time.perf_counter()
        self.model.train()
        loss_sum = 0.0
        for b in batches:
            loss = self.recipe.loss_sum(self.model, b)
            (loss / n_trained).backward()
            loss_sum += loss.item()
        t2 = time.perf_counter()
        loss_value = loss_sum / n_trained
        if self.cfg.trainer.stop_on_nonfinite and not math.isfinite(loss_value):
            last = latest_checkpoint(self.run_dir)
            raise TrainingError(f"the loss is {loss_value} at step {step}; stopping. The last good "
                                f"checkpoint is {last or 'none (no checkpoint yet)'}")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        self.tokens_seen += n_trained
        flops = sum(train_flops(self.n_matmul, self.model.config.num_hidden_layers,
                                self.model.config.hidden_size, b["doc_lens"]) for b in batches)
        dt = t3 - t0
        return {
            "step": step, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
            "tokens": self.tokens_seen, "tokens_per_s": n_processed / dt,
            "mfu": mfu(flops, dt, self.cfg.rung.peak_flops_per_device, 1),
            "step_time_s": dt, "data_time_s": t1 - t0, "fwd_bwd_time_s": t2 - t1, "optim_time_s": t3 - t2,
            "goodput": n_trained / n_processed, "peak_mem_gb": peak_memory_gb(self.device),
            "epoch": self.stream.epoch_of((step - 1) * self.layout.micro_batches_per_step),
        }

    # ---- checkpoints and evals ---------------------------------------------------------
    def save(self, step: int, result: RunResult) -> None:
        state = {"step": step, "tokens_seen": self.tokens_seen, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
                 "data": {"next_micro_batch": step * self.layout.micro_batches_per_step,
                          "micro_batches_per_step": self.layout.micro_batches_per_step},
                 "world_size": self.world_size}
        ckpt = save_checkpoint(self.run_dir, step, self.model, self.tokenizer, state, self.cfg,
                               keep_last=self.cfg.trainer.keep_last)
        result.checkpoints.append(ckpt)
        self.heartbeat.update(last_checkpoint_step=step, last_checkpoint_at=time.time())
        self.tracker.log_checkpoint(ckpt, step)
        log.info("saved checkpoint %s", ckpt)
        if self.eval_on_save:
            from evals.runner import evaluate_checkpoint  # evals depend on training, not the reverse
            scores = evaluate_checkpoint(ckpt, self.cfg.eval)["scores"]
            result.evals[step] = scores
            self.tracker.log_eval(step, scores)
            log.info("eval at step %d: %s", step, ", ".join(f"{k}={v:.1f}" for k, v in scores.items()))

    # ---- the loop ----------------------------------------------------------------------
    def run(self) -> RunResult:
        self.setup()
        t = self.cfg.trainer
        result = RunResult(run_dir=self.run_dir, wandb_dir=self.tracker.run_path)
        log.info("run %s: %d steps of %d tokens (%d micro-batches of %d tokens x accum %d x dp %d), lr %.2e",
                 t.run_name, t.max_steps, self.layout.global_batch_tokens, self.layout.micro_batches_per_step,
                 self.layout.micro_batch_tokens, self.layout.grad_accum, self.layout.dp, effective_lr(self.cfg))
        exit_code = 1
        try:
            if self.start_step == 0 and self.save_initial:
                self.save(0, result)
            for step in range(self.start_step + 1, t.max_steps + 1):
                m = self.train_step(step)
                self.metrics.append(m)
                self.tracker.log_step(step, m)
                self.heartbeat.update(step=step, loss=m["loss"], mfu=m["mfu"])
                result.final_loss = m["loss"]
                if step % t.log_every == 0 or step == t.max_steps:
                    log.info("step %d/%d loss %.4f lr %.2e grad_norm %.3f tok/s %.0f", step, t.max_steps,
                             m["loss"], m["lr"], m["grad_norm"], m["tokens_per_s"])
                if step % t.save_every == 0 or step == t.max_steps:
                    self.save(step, result)
            exit_code = 0
            self.heartbeat.update(state="completed")
        except BaseException as e:
            self.heartbeat.update(state="failed", reason=f"{type(e).__name__}: {e}"[:500])
            raise
        finally:
            self.tracker.finish(exit_code)
        return result


def train(cfg: DictConfig) -> RunResult:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return Trainer(cfg, world_size=world_size, rank=rank).run()


if __name__ == "__main__":
    from launch.cli import main
    sys.exit(main(["train", *sys.argv[1:]]))
