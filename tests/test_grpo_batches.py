"""The RL batch: set by the recipe in answers, split into micro-batches that respect
rung.micro_batch_tokens, the same gradient whatever the split, clear errors, and a plan of RL's memory.

    .venv/bin/python -m pytest -q tests/test_grpo_batches.py
"""

from __future__ import annotations

import copy
import functools
import json
import multiprocessing
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ladder_cli
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from training.common.errors import ConfigError
from training.config.compose import compose
from training.config.validate import batch_layout, validate
from training.engine import distributed
from training.model.flops import model_matmul_params
from training.model.modeling import build_model, load_tokenizer
from training.recipes.losses import losses_of
from training.rl.grpo import GRPO

# "answer in one word": the untrained tiny model's random answers pass about a quarter of the time,
# so groups have mixed rewards and non-zero advantages (a zero gradient would prove nothing)
TOPICS = ["cats", "rain", "boats", "tea", "maps", "snow", "bread", "clocks"]


@pytest.fixture(scope="module")
def rl_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rlvr") / "one_word.jsonl"
    rows = [
        {
            "messages": [{"role": "user", "content": f"Name {t} in one word."}],
            "ground_truth": json.dumps({"type": "max_words", "n": 1}),
            "dataset": "ifeval",
        }
        for t in TOPICS
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@functools.cache
def cfg_for(*extra):
    return compose(["recipe=grpo", "rung=tiny", "generator.max_new_tokens=8", *extra])


def stream_for(
    cfg, dp: int, tmp_path: Path, start_step: int = 0, rank: int = 0, size: int = 1, built=None
):
    """A RolloutStream attached to a stand-in for the trainer: rank-free indices let one process ask
    for every rank's micro-batches, as the ranks of a dp-process job would (or, with size=dp in a
    real process group, for its own rank's). built: a (tokenizer, model) to reuse."""
    tok = load_tokenizer(cfg.model) if built is None else built[0]
    model = build_model(cfg.model, tok, seed=0) if built is None else built[1]
    recipe = GRPO(cfg)
    stream, _ = recipe.build_stream(cfg, tok, cfg.rung.micro_batch_tokens, cfg.trainer.seed)
    shape = SimpleNamespace(
        hidden_size=cfg.model.hidden_size,
        intermediate_size=cfg.model.intermediate_size,
        num_layers=cfg.model.num_layers,
        num_heads=cfg.model.num_heads,
        num_kv_heads=cfg.model.num_kv_heads,
    )
    trainer = SimpleNamespace(
        layout=batch_layout(cfg, dp),
        cfg=cfg,
        model=model,
        run_dir=tmp_path,
        start_step=start_step,
        world=SimpleNamespace(rank=rank, size=size),
        device="cpu",
        n_matmul=model_matmul_params(shape, model.get_input_embeddings().num_embeddings),
    )
    stream.attach(trainer)
    return stream, recipe, model, trainer.layout


def step_batches(stream, layout, step: int = 1) -> list[dict]:
    m = layout.micro_batches_per_step
    return [stream.micro_batch((step - 1) * m + i) for i in range(m)]


@pytest.mark.parametrize(
    "micro, dp, per_micro, accum", [(128, 2, 2, 4), (192, 2, 3, 3), (1024, 1, 16, 1)]
)
def test_micro_batches_never_exceed_micro_batch_tokens(
    tmp_path, rl_data, micro, dp, per_micro, accum
):
    """P=4 prompts x G=4 answers of at most data.max_seq_len=64 tokens, split over dp ranks."""
    cfg = cfg_for(
        f"data.train_files=[{rl_data}]",
        "recipe.prompts_per_step=4",
        "recipe.num_generations=4",
        f"rung.micro_batch_tokens={micro}",
    )
    stream, _, _, layout = stream_for(cfg, dp, tmp_path)
    assert (layout.answers_per_micro_batch, layout.grad_accum, layout.answers_per_step) == (
        per_micro,
        accum,
        16,
    )
    batches = step_batches(stream, layout)
    for b in batches:
        # the tiny rung's SDPA: one padded row per answer, never past the micro-batch's tokens
        assert b["input_ids"].shape[0] == len(b["doc_lens"])
        assert sum(b["doc_lens"]) <= b["input_ids"].numel() <= micro
        assert 1 <= len(b["doc_lens"]) <= per_micro == micro // cfg.data.max_seq_len
        assert len(b["advantages"]) == len(b["weights"]) == len(b["doc_lens"])
    assert sum(len(b["doc_lens"]) for b in batches) == 16, "every answer of the step, once"
    # each rank's micro-batches hold its own prompts' answers only: rank r owns prompts [2r, 2r + 2)
    per_rank = 4 // dp * 4
    for r in range(dp):
        mine = batches[r * accum : (r + 1) * accum]
        assert sum(len(b["doc_lens"]) for b in mine) == per_rank
    # the rollouts enter the step's metrics once per rank, not once per micro-batch
    assert stream.sums["samples"] == 16 and stream.sums["groups"] == 4


@pytest.mark.parametrize("loss", ["grpo", "dr_grpo", "dapo"])
def test_one_step_has_the_same_loss_and_gradient_at_16_or_4_answers_per_micro_batch(
    tmp_path, rl_data, loss
):
    """16 answers in one micro-batch of 1024 tokens (A=16) or in four of 256 (A=4): the same rollouts,
    and, under the loop's rule (each summed loss over the step's units), the same loss and gradient.
    The second pass (ppo_epochs=2) uses the rollout policy's log-probs, recorded per micro-batch."""
    results = {}
    for micro in (1024, 256):
        cfg = cfg_for(
            f"data.train_files=[{rl_data}]",
            "recipe.prompts_per_step=4",
            "recipe.num_generations=4",
            f"rung.micro_batch_tokens={micro}",
            f"recipe.loss={loss}",
            "recipe.ppo_epochs=2",
        )
        stream, recipe, model, layout = stream_for(cfg, 1, tmp_path / str(micro))
        assert (
            layout.answers_per_micro_batch == micro // 64 and layout.grad_accum == 16 * 64 // micro
        )
        out = []
        for step in (1, 2):  # the first pass (ratio 1), then the second over the same rollouts
            batches = step_batches(stream, layout, step)
            units = sum(GRPO.count(b) for b in batches)
            model.zero_grad()
            total = 0.0
            for b in batches:
                loss_sum, _ = recipe.loss_sum(model, b)
                (loss_sum / units).backward()
                total += float(loss_sum.detach()) / units
            grad = torch.cat([p.grad.flatten().clone() for p in model.parameters()])
            ids = torch.cat([b["input_ids"][b["real"]] for b in batches])  # padding left out
            out.append((total, grad, ids))
        results[micro] = out
    for (loss_a, grad_a, ids_a), (loss_b, grad_b, ids_b) in zip(results[1024], results[256]):
        assert torch.equal(ids_a, ids_b), "the same rollouts whatever the micro-batch"
        assert loss_a == pytest.approx(loss_b, abs=1e-5)
        assert float(grad_a.abs().max()) > 1e-4, "mixed rewards: the gradient is not zero"
        assert torch.allclose(grad_a, grad_b, atol=1e-5, rtol=1e-5)


def test_rollouts_are_saved_per_rank_and_reloaded_on_resume_inside_a_rollout_batch(
    tmp_path, rl_data
):
    cfg = cfg_for(
        f"data.train_files=[{rl_data}]",
        "recipe.prompts_per_step=4",
        "recipe.num_generations=4",
        "rung.micro_batch_tokens=256",
        "recipe.ppo_epochs=2",
    )
    stream, _, _, layout = stream_for(cfg, 1, tmp_path)
    first = step_batches(stream, layout)
    assert (tmp_path / "rollouts" / "batch_000000" / "rank_00000_of_00001.pt").is_file()
    resumed, _, _, _ = stream_for(
        cfg, 1, tmp_path, start_step=1
    )  # resumed at step 1, inside batch 0
    assert resumed.cache, "the saved rollouts were loaded, not generated again"
    again = step_batches(resumed, layout, step=2)
    for a, b in zip(first, again):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(
            a["old_logps"], b["old_logps"]
        )
    assert not again[0]["first_pass"] and resumed.sums["gen_time"] == 0, (
        "a later pass costs no generation"
    )
    with pytest.raises(
        ConfigError, match="rank_00000_of_00002.pt is missing.*same number of ranks"
    ):
        stream_for(cfg, 2, tmp_path, start_step=1)


# ---- the gradient does not depend on the number of ranks ------------------------------------------
# rank 0 of two owns a prompt no answer can pass (at most 0 words): its one group all agrees;
# rank 1's prompt ("in one word") gets mixed rewards. data.shuffle=false keeps that split.
RANK_ROWS = [("Say nothing at all.", 0), ("Name cats in one word.", 1)]
# one layer of 64: the test spends its time in Python overhead, per layer and per call
SMALLER = ("model.num_layers=1", "model.hidden_size=64", "model.intermediate_size=128")
RANK_MICROS = (512, 128)  # 8 or 2 answers per micro-batch: 1 or 4 on one rank, 2 on each of two


def rank_cfgs(data: Path, micros) -> dict:
    cfgs = {}
    for loss in losses_of("rl"):
        base = cfg_for(
            f"data.train_files=[{data}]",
            "data.shuffle=false",
            "recipe.prompts_per_step=2",
            "recipe.num_generations=4",
            f"recipe.loss={loss}",
            *SMALLER,
        )
        for micro in micros:  # a plain number the layout reads: no need to compose again
            cfg = copy.deepcopy(base)
            OmegaConf.set_readonly(cfg, False)
            cfg.rung.micro_batch_tokens = micro
            cfgs[(loss, micro)] = cfg
    return cfgs


def step_gradient(cfg, dp: int, rank: int, root: Path, built) -> tuple[torch.Tensor, list[float]]:
    """The step's gradient as the loop makes it: each rank's summed losses over the units of all
    micro-batches and ranks, then the ranks' gradients summed (DDP averages world x that)."""
    import torch.distributed as dist

    built[1].zero_grad(set_to_none=True)
    stream, recipe, model, layout = stream_for(cfg, dp, root, rank=rank, size=dp, built=built)
    first = rank * layout.grad_accum
    mine = [stream.micro_batch(first + j) for j in range(layout.grad_accum)]
    units = distributed.all_sum(sum(GRPO.count(b) for b in mine), "cpu")
    for b in mine:
        (recipe.loss_sum(model, b)[0] / units).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    if dist.is_initialized():
        dist.all_reduce(grad)
    return grad, [float(a) for b in mine for a in b["advantages"]]


def tiny_built(cfg):
    tok = load_tokenizer(cfg.model)
    return tok, build_model(cfg.model, tok, seed=0)


def _two_rank_worker(rank: int, cfgs: dict, built, root: str, port: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        grads = {}
        for (loss, micro), cfg in cfgs.items():
            grad, _ = step_gradient(cfg, 2, rank, Path(root) / f"{loss}_{micro}_{rank}", built)
            grads[f"{loss}_{micro}"] = grad
        if rank == 0:
            save_file(grads, str(Path(root) / "grads.safetensors"))
    finally:
        dist.destroy_process_group()


def test_every_rl_loss_has_the_same_gradient_on_one_or_two_ranks_and_any_split(tmp_path):
    """Issue #22: dapo kept a rank's agreeing groups when all of that rank's groups agreed, so their
    tokens joined the step's units and the mixed group's gradient shrank at dp=2. For every RL loss,
    one process with 1 or 4 micro-batches and two gloo processes with 2 each: one gradient."""
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [{"role": "user", "content": text}],
                    "ground_truth": json.dumps({"type": "max_words", "n": n}),
                    "dataset": "ifeval",
                }
            )
            + "\n"
            for text, n in RANK_ROWS
        )
    )
    cfgs = rank_cfgs(data, RANK_MICROS)
    built = tiny_built(next(iter(cfgs.values())))
    one = {}
    for (loss, micro), cfg in cfgs.items():
        one[loss, micro], adv = step_gradient(cfg, 1, 0, tmp_path / f"{loss}_{micro}", built)
        assert adv[:4] == [0.0] * 4 and any(a != 0 for a in adv[4:]), (
            "rank 0's group all agrees, rank 1's is mixed"
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # forkserver: one server imports torch and this module once and forks both ranks from it (a
    # plain fork of this process hangs in gloo; spawn imports torch twice)
    two_cfgs = {k: v for k, v in cfgs.items() if k[1] == 128}
    (tmp_path / "two").mkdir()
    multiprocessing.set_forkserver_preload([__name__])
    torch.multiprocessing.start_processes(
        _two_rank_worker,
        args=(two_cfgs, built, str(tmp_path / "two"), port),
        nprocs=2,
        start_method="forkserver",
    )
    two = load_file(str(tmp_path / "two" / "grads.safetensors"))
    for loss in losses_of("rl"):
        ref = one[loss, 512]
        assert float(ref.abs().max()) > 1e-4, "the mixed group has a gradient"
        assert torch.allclose(one[loss, 128], ref, atol=1e-6, rtol=1e-5), (loss, "1 rank, 4 mb")
        assert torch.allclose(two[f"{loss}_128"], ref, atol=1e-6, rtol=1e-5), (
            f"{loss}: 2 ranks, 2 micro-batches each"
        )


# ---- clear errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, world, message",
    [
        (
            ["recipe.prompts_per_step=3", "rung.engine=ddp", "rung.gpus_per_node=2"],
            2,
            r"recipe.prompts_per_step=3 is not a multiple of the data-parallel size 2: each rank generates whole "
            r"prompt groups; e.g. recipe.prompts_per_step=4",
        ),
        (
            ["trainer.global_batch_tokens=4096"],
            1,
            r"trainer.global_batch_tokens=4096 does not apply to recipe.loss=grpo: the batch of an RL step is "
            r"recipe.prompts_per_step x recipe.num_generations answers \(here 16 x 8\)",
        ),
        (
            ["trainer.grad_accum=2"],
            1,
            r"trainer.grad_accum=2, but an RL step's 16 / dp 1 prompts x 8 answers, at most "
            r"16 answers per micro-batch .* take 8",
        ),
        (
            ["rung.micro_batch_tokens=32"],
            1,
            r"data.max_seq_len=64 exceeds rung.micro_batch_tokens=32: a micro-batch "
            r"must hold at least one whole answer",
        ),
    ],
)
def test_rl_batch_errors_are_clear_and_nothing_is_rewritten(extra, world, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose(["recipe=grpo", "rung=tiny", *extra]), world_size=world)


