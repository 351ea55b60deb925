"""The one training entry point, shared by every rung, recipe, engine and launcher.

    ladder train rung=tiny recipe=sft trainer.max_steps=200
    python -m launch.train rung=tiny                               # the same, without the CLI
    torchrun --nproc-per-node 2 -m launch.train rung.engine=fsdp2 rung.gpus_per_node=2
    Trainer(cfg, callbacks=[...]).run()                           # in process: train(cfg, callbacks)

It validates the config, builds the tokenizer, model and batches (a Recipe and its BatchSource:
training/recipes/protocol.py), wraps the model in the engine the rung names, resumes from the last
complete checkpoint (trainer.resume=auto), trains and checkpoints atomically. On SIGTERM or SIGUSR1
it finishes the step, checkpoints and exits with status 75 (requeue); on Ctrl-C the same, as
interrupted, with status 130 and how to resume, and a second Ctrl-C stops at once
(training/run/stop_signals.py). It knows nothing of clusters or schedulers.

Everything else hooks into the loop as a callback (training/run/callbacks/): metrics.jsonl, W&B,
the heartbeat, the progress bar and the step watchdog by default, and evaluating each checkpoint
as it is saved (evals/on_save.py), which launch/train.py hands in: training never imports evals.
`python -m training.run.trainer`, the command of older launch scripts, forwards to launch.train.

A resume never silently changes what is trained: the config is compared with the checkpoint's and
a change to the math is refused unless trainer.allow_config_change=true (training/config/config_diff.py).
A run that already reached trainer.max_steps trains nothing and writes nothing. The run directory
(config.yaml, run_meta.json: training/run/run_files.py) is written only once the start is decided.
"""

from __future__ import annotations

import logging
import math
import os
import random
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import get_scheduler

from training.common.errors import Interrupted, Preempted, TrainingError
from training.common.safe_files import fresh_dir
from training.common.seeds import seed_everything
from training.config.checkpoint_schedule import averaged_steps
from training.config.config_diff import (
    ConfigChanges,
    check_batch_continues,
    check_resume_config,
    continue_schedule,
)
from training.config.validate import (
    BatchLayout,
    effective_lr,
    generator_ranks,
    validate,
    warmup_steps,
)
from training.data.chat_data import IGNORE
from training.engine import distributed
from training.engine.engines import check_origin, close_engines, make_engine
from training.model import lora
from training.model.flops import forward_flops, mfu, train_flops
from training.model.modeling import build_model, compile_layers, load_tokenizer
from training.model.shape import shape_of
from training.recipes.protocol import BatchSource, Recipe
from training.recipes.registry import make_recipe
from training.run import faults
from training.run.callbacks import Callback, Callbacks, default_callbacks
from training.run.checkpoint import (
    commit_checkpoint,
    git_commit,
    latest_checkpoint,
    load_trainer_state,
    staging_dir,
    write_checkpoint,
)
from training.run.remote import RemoteCheckpoints, resolve_resume
from training.run.run_files import (
    finished_message,
    finished_step,
    invocation,
    open_run_dir,
    remove_if_unstarted,
)
from training.run.stop_signals import StopSignals

log = logging.getLogger("ladder.train")


@dataclass
class RunResult:
    run_dir: Path
    checkpoints: list[Path] = field(default_factory=list)
    evals: dict[int, dict] = field(default_factory=dict)  # checkpoint step -> scores
    final_loss: float | None = None
    wandb_dir: str | None = None
    finished_before: int | None = None  # the step a finished run was at: this call trained nothing
    average: Path | None = None  # trainer.average_last: the averaged checkpoint
    average_evals: dict = field(default_factory=dict)  # its scores


def default_run_name(cfg: DictConfig) -> str:
    return f"{cfg.rung.name}-{cfg.recipe.name}-{cfg.data.name}"


