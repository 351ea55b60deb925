"""Process-group setup and the few collectives the loop needs.

torchrun (or srun, or the deepspeed launcher) sets RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT; one process with none of them set is a world of one and needs no group.
CPU runs use gloo, GPU runs use NCCL.

With generator.placement=separate the job's last K ranks only generate (training/rl/async_rollouts.py):
init(..., generator_ranks=K) also builds the learner-only group, which every helper below and the
engines' data parallelism use (learner_group()), and the link group (learner 0 and the generators)
over which the new weights are broadcast (link_group()). Learner ranks are the job's ranks 0..L-1,
so a learner's rank in its group is its global rank.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_world() -> World:
    return World(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


_GROUPS: dict[str, object] = {}  # "learners", "link": set by init under placement=separate


def init(world: World, device: str, timeout_s: float, generator_ranks: int = 0) -> None:
    """Join the process group (once). The timeout bounds every collective: a rank that hangs
    makes the others fail with an error instead of waiting forever. generator_ranks=K > 0: the
    last K ranks generate only; every rank builds both subgroups (new_group is collective)."""
    if world.size == 1 or dist.is_initialized():
        return
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(world.local_rank)
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend=backend, timeout=timeout)
    if generator_ranks:
        learners = world.size - generator_ranks
        _GROUPS["learners"] = dist.new_group(list(range(learners)), timeout=timeout)
        _GROUPS["link"] = dist.new_group([0, *range(learners, world.size)], timeout=timeout)


def learner_group():
    """The group data parallelism and the loop's collectives run over: None (the whole job)
    unless some ranks only generate."""
    return _GROUPS.get("learners")


def link_group():
    """Learner 0 and the generator ranks (placement=separate), or None."""
    return _GROUPS.get("link")


def shutdown(clean: bool = False) -> None:
    """Leave the process group. clean=True (this rank finished without an error, as every learner
    does after the last save): the learners first meet at a barrier, so none tears the group down
    while another is still using it. After an error there is no barrier: the other ranks may be
    stuck in a collective and would never reach it (torchrun ends them)."""
    if dist.is_initialized():
        if clean:
            barrier()
        _GROUPS.clear()
        dist.destroy_process_group()


def all_sum(value: float, device: str) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=learner_group())
    return float(t.item())


def all_sum_many(values, device: str) -> list[float]:
    """Several sums across ranks in one all-reduce and one transfer to the host. `values` are
    numbers or 0-d/1-d tensors (left on their device until then); the result is flat, in order."""
    parts = [torch.as_tensor(v, dtype=torch.float64).reshape(-1).to(device) for v in values]
    t = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=learner_group())
    return t.tolist()


def any_rank(flag: bool, device: str) -> bool:
    return all_sum(1.0 if flag else 0.0, device) > 0


def broadcast(obj, src: int = 0):
    """Rank src's (picklable) object on every rank: one decision, e.g. the checkpoint to resume from."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=learner_group())
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier(group=learner_group())