def test_the_rl_batch_ignores_the_rungs_token_batch():
    a = batch_layout(compose(["recipe=grpo", "rung=tiny"]), 1)
    b = batch_layout(compose(["recipe=grpo", "rung=tiny", "rung.global_batch_tokens=999999"]), 1)
    assert a == b and a.answers_per_step == 16 * 8 and a.grad_accum == 8
    assert (
        a.global_batch_tokens == a.grad_accum * a.dp * a.micro_batch_tokens
    )  # the capacity, an upper bound


# ---- the plan -----------------------------------------------------------------------------------
def test_plan_grpo_8b_json_shows_the_rl_batch_and_the_kv_cache():
    proc = ladder_cli("plan", "recipe=grpo", "rung=8b", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = json.loads(proc.stdout)
    rl, mem = plan["rl"], plan["memory_breakdown_gb"]
    assert (rl["prompts_per_step"], rl["num_generations"], rl["answers_per_step"]) == (64, 8, 512)
    assert (
        rl["answers_per_micro_batch"] == 4096 // 2048 == 2
        and plan["grad_accum"] == rl["grad_accum"] == 32
    )
    assert rl["gen_flops"] > 0 and plan["fits"]
    # generator=hf: 8 prompts x 8 answers per rank, 2048 tokens, K and V, 32 layers, 8 kv heads x 128, bf16
    assert mem["generation"] == pytest.approx(64 * 2048 * 2 * 32 * 8 * 128 * 2 / 2**30) == 16.0
    assert mem["reference"] == 0.0, "kl_beta=0: no reference model"
    assert mem["total"] == pytest.approx(
        sum(
            mem[k]
            for k in ("params", "grads", "optimizer", "activations", "reference", "generation")
        )
    )


@pytest.mark.parametrize("rung", ["70b", "405b"])
def test_big_rungs_plan_grpo_out_of_the_box(rung):
    from launch.planning.plan import make_plan

    plan = make_plan(compose(["recipe=grpo", f"rung={rung}"]))
    assert plan.fits and plan.rl.answers_per_step == plan.rl.prompts_per_step * 8
    assert plan.rl.prompts_per_step % plan.gpus == 0 and plan.memory.generation > 0


def test_plan_adds_the_reference_and_vllms_share():
    from launch.planning.plan import memory_for, model_shape

    cfg = compose(["recipe=grpo", "rung=8b", "recipe.kl_beta=0.05", "generator=vllm"])
    shape = model_shape(cfg)
    m = memory_for(shape, cfg)
    # bf16 and sharded over the rung's 8 GPUs (deepspeed_zero3), as training/recipes/reference.py loads it
    assert m.reference == 2 * shape.params / 8
    assert m.generation == 0.3 * 80 * 2**30, "generator.gpu_memory_utilization of the GPU"
    plain = memory_for(shape, compose(["recipe=sft", "rung=8b"]))
    assert plain.reference == plain.generation == 0


# 8b with kl on needs 43 GiB per GPU (a bf16 reference sharded over 8 GPUs): a 40 GB GPU does not hold it
@pytest.mark.parametrize(
    "overrides",
    [["rung=405b", "rung.nodes=16"], ["rung=8b", "recipe.kl_beta=0.1", "rung.gpu_memory_gb=40"]],
)
def test_every_rl_fix_the_planner_offers_validates_and_fits(overrides):
    from launch.planning.plan import fix_message, make_plan

    plan = make_plan(compose(["recipe=grpo", *overrides]))
    assert not plan.fits and plan.fixes, fix_message(plan)
    for fix, gib in plan.fixes:
        fixed = make_plan(compose(["recipe=grpo", *overrides, *fix.split()]))
        assert fixed.fits, (overrides, fix, fix_message(fixed))
        assert fixed.memory.total / 2**30 == pytest.approx(gib)