def with_run_name(cfg: DictConfig) -> DictConfig:
    """The config with trainer.run_name filled in when it was null (a derived default)."""
    if cfg.trainer.run_name:
        return cfg
    from training.config.schema import LadderConfig

    cfg = OmegaConf.merge(OmegaConf.structured(LadderConfig), OmegaConf.to_container(cfg))
    cfg.trainer.run_name = default_run_name(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def rng_state() -> dict:
    """Every generator's state as tensors, numbers and lists only: the checkpoint loads with
    torch.load(weights_only=True) and no extra globals (numpy's own state holds an ndarray)."""
    version, internal, gauss = random.getstate()
    _, key, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "key": key.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", np.array(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def peak_memory_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )  # KiB -> GiB, process peak RSS


def make_scheduler(cfg: DictConfig, optimizer):
    if cfg.optim.schedule.value == "cosine":
        return get_scheduler(
            "cosine_with_min_lr",
            optimizer,
            num_warmup_steps=warmup_steps(cfg),
            num_training_steps=cfg.trainer.max_steps,
            scheduler_specific_kwargs={"min_lr_rate": cfg.optim.min_lr_ratio},
        )
    return get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup_steps(cfg))


class Trainer:
    def __init__(
        self,
        cfg: DictConfig,
        world: distributed.World | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        """`callbacks` run after the default ones (training/run/callbacks/__init__.py)."""
        self.job_world = world or distributed.env_world()
        self.layout: BatchLayout = validate(cfg, world_size=self.job_world.size, here=True)
        # generator.placement=separate: the job's last generator.ranks ranks only generate
        # (training/rl/async_rollouts.py); the loop below sees the learners' world, ranks 0..L-1
        self.generator_ranks = generator_ranks(cfg)
        learners = self.job_world.size - self.generator_ranks
        self.is_generator = self.job_world.rank >= learners
        self.world = distributed.World(self.job_world.rank, learners, self.job_world.local_rank)
        self.cfg = with_run_name(cfg)
        self.run_dir = Path(self.cfg.trainer.run_root) / self.cfg.trainer.run_name
        self.store = RemoteCheckpoints.for_run(self.cfg)  # None without trainer.checkpoint_url
        self.device = self.cfg.rung.device
        self.recipe: Recipe = make_recipe(self.cfg)
        self.stream: BatchSource  # built in setup, by the recipe
        self.reference_pass: dict | None = None  # set by recipes with a reference pass (DPO)
        t, r = self.cfg.trainer, self.cfg.rung
        self.save_initial = r.save_initial if t.save_initial is None else t.save_initial
        # trainer.average_last's inputs: kept from keep_last until the average is written
        self.average_steps = tuple(averaged_steps(self.cfg))
        self.signals = StopSignals(main=self.world.main)  # SIGTERM, SIGUSR1, Ctrl-C
        self.result = RunResult(run_dir=self.run_dir)  # filled as the run goes
        self.callbacks = Callbacks([*default_callbacks(), *callbacks], main=self.world.main)
        self.callbacks.attach(self)

    # ---- setup -------------------------------------------------------------------------
    def setup(self) -> bool:
        """Build everything; False if the run already reached max_steps. What can refuse the run (data,
        checkpoint, a config change) runs before the run directory is written: a refusal touches no file."""
        cfg, t, main = self.cfg, self.cfg.trainer, self.world.main
        self.callbacks.phase("start-up", setup=True)
        distributed.init(
            self.job_world, self.device, t.step_timeout_s or 1800.0, self.generator_ranks
        )
        seed_everything(t.seed)
        self.tokenizer = load_tokenizer(cfg.model)
        self.callbacks.phase("finding (and downloading) the checkpoint to resume from", setup=True)
        self.resume_from = resolve_resume(cfg, self.run_dir, self.store, self.world)
        state = load_trainer_state(self.resume_from) if self.resume_from else None
        self.changes = ConfigChanges()
        if state is not None:
            check_origin(
                cfg, state, self.resume_from
            )  # DeepSpeed's loader unpickles: this run's checkpoints only
            self.changes = check_resume_config(cfg, self.resume_from, state["step"])
            check_batch_continues(state, self.layout.micro_batches_per_step, self.resume_from)
        self.finished_at = finished_step(cfg, self.run_dir, state["step"] if state else None)
        if self.finished_at is not None:
            return False
        if lora.enabled(cfg):  # a frozen base with adapters (training/model/lora.py)
            model = lora.build_policy(cfg, self.tokenizer, self.device, t.seed, self.resume_from)
            self.base_identity = lora.base_identity(cfg)  # once: a local base's content hash
            if self.world.main:
                trained, total = lora.trainable_count(model)
                log.info("LoRA r=%d: %d of %d parameters train", cfg.model.lora.r, trained, total)
        else:
            model = build_model(
                cfg.model, self.tokenizer, self.device, t.seed, source=self.resume_from
            )
        if cfg.rung.activation_checkpointing:  # recompute each layer's activations in backward
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        if t.compile:
            compile_layers(model)
        self.stream, truncated = self.recipe.build_stream(
            cfg, self.tokenizer, self.layout.micro_batch_tokens, t.seed
        )
        if truncated and main:
            log.warning(
                "%d of %d examples were longer than data.max_seq_len=%d and were truncated",
                truncated,
                len(self.stream.docs),
                cfg.data.max_seq_len,
            )
        o = cfg.optim

        def make_optimizer(params):
            return torch.optim.AdamW(
                [p for p in params if p.requires_grad],  # LoRA: the adapters only
                lr=effective_lr(cfg),
                betas=(o.beta1, o.beta2),
                eps=o.eps,
                weight_decay=o.weight_decay,
            )

        self.engine = make_engine(cfg, model, make_optimizer, self.world, self.layout)
        self.scheduler = make_scheduler(cfg, self.engine.torch_optimizer)
        self.model = model  # the Hugging Face model (FSDP2 shards it in place)
        # LoRA's frozen base costs 4 FLOPs per parameter and token, not 6 (training/model/flops.py)
        self.matmuls = lora.matmuls(
            shape_of(model.config, model.get_input_embeddings().num_embeddings), cfg
        )
        self.n_matmul = self.matmuls.policy  # a forward pass's products, adapters included
        self.start_step, self.tokens_seen = 0, 0
        if state is not None:
            # its own watchdog window: DeepSpeed may first convert the checkpoint (another world size)
            self.callbacks.phase(f"loading {self.resume_from}", setup=True)
            self.engine.load(state, self.resume_from)
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            self.start_step, self.tokens_seen = state["step"], state["tokens_seen"]
            if (
                self.changes.math
            ):  # allowed (trainer.allow_config_change): the new settings from the next step
                self.scheduler = continue_schedule(
                    cfg, self.engine.torch_optimizer, self.start_step, make_scheduler
                )
                if main:
                    log.warning(
                        "applying config changes from step %d on (trainer.allow_config_change=true): %s",
                        self.start_step + 1,
                        "; ".join(map(str, self.changes.math)),
                    )
            if main:
                log.info(
                    "resumed from %s (step %d, saved by %s on %d process(es))",
                    self.resume_from,
                    self.start_step,
                    state.get("engine"),
                    state.get("world_size", 1),
                )
        created = main and open_run_dir(
            self.run_dir,
            cfg,
            invocation(
                sys.argv,
                git_commit(),
                self.world.size,
                cfg.rung.engine.value,
                self.resume_from,
                self.start_step if state is not None else None,
                self.changes,
            ),
        )
        try:
            self.open_outputs()
        except BaseException:
            if created:  # a brand-new run that never started: no empty folder left behind
                remove_if_unstarted(self.run_dir)
            raise
        return True

    def open_outputs(self) -> None:
        self.recipe.prepare(self)  # e.g. DPO's reference log-probs, before the first step
        if self.world.main:
            self.log_layout()
        self.callbacks.run_start()  # metrics.jsonl, W&B, heartbeat, progress, eval on save
        self.signals.install()

    def log_layout(self) -> None:
        """The start-up line: the engine, the world and the batch."""
        t, lay = self.cfg.trainer, self.layout
        # RL: the recipe sets the batch, in answers (validate.rl_batch_layout)
        if lay.answers_per_step:
            log.info(
                "run %s: engine %s on %d process(es), %d steps of %d answers (%d micro-batches of at most %d "
                "answers and %d tokens = accum %d x dp %d), lr %.2e",
                t.run_name,
                self.engine.name,
                self.world.size,
                t.max_steps,
                lay.answers_per_step,
                lay.micro_batches_per_step,
                lay.answers_per_micro_batch,
                lay.micro_batch_tokens,
                lay.grad_accum,
                lay.dp,
                effective_lr(self.cfg),
            )
        else:
            log.info(
                "run %s: engine %s on %d process(es), %d steps of %d tokens (%d micro-batches of %d tokens "
                "= accum %d x dp %d), lr %.2e",
                t.run_name,
                self.engine.name,
                self.world.size,
                t.max_steps,
                lay.global_batch_tokens,
                lay.micro_batches_per_step,
                lay.micro_batch_tokens,
                lay.grad_accum,
                lay.dp,
                effective_lr(self.cfg),
            )

    @property
    def stop_signal(self) -> str | None:
        """The signal that stops the run after the current step (training/run/stop_signals.py)."""
        return self.signals.name

    @stop_signal.setter
    def stop_signal(self, name: str | None) -> None:
        self.signals.name = name

    # ---- one optimizer step ------------------------------------------------------------
    def micro_batches(self, step: int) -> list[dict]:
        """This rank's micro-batches for `step` (1-based): a slice of a global, rank-free order."""
        per_step, accum = self.layout.micro_batches_per_step, self.layout.grad_accum
        first = (step - 1) * per_step + self.world.rank * accum
        return [self.stream.micro_batch(first + j) for j in range(accum)]

    def train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        faults.maybe("hang_at", step)
        host = self.micro_batches(step)
        # The step's counts come from the host's tensors, before anything reaches the device, and
        # cross the ranks in one all-reduce; the loss and statistics stay on the device until one
        # more after the backward passes (issue #14: each .item() stalls the GPU).
        c, mm = self.model.config, self.matmuls
        shape = (c.num_hidden_layers, c.hidden_size)
        n_units, n_trained, n_processed, flops, ref_flops = distributed.all_sum_many(
            [
                sum(self.recipe.count(b) for b in host),
                sum(int((b["labels"] != IGNORE).sum()) for b in host),
                sum(b["input_ids"].numel() for b in host),
                sum(train_flops(mm.policy, *shape, b["doc_lens"], mm.frozen) for b in host),
                # a live reference (DPO, precompute=false) is one forward of the base per token
                sum(forward_flops(mm.base, *shape, b["doc_lens"]) for b in host)
                if self.recipe.reference_in_loss and self.recipe.reference_model is not None
                else 0.0,
            ],
            self.device,
        )
        if n_units == 0 or n_trained == 0:
            raise TrainingError(
                f"step {step} has no trained tokens: check the data's assistant turns"
            )
        batches = [
            {
                k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v)
                for k, v in b.items()
            }
            for b in host
        ]
        t1 = time.perf_counter()
        self.engine.module.train()
        # Every engine averages gradients over ranks; scaling by world / units makes the result the
        # mean over all loss units (tokens for SFT, pairs for DPO) of the step.
        scale = self.world.size / n_units
        loss_sum, stat_sums = 0.0, {}
        for i, b in enumerate(batches):
            with self.engine.accumulate(last=i == len(batches) - 1):
                with self.engine.autocast():
                    loss, stats = self.recipe.loss_sum(self.engine.module, b)
                if faults.maybe("nan_at", step):
                    loss = loss * float("nan")
                self.engine.backward(loss * scale)
            loss_sum = loss_sum + loss.detach().double()
            for k, v in stats.items():
                stat_sums[k] = stat_sums.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v)
        per_source = stat_sums.pop(
            "data/per_source", None
        )  # a mixture's per-source sums (training/data/mixture.py)
        keys = sorted(stat_sums)
        sums = distributed.all_sum_many(
            [loss_sum]
            + [stat_sums[k] for k in keys]
            + ([per_source] if per_source is not None else []),
            self.device,
        )
        t2 = (
            time.perf_counter()
        )  # after the transfer, which waits for the device's forward and backward
        loss_value = sums[0] / n_units
        extra = {k: sums[1 + i] / n_units for i, k in enumerate(keys)}
        if per_source is not None:
            from training.data.mixture import source_metrics

            extra.update(source_metrics(sums[1 + len(keys) :], self.stream.source_names))
        if self.cfg.trainer.stop_on_nonfinite and not math.isfinite(loss_value):
            last = latest_checkpoint(self.run_dir)
            if self.store is not None:  # what resume would use
                last_step = self.store.latest_step()
                last = self.store.step_url(last_step) if last_step is not None else None
            raise TrainingError(
                f"the loss is {loss_value} at step {step}; stopping before the update. The "
                f"last good checkpoint is {last or 'none (no checkpoint yet)'}"
            )
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = self.engine.step(self.cfg.optim.max_grad_norm)
        self.scheduler.step()
        after_update = getattr(self.stream, "after_update", None)
        if after_update is not None:  # GRPO's separate generator ranks get the new weights
            after_update(step)
        t3 = time.perf_counter()
        self.tokens_seen += int(n_trained)
        # A batch source may report metrics of its own for the step and the FLOPs it spent making the
        # batches (GRPO: rollouts sampled from the current weights), which count toward MFU.
        source = self.stream.step_metrics(step)
        flops += source.pop("flops", 0.0)
        flops += ref_flops
        dt = t3 - t0
        if self.reference_pass is not None:
            # The reference pass, spread over the run's steps: throughput counting it honestly.
            ref_s = self.reference_pass["seconds"] / self.cfg.trainer.max_steps
            extra.update(
                ref_cached=self.reference_pass["cached"],
                tokens_per_s_with_ref=n_processed / (dt + ref_s) / self.world.size,
                mfu_with_ref=mfu(
                    flops + self.reference_pass["flops"] / self.cfg.trainer.max_steps,
                    dt + ref_s,
                    self.cfg.rung.peak_flops_per_device,
                    self.world.size,
                ),
            )
        return {
            **extra,
            **source,
            "step": step,
            "loss": loss_value,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": self.tokens_seen,
            "tokens_per_s": n_processed / dt / self.world.size,
            "mfu": mfu(flops, dt, self.cfg.rung.peak_flops_per_device, self.world.size),
            "step_time_s": dt,
            "data_time_s": t1 - t0,
            "fwd_bwd_time_s": t2 - t1,
            "optim_time_s": t3 - t2,
            "goodput": n_trained / n_processed,
            "peak_mem_gb": peak_memory_gb(self.device),
            "epoch": self.stream.epoch_of((step - 1) * self.layout.micro_batches_per_step),
        }

    # ---- checkpoints and evals ---------------------------------------------------------
    def save(self, step: int) -> None:
        """Every rank calls this: gathering the state and sharded saves are collectives."""
        self.callbacks.phase(f"saving step {step}", setup=True)
        tmp = staging_dir(self.run_dir, step)
        if self.world.main:
            fresh_dir(tmp)  # a leftover, or a link planted under its name, goes first
        distributed.barrier()
        if lora.enabled(self.cfg):
            # sharded engines gather the adapter onto rank 0 (a collective); single and ddp hold it
            adapter = self.engine.adapter_state()
            if self.world.main:
                lora.save_adapter(self.model, tmp, self.base_identity, self.cfg, adapter)
            merged = lora.merged_steps(self.cfg)
            if merged == "every" or (merged == "final" and step == self.cfg.trainer.max_steps):
                self.engine.save_merged(tmp, self.model, adapter, self.tokenizer)  # a collective
        else:
            self.engine.save_model(tmp, self.model)  # sharded engines gather one tensor at a time
        optimizer_state = self.engine.optimizer_state()
        self.engine.save_sharded(tmp)
        distributed.barrier()
        if self.world.main:
            state = {
                "step": step,
                "tokens_seen": self.tokens_seen,
                "optimizer": optimizer_state,
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(),
                "data": {
                    "next_micro_batch": step * self.layout.micro_batches_per_step,
                    "micro_batches_per_step": self.layout.micro_batches_per_step,
                },
                "engine": self.engine.name,
                "world_size": self.world.size,
            }
            write_checkpoint(tmp, step, self.tokenizer, state, self.cfg)
            # e.g. evaluations still to run, and the steps trainer.average_last will average
            pending = (*self.callbacks.keep_steps(), *self.average_steps)
            ckpt = commit_checkpoint(
                tmp, self.run_dir, step, self.cfg.trainer.keep_last, protect=(0, *pending)
            )
            url = None
            if self.store is not None:  # the local copy stays: evaluation and W&B read it
                self.callbacks.phase(f"uploading step {step}", setup=True)
                url = self.store.upload(ckpt, step)
                self.store.prune(self.cfg.trainer.keep_last, protect=(0, *pending), newest=step)
                log.info("uploaded checkpoint %s", url)
            self.result.checkpoints.append(ckpt)
            log.info("saved checkpoint %s", ckpt)
            self.callbacks.checkpoint_saved(step, ckpt, url)
        distributed.barrier()

    def write_average(self) -> None:
        """trainer.average_last=K: the average of the last K scheduled checkpoints, written once
        training is done and handed to the callbacks (evaluated and registered like a save)."""
        from training.run.average import average_last

        steps = self.average_steps
        self.callbacks.phase(f"averaging steps {', '.join(map(str, steps))}", setup=True)
        ckpt = average_last(self.run_dir, self.cfg, self.store.fetch if self.store else None)
        self.result.average = ckpt.resolve()
        log.info("saved the average of steps %s as %s", ", ".join(map(str, steps)), ckpt)
        self.callbacks.average_saved(steps[-1], ckpt)

    def record_eval(self, step: int, ckpt: Path, res: dict) -> None:
        """A checkpoint's evaluation came back (from the eval callback): recorded in the result,
        handed to the callbacks (W&B) and copied beside the checkpoint's upload."""
        if self.result.average is not None and Path(ckpt).resolve() == self.result.average:
            self.result.average_evals = res["scores"]
        else:
            self.result.evals[step] = res["scores"]
        self.callbacks.eval(step, ckpt, res)
        if self.store is not None:  # the scores written into the local copy go to the URL too
            try:
                self.store.upload_dir(ckpt, step, "eval")
            except Exception as e:  # losing a copy of the scores must not stop training
                log.warning("could not upload the eval results of step %d: %s", step, e)
        log.info(
            "eval at step %d: %s", step, ", ".join(f"{k}={v:.1f}" for k, v in res["scores"].items())
        )

    # ---- the loop ----------------------------------------------------------------------
    def run(self) -> RunResult:
        self.exit_code = 1
        if self.is_generator:  # a generator rank: no loop, no checkpoints, no callbacks
            from training.rl.async_rollouts import run_generator

            run_generator(self)
            self.exit_code = 0
            return RunResult(run_dir=self.run_dir)
        try:
            return self._run()
        finally:  # however the run ended (refused in set-up, finished, failed): its callbacks end with it
            self.signals.restore()
            self.callbacks.run_end(self.exit_code)

    def _run(self) -> RunResult:
        t, main = self.cfg.trainer, self.world.main
        if not self.setup():
            if self.generator_ranks:
                from training.rl.async_rollouts import tell_generators_finished

                tell_generators_finished(self)
            if main:
                log.warning(
                    finished_message(
                        t.run_name,
                        self.finished_at,
                        t.max_steps,
                        "nothing trained and nothing written",
                    )
                )
            distributed.shutdown()
            self.exit_code = 0
            return RunResult(run_dir=self.run_dir, finished_before=self.finished_at)
        try:
            if self.start_step == 0 and self.save_initial:
                self.save(0)
            for step in range(self.start_step + 1, t.max_steps + 1):
                self.callbacks.phase(f"step {step}")
                m = self.train_step(step)
                self.callbacks.step_end(step, m)  # metrics.jsonl, W&B, heartbeat, bar, evals
                self.result.final_loss = m["loss"]
                stop = distributed.any_rank(self.stop_signal is not None, self.device)
                if step % t.save_every == 0 or step == t.max_steps or stop:
                    self.save(step)
                if stop and step < t.max_steps and self.signals.interrupted:
                    self.leave_group()
                    self.callbacks.train_end("interrupted", f"Ctrl-C after step {step}")
                    raise Interrupted(
                        f"interrupted by Ctrl-C after step {step} of {t.max_steps}; checkpointed "
                        f"in {self.run_dir}; the same command resumes from step {step}"
                    )
                if stop and step < t.max_steps:
                    self.leave_group()
                    self.callbacks.train_end(
                        "preempted", f"{self.stop_signal or 'signal'} at step {step}"
                    )
                    raise Preempted(
                        f"stopped by {self.stop_signal or 'a signal on another rank'} after step "
                        f"{step}; checkpointed, resume with the same command"
                    )
            self.leave_group()
            if main and self.average_steps:  # rank 0 alone: it committed the checkpoints
                self.write_average()
            self.exit_code = 0
            self.signals.allow_ctrl_c()  # what is left (waiting for evaluations) stops at once
            if main:  # completed first: the job's hours end with training, not with its evaluations
                self.callbacks.phase("finishing the run", setup=True)
                self.callbacks.train_end("completed")  # the eval callback waits for the rest
        except (Preempted, Interrupted):
            self.exit_code = 0
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, in the middle of a step
            if self.exit_code == 0:  # an interrupted wait for evals leaves the training completed
                raise
            last = latest_checkpoint(self.run_dir)
            since = f"since {last.name}" if last is not None else "since the start"
            self.callbacks.train_end("interrupted", f"a second Ctrl-C: stopped at once {since}")
            raise Interrupted(
                f"stopped at once by a second Ctrl-C; the steps {since} are lost; the same "
                f"command resumes from {last.name if last is not None else 'the start'}"
            ) from None
        except BaseException as e:
            if self.exit_code != 0:
                self.callbacks.train_end("failed", f"{type(e).__name__}: {e}"[:500])
            raise
        finally:
            distributed.shutdown()  # after an error (no barrier); a no-op after leave_group
        return self.result

    def leave_group(self) -> None:
        """Every learner is here, after the last save (or the save a stop made): release the
        DeepSpeed engines and leave the process group together, with a barrier, before rank 0 goes
        on alone (the checkpoint average, waiting for evaluations) and the others exit. A rank that
        tore the group down while another still used it, or left ZeRO-3 engines to the garbage
        collector at interpreter exit, aborted now and then (SIGABRT after a clean finish)."""
        close_engines()
        distributed.shutdown(clean=True)


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Train with the default callbacks and these; launch.train.train adds the eval callback."""
    return Trainer(cfg, callbacks=callbacks).run()


if __name__ == "__main__":
    # The command older launch scripts run (a requeued SLURM job reruns its script): the same
    # process becomes `python -m launch.train`, the entry that adds evals/ to the trainer. Run by
    # name, not imported: training never imports launch or evals.
    os.execv(sys.executable, [sys.executable, "-m", "launch.train", *sys.argv[1:]])
