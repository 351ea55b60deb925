"""Training engines: how the model is wrapped, how gradients are synchronised, how state is saved.

    engine = make_engine(cfg, model, make_optimizer, world, layout)
    for i, batch in enumerate(micro_batches):
        with engine.accumulate(last=i == len(micro_batches) - 1):
            engine.backward(recipe.loss_sum(engine.module, batch) * scale)
    grad_norm = engine.step(max_grad_norm)

rung.engine picks one: single (one process), ddp (torch DDP), fsdp2 (torch `fully_shard`
per decoder layer), deepspeed_zero2 / deepspeed_zero3 (`deepspeed.initialize`, optional CPU
offload for ZeRO-3). Sharding is theirs, not ours. Every engine averages gradients over the
data-parallel ranks, so the loop scales each rank's summed loss by world_size / tokens.

Checkpoints: single, ddp and fsdp2 save a full (unsharded) model and optimizer state keyed by
parameter name (torch.distributed.checkpoint.state_dict), so any of them resumes on any world
size. DeepSpeed saves its own sharded state (engine.save_checkpoint) beside the Hugging Face
weights; on another world size it is first converted, once, into DeepSpeed's universal
checkpoint (ckpt/deepspeed/universal) and loaded from there. DeepSpeed's loader unpickles, so it
reads only a checkpoint this run saved (training/run/checkpoint.py, origin_problem), unless
trainer.trust_checkpoint=true. The Hugging Face weights of the sharded engines (fsdp2,
deepspeed_zero3) are gathered one tensor at a time and streamed into the safetensors files
(training/engine/consolidate.py), so no rank ever holds the whole model to write them.
With LoRA (a PeftModel) the same gathers give rank 0 the adapter's tensors, and the merged weights
stream base tensor by base tensor with the adapter's delta added (training/engine/lora_sharded.py).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from training.common.errors import CheckpointError
from training.common.safe_files import write_atomic
from training.engine import distributed
from training.engine.consolidate import write_streamed
from training.engine.distributed import World

log = logging.getLogger("ladder.engine")
DS_DIR = "deepspeed"
UNIVERSAL_TAG = "universal"  # ckpt/deepspeed/universal: the state converted for another world size
_trusted_noted: set[str] = set()
# Every DeepSpeed engine this process built (the policy's and a frozen reference's), so the end of
# a run can release them while the interpreter and the process group are still alive.
_DS_ENGINES: list[weakref.ref] = []


class EngineBackend:
    """The running engine of the enum rung.engine (training/config/schema.py: Engine): this base is
    `single`, one process, no wrapper; the others override what differs."""

    name = "single"
    sharded_state = False  # True when the engine writes its own per-rank state into the checkpoint

    def __init__(self, model, make_optimizer: Callable, world: World, cfg, layout):
        self.model, self.world, self.cfg = model, world, cfg
        self.module = self.wrap(model)
        self.optimizer = make_optimizer(self.module.parameters())
        self.torch_optimizer = self.optimizer  # what the LR scheduler drives

    def wrap(self, model):
        return model

    def accumulate(self, last: bool):
        return contextlib.nullcontext()

    def autocast(self):
        """bf16 compute for engines whose wrapper does not own precision (single, ddp)."""
        return torch.autocast(
            self.cfg.rung.device, dtype=torch.bfloat16, enabled=bool(self.cfg.rung.bf16)
        )

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self, max_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
        if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
            norm = norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    # ---- state ----------------------------------------------------------------------
    def _opts(self, loading: bool = False) -> StateDictOptions:
        distributed_ = self.world.size > 1
        return StateDictOptions(
            full_state_dict=True,
            cpu_offload=distributed_,
            # torch broadcasts over the whole job; with generator ranks every learner loads its own
            broadcast_from_rank0=loading and distributed_ and distributed.learner_group() is None,
        )

    def model_state(self) -> dict | None:
        """The full model state dict on rank 0 (None elsewhere). A collective: every rank calls it."""
        sd = get_model_state_dict(self.module, options=self._opts())
        return sd if self.world.main else None

    def save_model(self, tmp: Path, model) -> None:
        """Write the Hugging Face weights and config into tmp. A collective: every rank calls it,
        rank 0 writes. Unsharded engines hold the whole model anyway: save_pretrained it."""
        sd = self.model_state()
        if self.world.main:
            model.save_pretrained(tmp, state_dict=sd, safe_serialization=True)

    def tensors(self) -> tuple[dict, Callable[[str], torch.Tensor | None]]:
        """The module's tensors by name, as {name: (full shape, dtype)}, and fetch(name): the full
        tensor on rank 0 (None elsewhere). Under the sharded engines fetch is a collective that every
        rank calls for the same names in the same order; here every rank holds them whole."""
        sd = self.model.state_dict()
        main = self.world.main
        return {n: (tuple(t.shape), t.dtype) for n, t in sd.items()}, (
            lambda name: sd[name].detach().cpu() if main else None
        )

    def adapter_state(self) -> dict | None:
        """LoRA: the adapter's full tensors (the trainable ones, by the PeftModel's names) on rank
        0, None elsewhere; a collective. None here: single and ddp hold the adapter whole, and peft
        reads it from the model."""
        return None

    def save_merged(self, tmp: Path, model, adapter: dict | None, tokenizer) -> None:
        """LoRA: the merged Hugging Face weights in tmp/merged/ (a collective; rank 0 writes)."""
        from training.model import lora

        if self.world.main:
            lora.save_merged(model, tmp, tokenizer)

    def optimizer_state(self) -> dict | None:
        if not self.torch_optimizer.state:
            # Before the first step there is no state to save, and get_optimizer_state_dict would
            # create it by running a zero-lr step, which advances Adam's step count and so changes
            # every later update (the untrained step-0 checkpoint must not alter the run).
            return {"empty": True} if self.world.main else None
        sd = get_optimizer_state_dict(self.module, self.optimizer, options=self._opts())
        return sd if self.world.main else None

    def save_sharded(self, tmp: Path) -> None:
        pass

    def load(self, state: dict, ckpt: Path) -> None:
        opt = state.get("optimizer")
        if opt == {"empty": True}:  # saved before the first step: a fresh optimizer is the same
            return
        if opt is None:
            raise CheckpointError(
                f"{ckpt} holds no full optimizer state (it was saved by "
                f"{state.get('engine')}); resume it with rung.engine={state.get('engine')}"
            )
        set_optimizer_state_dict(
            self.module,
            self.optimizer,
            optim_state_dict=opt
            if self.world.main or self.world.size == 1 or distributed.learner_group() is not None
            else {},
            options=self._opts(loading=True),
        )


class DDPEngine(EngineBackend):
    name = "ddp"

    def wrap(self, model):
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.world.local_rank] if self.cfg.rung.device == "cuda" else None
        # the learners only, when some ranks only generate (generator.placement=separate)
        return DDP(model, device_ids=ids, process_group=distributed.learner_group())

    def accumulate(self, last: bool):
        # Skip the all-reduce on all but the last micro-batch of a step.
        return contextlib.nullcontext() if last else self.module.no_sync()


class FSDP2Engine(EngineBackend):
    name = "fsdp2"

    def wrap(self, model):
        from torch.distributed.fsdp import MixedPrecisionPolicy

        mp = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if self.cfg.rung.bf16
            else MixedPrecisionPolicy()
        )
        return fsdp2_shard(model, self.cfg.rung.device, self.world.size, mp)

    def accumulate(self, last: bool):
        hf_model(self.module).set_requires_gradient_sync(last)  # the root that fsdp2_shard made
        return contextlib.nullcontext()

    def autocast(self):
        return contextlib.nullcontext()  # MixedPrecisionPolicy casts parameters

    def tensors(self):
        # The local shards, by their unsharded names (no communication); each is gathered in
        # turn, in the same order on every rank, only when it is needed.
        from torch.distributed.tensor import DTensor

        sd = self.module.state_dict()
        main = self.world.main

        def fetch(name: str):
            t = sd[name]
            full = t.full_tensor() if isinstance(t, DTensor) else t  # an all-gather of one tensor
            return full.detach().cpu() if main else None

        return {n: (tuple(t.shape), t.dtype) for n, t in sd.items()}, fetch

    def save_model(self, tmp: Path, model) -> None:
        specs, fetch = self.tensors()
        write_streamed(
            tmp,
            model,
            specs,
            fetch,
            self.world.main,
            total_parameters=sum(p.numel() for p in model.parameters()),
        )  # DTensor numel is global

    def adapter_state(self) -> dict | None:
        from training.engine.lora_sharded import gather_adapter

        return gather_adapter(self.model, *self.tensors(), self.world.main)

    def save_merged(self, tmp: Path, model, adapter: dict | None, tokenizer) -> None:
        from training.engine.lora_sharded import write_merged

        write_merged(tmp, model, *self.tensors(), adapter, tokenizer, self.world.main)


class DeepSpeedEngine(EngineBackend):
    sharded_state = True

    def __init__(self, model, make_optimizer, world, cfg, layout, stage: int):
        import deepspeed

        self.model, self.world, self.cfg, self.stage = model, world, cfg, stage
        self.name = f"deepspeed_zero{stage}"
        zero = {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True}
        if cfg.rung.offload:
            zero["offload_optimizer"] = {"device": "cpu"}
            zero["offload_param"] = {"device": "cpu"}
        ds_config = {
            "train_micro_batch_size_per_gpu": 1,  # one packed row of micro_batch_tokens
            "gradient_accumulation_steps": layout.grad_accum,
            "train_batch_size": layout.grad_accum * world.size,
            "gradient_clipping": cfg.optim.max_grad_norm,
            "zero_optimization": zero,
            "bf16": {"enabled": bool(cfg.rung.bf16)},
            # A torch AdamW, not DeepSpeed's: its CPU Adam compiles for ~50 s.
            "zero_allow_untested_optimizer": True,
            "zero_force_ds_cpu_optimizer": False,
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }
        # The scheduler drives the torch optimizer; ZeRO's wrapper shares its param_groups.
        self.torch_optimizer = make_optimizer(model.parameters())
        self.module, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=self.torch_optimizer, config=ds_config
        )
        _DS_ENGINES.append(weakref.ref(self.module))

    def autocast(self):
        return contextlib.nullcontext()  # DeepSpeed's bf16 section owns precision

    def backward(self, loss: torch.Tensor) -> None:
        self.module.backward(loss, scale_wrt_gas=False)  # the loop already normalised the loss
        self.module.step()  # DeepSpeed steps the optimizer only at the accumulation boundary

    def step(self, max_norm: float) -> float:
        norm = self.module.get_global_grad_norm()  # clipping is DeepSpeed's (gradient_clipping)
        return float(norm) if norm is not None else float("nan")

    def model_state(self) -> dict | None:
        if self.stage == 3:
            raise NotImplementedError(
                "ZeRO-3 weights are streamed by save_model, never gathered whole"
            )
        return (
            {k: v.detach().cpu() for k, v in self.module.module.state_dict().items()}
            if self.world.main
            else None
        )

    def tensors(self):
        if self.stage != 3:
            return super().tensors()  # ZeRO-2 partitions gradients and Adam, not the weights
        import deepspeed

        # ZeRO-3 partitions every parameter (p.ds_shape is its full shape). Each is gathered in
        # turn (on every rank, as GatheredParameters requires), used by rank 0 and released,
        # instead of building the whole state dict on rank 0 first.
        params = dict(self.module.module.named_parameters())
        main = self.world.main

        def fetch(name: str):
            p = params[name]
            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                return p.detach().to("cpu", copy=True) if main else None

        return {n: (tuple(p.ds_shape), p.dtype) for n, p in params.items()}, fetch

    def save_model(self, tmp: Path, model) -> None:
        if self.stage != 3:
            return super().save_model(tmp, model)
        specs, fetch = self.tensors()
        write_streamed(
            tmp,
            model,
            specs,
            fetch,
            self.world.main,
            total_parameters=sum(p.ds_numel for p in self.module.module.parameters()),
        )

    def adapter_state(self) -> dict | None:
        from training.engine.lora_sharded import gather_adapter

        return gather_adapter(self.model, *self.tensors(), self.world.main)

    def save_merged(self, tmp: Path, model, adapter: dict | None, tokenizer) -> None:
        # DeepSpeed's module carries its hooks and partitioned parameters: merged weights are
        # streamed from its tensors rather than from a deep copy of it
        from training.engine.lora_sharded import write_merged

        write_merged(tmp, model, *self.tensors(), adapter, tokenizer, self.world.main)

    def optimizer_state(self) -> dict | None:
        return None  # saved sharded by save_sharded

    def save_sharded(self, tmp: Path) -> None:
        # LoRA: the frozen base is rebuilt from its source on resume; only the adapter is state
        self.module.save_checkpoint(
            str(tmp / DS_DIR),
            tag="state",
            save_latest=False,
            exclude_frozen_parameters=self._frozen_base(),
        )

    def _frozen_base(self) -> bool:
        return any(not p.requires_grad for p in self.model.parameters())

    def load(self, state: dict, ckpt: Path) -> None:
        if state.get("engine") != self.name:
            raise CheckpointError(
                f"{ckpt} was saved by {state.get('engine')} on {state.get('world_size')} process(es); "
                f"{self.name} resumes its sharded state only from the same engine "
                f"(rung.engine={state.get('engine')})"
            )
        check_origin(
            self.cfg, state, ckpt
        )  # before anything reads the DeepSpeed files, the converter included
        tag = "state"
        if state.get("world_size") != self.world.size:
            # ZeRO's optimizer state is partitioned by data-parallel rank, so a plain load needs the
            # saving world size. DeepSpeed's universal checkpoint stores it per parameter instead:
            # convert once, then load it with the load_universal option.
            tag = self._universal(ckpt)
        # load_universal is read only by load_checkpoint (never at initialize), so it is set here,
        # where we know whether the world size changed, rather than in the config at initialize.
        self.module._config.load_universal_checkpoint = tag == UNIVERSAL_TAG
        try:
            self.module.load_checkpoint(
                str(ckpt / DS_DIR),
                tag=tag,
                load_optimizer_states=True,
                load_lr_scheduler_states=False,
                # LoRA's checkpoint holds the trainable parameters only (save_sharded)
                load_module_strict=not self._frozen_base(),
            )
        finally:
            self.module._config.load_universal_checkpoint = False

    def _universal(self, ckpt: Path) -> str:
        """ckpt/deepspeed/universal, made by deepspeed.checkpoint.ds_to_universal if not there yet.
        Local rank 0 converts (once per node: the checkpoint may be a per-node copy) while the other
        ranks wait. It writes to a temporary name and renames, so a killed conversion is never loaded
        (its leftover .tmp- folder is ignored); on a shared file system a node that finds the folder
        renamed into place first keeps that one."""
        import os
        import shutil
        import subprocess
        import sys
        import uuid

        from training.engine import distributed

        ds_dir = ckpt / DS_DIR
        final = ds_dir / UNIVERSAL_TAG
        if self.world.local_rank == 0 and not final.is_dir():
            tmp = ds_dir / f".tmp-{UNIVERSAL_TAG}-{uuid.uuid4().hex[:8]}"
            log.info(
                "%s was saved on another world size: converting it to a universal checkpoint in %s",
                ckpt,
                final,
            )
            # DeepSpeed's own command line, in a separate process: the converter forks its workers
            # and needs no process group. --inject_missing_state: a plain (non-Megatron) model
            # records no universal-checkpoint info in the ZeRO-2 state, and needs none.
            workers = max(
                1, min(4, (os.cpu_count() or 2) // 2)
            )  # its pools only add overhead on a small host
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "deepspeed.checkpoint.ds_to_universal",
                    "--input_folder",
                    str(ds_dir / "state"),
                    "--output_folder",
                    str(tmp),
                    "--inject_missing_state",
                    "--num_extract_workers",
                    str(workers),
                    "--num_merge_workers",
                    str(workers),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise CheckpointError(
                    f"converting {ds_dir / 'state'} to a DeepSpeed universal checkpoint failed "
                    f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}"
                )
            try:
                os.rename(tmp, final)
            except OSError:  # another node renamed its copy into place first
                if not final.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
            # the converter points latest_universal at its output folder, i.e. the temporary name
            write_atomic(ds_dir / "latest_universal", UNIVERSAL_TAG)
        distributed.barrier()
        return UNIVERSAL_TAG


def check_origin(cfg, state: dict, ckpt: Path) -> None:
    """DeepSpeed's loader unpickles its files (torch.load(weights_only=False)), so a DeepSpeed engine
    loads only a DeepSpeed state this run wrote: one whose COMPLETE carries an HMAC under the run
    folder's secret key (checkpoint.origin_problem), or any with trainer.trust_checkpoint=true. The
    trainer calls this as soon as the trainer state is read, so a refusal comes before the model is
    built; DeepSpeedEngine.load calls it again beside the loader. Every rank checks; if any refuses, all
    do (a lone rank going on into the loader's collectives would wait forever). Other engines unpickle
    nothing: the trainer state is read with weights_only=True."""
    engine = cfg.rung.engine.value
    if not engine.startswith("deepspeed") or state.get("engine") != engine:
        return  # DeepSpeedEngine.load refuses another engine's checkpoint before reading anything
    from training.engine import distributed
    from training.run.checkpoint import origin_problem

    t = cfg.trainer
    trusted = bool(t.get("trust_checkpoint", False))
    problem = None if trusted else origin_problem(ckpt, Path(t.run_root) / t.run_name)
    if distributed.any_rank(problem is not None, cfg.rung.device):
        raise CheckpointError(
            f"{Path(ckpt) / DS_DIR} is not from this run ({problem or 'another rank found so'}). DeepSpeed's loader "
            "unpickles these files, which runs any code their writer put in them, so Ladder loads a DeepSpeed "
            "state only from a checkpoint this run saved. If you trust whoever wrote it, accept it with "
            "trainer.trust_checkpoint=true"
        )
    if trusted and distributed.env_world().main and str(ckpt) not in _trusted_noted:
        _trusted_noted.add(str(ckpt))  # once, though the trainer and the engine both ask
        log.warning(
            "trainer.trust_checkpoint=true: loading %s without checking who wrote it",
            Path(ckpt) / DS_DIR,
        )


def fsdp2_shard(
    model, device: str, world_size: int, mp=None, reshard_after_forward: bool | None = None
):
    """`fully_shard` per decoder layer (one all-gather unit each) and at the root, in place. Parameters
    still on another device (a model built on the CPU) are moved to `device` one unit at a time, as
    each is sharded, so no device ever holds the whole model. reshard_after_forward=None is FSDP2's
    default (the root stays gathered after forward, for the backward that follows)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    group = distributed.learner_group()
    if group is not None:  # some ranks only generate: shard over the learners (world_size of them)
        from torch.distributed.device_mesh import DeviceMesh

        mesh = DeviceMesh.from_group(group, device)
    else:
        mesh = init_device_mesh(device, (world_size,))
    mp = mp or MixedPrecisionPolicy()
    # The root is the Hugging Face model, also inside a PeftModel: peft's generate calls the base
    # model's generate, which would bypass a root hook on the PeftModel and find the embeddings,
    # the final norm and the LM head still sharded.
    root = hf_model(model)
    for layer in root.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    fully_shard(root, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    return model


def hf_model(model):
    """The Hugging Face model: `model` itself, or the one a peft model (LoRA) wraps."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def wrap_frozen(cfg, model, world: World, layout):
    """A frozen model beside the policy (the KL or DPO reference), for forward passes only: no
    optimizer, no gradients. Under fsdp2 and deepspeed_zero3 it is sharded like the policy and each
    forward gathers one layer at a time (then frees it), so it costs bytes x params / world per
    device; the other engines hold it whole. It is kept in the dtype it was built in (the caller
    builds it in bf16 when rung.bf16), so no precision policy casts it. Under the sharded engines its
    forward is a collective: every rank must call it the same number of times."""
    model.eval().requires_grad_(False)
    name = cfg.rung.engine.value
    if name == "fsdp2":
        # no backward follows a reference forward: the root is freed after it too
        return fsdp2_shard(model, cfg.rung.device, world.size, reshard_after_forward=True)
    if name != "deepspeed_zero3":
        return model.to(cfg.rung.device)
    import deepspeed

    # An inference config, the shape of TRL's prepare_deepspeed: ZeRO-3 partitioning and nothing that
    # needs an optimizer. The reference's parameters are not offloaded (the planner counts them on
    # the GPU); DeepSpeed asks for a consistent batch size even so.
    ds_config = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": layout.grad_accum,
        "train_batch_size": layout.grad_accum * world.size,
        "zero_optimization": {"stage": 3},
        "bf16": {"enabled": bool(cfg.rung.bf16)},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    engine, *_ = deepspeed.initialize(model=model, config=ds_config)
    _DS_ENGINES.append(weakref.ref(engine))
    engine.eval()
    # Forward through the module: ZeRO-3's gather hooks are on it. The engine must outlive it (its
    # __del__ removes those hooks), so the module holds it, outside nn.Module's registry (the engine
    # is a Module too: registering it would make a cycle of submodules).
    engine.module.__dict__["_ladder_ds_engine"] = engine
    return engine.module


def close_engines() -> None:
    """Release every DeepSpeed engine (its ZeRO-3 hooks and partitioned-parameter bookkeeping)
    now, before the process group goes. Otherwise a frozen reference, which holds its engine in a
    reference cycle, is destroyed by the garbage collector during interpreter shutdown, after the
    process group: a ZeRO-3 DPO run on two ranks then aborted at exit once in a while ("terminate
    called without an active exception", SIGABRT) after a clean finish."""
    if not _DS_ENGINES:
        return  # no DeepSpeed here: nothing to release, and no collection to pay for
    while _DS_ENGINES:
        engine = _DS_ENGINES.pop()()
        if engine is not None:
            engine.destroy()
    gc.collect()


def make_engine(cfg, model, make_optimizer, world: World, layout) -> EngineBackend:
    name = cfg.rung.engine.value
    if name == "single":
        return EngineBackend(model, make_optimizer, world, cfg, layout)
    if name == "ddp":
        return DDPEngine(model, make_optimizer, world, cfg, layout)
    if name == "fsdp2":
        return FSDP2Engine(model, make_optimizer, world, cfg, layout)
    return DeepSpeedEngine(model, make_optimizer, world, cfg, layout, stage=int(name[-1]))
