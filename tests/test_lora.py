"""LoRA and QLoRA (training/model/lora.py): the config node, what trains, the reference, checkpoints, the plan.

    python -m pytest -q tests/test_lora.py

Every run here is the tiny model built from config, in this process, for a few steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import FAST, losses

from training.common.errors import ConfigError
from training.config.compose import compose
from training.config.validate import effective_lr, lr_rule, validate
from training.model import lora
from training.model.modeling import build_model, load_tokenizer
from training.model.shape import shape_of

LORA = ["model.lora.enabled=true", "model.lora.r=4"]
SHARDED = [
    "fsdp2",
    "deepspeed_zero2",
    "deepspeed_zero3",
]  # the engines that shard or manage weights


def run(tmp_path, name: str, steps: int, extra=(), callbacks=()):
    """A tiny LoRA run in this process; returns the Trainer (its model is the trained PeftModel)."""
    from training.run.trainer import Trainer

    cfg = compose(
        [
            *FAST,
            *LORA,
            f"trainer.run_root={tmp_path}",
            f"trainer.run_name={name}",
            f"trainer.max_steps={steps}",
            "trainer.save_every=3",
            "rung.peak_flops_per_device=1e12",  # a made-up peak, so that MFU is logged on a CPU
            *extra,
        ]
    )
    t = Trainer(cfg, callbacks=list(callbacks))
    t.run()
    return t


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    return run(tmp_path_factory.mktemp("lora"), "sft", 6)


def base_weights(model) -> dict[str, torch.Tensor]:
    """The frozen base's tensors of a PeftModel, by the plain model's names."""
    sd = model.get_base_model().state_dict()
    return {k.replace(".base_layer", ""): v for k, v in sd.items() if "lora_" not in k}


def test_lora_sft_trains_only_the_adapters_and_its_loss_falls(sft):
    cfg = sft.cfg
    fresh = build_model(cfg.model, load_tokenizer(cfg.model), seed=cfg.trainer.seed)
    trained = base_weights(sft.model)
    assert trained.keys() == fresh.state_dict().keys()
    for name, w in fresh.state_dict().items():  # bit for bit: the base never moved
        assert torch.equal(trained[name], w), name
    moved = [n for n, p in sft.model.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert len(moved) == 4 * 7  # every targeted layer's B left zero, in all 4 layers
    trainable = {n for n, p in sft.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # the planner's arithmetic equals peft's count
    n_trainable, _ = sft.model.get_nb_trainable_parameters()
    shape = shape_of(sft.model.config, sft.model.get_input_embeddings().num_embeddings)
    assert lora.adapter_params(shape, cfg.model.lora) == n_trainable
    loss = losses(sft.run_dir)
    assert len(loss) == 6 and loss[-1] < loss[0] - 0.3, loss


def test_the_lora_learning_rate_is_the_rung_s_times_ten():
    cfg = compose(["rung=tiny", "model.lora.enabled=true"])
    assert effective_lr(cfg) == pytest.approx(cfg.rung.lr * cfg.recipe.lr_scale * 10)
    assert "x model.lora.lr_scale 10" in lr_rule(cfg)
    dpo = compose(["rung=tiny", "recipe=dpo", "model.lora.enabled=true", "model.lora.lr_scale=4"])
    assert effective_lr(dpo) == pytest.approx(dpo.rung.lr * dpo.recipe.lr_scale * 4)
    assert effective_lr(compose(["rung=tiny", "model.lora.enabled=true", "optim.lr=1e-4"])) == 1e-4


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["model.lora.r=0"], "model.lora.r=0 must be in [1, inf)"),
        (
            ["model.lora.target_modules=[q_proj,qkv_proj]"],
            "no module named qkv_proj in the model; its modules are q_proj, k_proj",
        ),
        (["model.quantize=nf4"], "model.quantize=nf4 on rung.device=cpu"),
        (
            ["recipe=dpo", "model.from_scratch=true", "recipe.reference=/some/other/model"],
            "the reference of a LoRA run is the base model with its adapters disabled",
        ),
        (
            ["model.quantize=nf4", "rung.engine=fsdp2", "rung.gpus_per_node=2"],
            "model.quantize=nf4 with rung.engine=fsdp2: fsdp2 shards the frozen base",
        ),
        (["model.lora.target_modules=[]"], "model.lora.target_modules is empty"),
    ],
)
def test_impossible_lora_combinations_are_refused_with_the_reason(overrides, says):
    with pytest.raises(ConfigError) as e:
        validate(compose(["rung=tiny", "model.lora.enabled=true", *overrides]))
    assert says in str(e.value)


def test_nf4_without_lora_is_refused():
    with pytest.raises(ConfigError, match="QLoRA trains adapters on a frozen 4-bit base"):
        validate(compose(["rung=tiny", "model.quantize=nf4"]))


def test_a_target_the_loaded_model_lacks_names_the_modules_it_has():
    cfg = compose(["rung=tiny", "model.lora.enabled=true", "model.lora.target_modules=[wq]"])
    model = build_model(cfg.model, load_tokenizer(cfg.model))
    with pytest.raises(ConfigError, match=r"no module named wq in the model; its linear .*q_proj"):
        lora.apply_lora(model, cfg.model.lora)


def test_lora_at_step_zero_is_the_base_exactly():
    cfg = compose(["rung=tiny", *LORA])
    tok = load_tokenizer(cfg.model)
    base = build_model(cfg.model, tok, seed=0)
    ids = torch.tensor([tok.encode("hello there")])
    want = base(input_ids=ids).logits
    policy = lora.apply_lora(build_model(cfg.model, tok, seed=0), cfg.model.lora)
    assert torch.equal(policy(input_ids=ids).logits, want)
    assert math.isfinite(float(want.sum()))


def test_dpo_with_lora_has_no_second_model_and_starts_at_ln2(tmp_path):
    import gc

    from transformers import LlamaForCausalLM

    def models() -> int:
        gc.collect()
        return sum(isinstance(o, LlamaForCausalLM) for o in gc.get_objects())

    before = models()
    t = run(
        tmp_path,
        "dpo",
        2,
        [
            "recipe=dpo",
            "model.from_scratch=true",
            "recipe.precompute_reference=false",  # the reference runs beside the policy each step
            "data.max_samples=16",
            "rung.micro_batch_tokens=512",
            "trainer.global_batch_tokens=1024",
            "optim.warmup_ratio=0",  # step 1 updates the adapters (warmup would start at lr 0)
        ],
    )
    ref = t.recipe.reference_model
    assert isinstance(ref, lora.AdapterDisabled) and ref.module is t.model
    assert not isinstance(ref, torch.nn.Module)  # it holds no weights of its own
    assert models() - before == 1  # the policy's base is the only model built
    loss = losses(t.run_dir)
    assert loss[0] == pytest.approx(math.log(2), abs=1e-6)  # B = 0: the policy is the base
    assert abs(loss[1] - math.log(2)) > 1e-4  # the adapters moved; the reference did not
    # the live reference adds one forward of the base alone (2 N per token), not a third of the
    # LoRA step; the step itself is 4 N + 6 A per token
    assert step_flops(t, 1, reference=True) == pytest.approx(logged_flops(t, 1), rel=1e-9)


def step_flops(t, step: int, reference: bool = False) -> float:
    """A LoRA step's FLOPs, by hand from its micro-batches (training/model/flops.py)."""
    c = t.model.config
    n = shape_of(c, t.model.get_input_embeddings().num_embeddings).matmul_params
    trained = sum(p.numel() for name, p in t.model.named_parameters() if "lora_" in name)
    total = 0.0
    for b in t.micro_batches(step):
        tokens, attention = sum(b["doc_lens"]), sum(s * s for s in b["doc_lens"])
        att = c.num_hidden_layers * c.hidden_size * attention
        total += (4 * n + 6 * trained) * tokens + 6 * att
        total += (2 * n * tokens + 2 * att) if reference else 0.0
    return total


def logged_flops(t, step: int) -> float:
    """The FLOPs behind the step's logged MFU (rung.peak_flops_per_device=1e12, one process)."""
    from training.run.metrics import read_metrics

    row = read_metrics(t.run_dir / "metrics.jsonl")[step - 1]
    return row["mfu"] * 1e12 * row["step_time_s"]


def test_the_mfu_of_a_lora_step_counts_4n_for_the_frozen_base_and_6_per_adapter_weight(sft):
    from training.model.flops import Matmuls

    n = shape_of(sft.model.config, 382).matmul_params
    a = sum(p.numel() for name, p in sft.model.named_parameters() if "lora_" in name)
    assert sft.matmuls == Matmuls(policy=n + a, frozen=n, base=n)
    for step in (1, 6):
        assert logged_flops(sft, step) == pytest.approx(step_flops(sft, step), rel=1e-9)


def test_the_plan_counts_lora_flops_as_by_hand():
    from launch.planning.plan import make_plan
    from training.model.shape import model_shape

    full, low = make_plan(compose(["rung=tiny"])), make_plan(compose(["rung=tiny", *LORA]))
    tokens, doc, n, a = low.tokens, low.doc_tokens, low.matmul_params, low.lora_params
    attention = 6 * 4 * 192 * doc * tokens  # 6 L d s^2 per document of s tokens
    assert full.flops == pytest.approx(6 * n * tokens + attention, rel=1e-12)
    assert low.flops == pytest.approx((4 * n + 6 * a) * tokens + attention, rel=1e-12)
    assert low.flops_rule == "(4 x 1.84 M frozen + 6 x 58.37 K trained) matmul params"  # shown
    # a saved module trains whole (6 per weight) and an lm_head adapter's products count too; a
    # saved embedding is a lookup (no products): peft's modules give the adapter's products
    over = [
        "model.lora.target_modules=[q_proj,v_proj,lm_head]",
        "model.lora.modules_to_save=[down_proj]",
    ]
    cfg = compose(["rung=tiny", *LORA, *over])
    peft_model = lora.apply_lora(build_model(cfg.model, load_tokenizer(cfg.model)), cfg.model.lora)
    adapters = sum(p.numel() for name, p in peft_model.named_parameters() if "lora_" in name)
    down = 4 * 512 * 192
    mm = lora.matmuls(model_shape(cfg), cfg)
    assert (mm.policy, mm.frozen, mm.base) == (n + adapters, n - down, n)


def test_the_reference_cache_key_covers_the_base_and_the_adapter():
    from training.recipes.reference import reference_hash

    dpo = ["rung=tiny", "recipe=dpo", "model.from_scratch=true"]
    full = reference_hash(compose(dpo))
    r4 = reference_hash(compose([*dpo, *LORA]))
    r8 = reference_hash(compose([*dpo, "model.lora.enabled=true", "model.lora.r=8"]))
    seed1 = reference_hash(compose([*dpo, *LORA, "trainer.seed=1"]))
    bf16 = reference_hash(compose([*dpo, *LORA, "rung.bf16=true"]))  # the base stored in bf16
    full_bf16 = reference_hash(compose([*dpo, "rung.bf16=true"]))  # a bf16 copy of the reference
    assert len({full, r4, r8, seed1, bf16, full_bf16}) == 6
    assert r4 == reference_hash(compose([*dpo, *LORA, "model.lora.lr_scale=3"]))  # not an output


def test_an_adapter_checkpoint_loads_in_plain_peft_and_in_ladder_eval_with_the_same_logits(sft):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from evals.runner import load_model

    ckpt = sft.result.checkpoints[-1]
    assert {"adapter_model.safetensors", "adapter_config.json", "trainer_state.pt"} <= {
        p.name for p in ckpt.iterdir()
    }
    assert not (ckpt / "model.safetensors").exists()  # no base weights beside the adapter
    cfg = sft.cfg
    tok = load_tokenizer(cfg.model)
    ids = torch.tensor([tok.encode("reverse: a b c")])
    with torch.no_grad():
        want = sft.model.eval()(input_ids=ids).logits
        plain = PeftModel.from_pretrained(build_model(cfg.model, tok, seed=0), str(ckpt)).eval()
        assert torch.equal(plain(input_ids=ids).logits, want)
        ours, _ = load_model(ckpt, "cpu")  # ladder eval: base + adapter, nothing merged on disk
        assert torch.equal(ours(input_ids=ids).logits, want)
        merged = AutoModelForCausalLM.from_pretrained(ckpt / "merged").eval()  # the final step's
        assert torch.allclose(merged(input_ids=ids).logits, want, atol=1e-4)
    assert not (sft.result.checkpoints[0] / "merged").exists()  # trainer.save_merged=null: final


def test_the_content_hash_covers_the_base_an_adapter_needs(sft, tmp_path):
    import json
    import shutil

    from training.common.checkpoint_hash import checkpoint_hash
    from training.common.errors import CheckpointError

    ckpt = sft.result.checkpoints[-1]
    copy = tmp_path / "step_000006"
    shutil.copytree(ckpt, copy, ignore=shutil.ignore_patterns("eval", "merged"))
    assert checkpoint_hash(copy) == checkpoint_hash(ckpt)
    base = json.loads((copy / lora.BASE_FILE).read_text())
    (copy / lora.BASE_FILE).write_text(json.dumps({**base, "identity": "hub:someone/else"}))
    assert checkpoint_hash(copy) != checkpoint_hash(ckpt)
    other = compose(
        [*FAST, *LORA, "trainer.seed=1"]
    )  # another seed: another base built from config
    with pytest.raises(CheckpointError, match="was trained on the base"):
        lora.check_base(ckpt, other)


class StopAt:
    """Preempts the run after `step` as SIGUSR1 would (the trainer checkpoints, then stops)."""

    def __init__(self, step: int):
        from training.run.callbacks import Callback

        self.cb = type("Stop", (Callback,), {"on_step_end": self.on_step_end})()
        self.step = step

    def on_step_end(self, step: int, metrics: dict) -> None:
        if step == self.step:
            self.cb.trainer.stop_signal = "SIGUSR1"


def test_a_preempted_lora_run_resumes_to_the_uninterrupted_losses(sft, tmp_path):
    from training.common.errors import Preempted

    stop = StopAt(4)
    with pytest.raises(Preempted):
        run(tmp_path, "cut", 6, callbacks=[stop.cb])
    assert [c.name for c in (tmp_path / "cut" / "checkpoints").iterdir()] != []
    resumed = run(tmp_path, "cut", 6, ["trainer.resume=auto"])
    assert resumed.start_step == 4
    assert losses(resumed.run_dir) == pytest.approx(losses(sft.run_dir), abs=1e-6, rel=0)
    for (n, p), (m, q) in zip(resumed.model.named_parameters(), sft.model.named_parameters()):
        assert n == m and torch.allclose(p, q, atol=1e-6), n


def test_the_plan_counts_lora_memory_as_by_hand():
    from launch.planning.memory import NF4_BYTES
    from launch.planning.plan import make_plan, memory_for
    from training.model.shape import model_shape

    cfg = compose(["rung=tiny", *LORA])
    plan = make_plan(cfg)
    v, h, i, L = 382, 192, 512, 4  # the tiny model: fp32 (rung.bf16=false), 4 heads of 48
    base = 2 * v * h + L * (4 * h * h + 3 * h * i + 2 * h) + h
    adapter = L * 4 * (4 * (h + h) + 3 * (h + i))  # r=4 on q, k, v, o and gate, up, down
    assert plan.params == base and plan.lora_params == adapter
    m = plan.memory
    assert (m.params, m.grads, m.optimizer) == (4 * base + 4 * adapter, 4 * adapter, 8 * adapter)
    assert plan.full_memory.total - m.total == (16 * base) - (4 * base + 16 * adapter)
    assert set(plan.by_engine) == {"single", "ddp", "fsdp2", "deepspeed_zero2", "deepspeed_zero3"}
    # on 2 GPUs the sharded engines split the frozen base, gathering the largest module (an MLP
    # projection, h x i) at a time, and count the adapter's states as trained parameters of theirs
    two = compose(["rung=tiny", *LORA, "rung.gpus_per_node=2"])
    fsdp2, zero2, zero3 = (memory_for(model_shape(two), two, engine=e) for e in SHARDED)
    assert (fsdp2.params, fsdp2.grads, fsdp2.optimizer) == (
        4 * base / 2 + 2 * h * i + 4 * adapter / 2,
        4 * adapter / 2,
        8 * adapter / 2,
    )
    assert (zero2.params, zero2.grads, zero2.optimizer) == (
        4 * base + 2 * adapter,
        6 * adapter / 2,
        12 * adapter / 2,
    )
    assert (zero3.params, zero3.grads, zero3.optimizer) == (
        4 * base / 2 + 2 * h * i + 2 * adapter / 2,
        4 * adapter / 2,
        12 * adapter / 2,
    )
    off = memory_for(model_shape(two), two, engine="deepspeed_zero3", offload=True)
    assert (off.params, off.optimizer) == (2 * h * i, 0.0)
    assert off.cpu_per_node == pytest.approx(1.5 * (4 * base + 18 * adapter))

    big = compose(["rung=8b", "rung.engine=ddp", "model.lora.enabled=true", "model.quantize=nf4"])
    shape = model_shape(big)
    A = lora.adapter_params(shape, big.model.lora)
    linear = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)
    p = memory_for(shape, big)
    assert A == 32 * 16 * (2 * 8192 + 2 * 5120 + 3 * 18432)  # r=16 by default
    assert p.params == pytest.approx(NF4_BYTES * linear + 2 * (shape.params - linear) + 4 * A)
    assert p.reference == 0.0


def test_adapter_counts_equal_peft_s_for_the_8b_shape_without_weights():
    from peft import get_peft_model
    from transformers import LlamaForCausalLM

    from training.model.modeling import llama_config
    from training.model.shape import model_shape

    cfg = compose(["rung=8b", "model.lora.enabled=true"])
    with torch.device("meta"):  # the shape only: no weights are allocated
        model = LlamaForCausalLM(llama_config(cfg.model, cfg.model.vocab_size))
    peft_model = get_peft_model(model, lora.peft_config(cfg.model.lora))
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert lora.adapter_params(model_shape(cfg), cfg.model.lora) == trainable == 41_943_040


def test_lora_on_two_ddp_processes_matches_one(sft, tmp_path):
    """DDP on 2 gloo ranks (a real torchrun: DDP's hooks and the frozen base only exist there),
    accumulation 1 x dp 2, against the single-process run's accumulation 2 x dp 1."""
    import subprocess

    from distributed_helpers import env, torchrun_cmd
    from safetensors.torch import load_file

    over = [
        *FAST,
        *LORA,
        f"trainer.run_root={tmp_path}",
        "trainer.run_name=ddp",
        "trainer.max_steps=6",
        "trainer.save_every=6",
        "trainer.save_merged=none",
        "rung.engine=ddp",
        "rung.gpus_per_node=2",
    ]
    proc = subprocess.run(torchrun_cmd(2, over), env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # LoRA's 10x rate amplifies the all-reduce's rounding: 1e-4 at first, ~1e-3 by step 6
    assert losses(tmp_path / "ddp") == pytest.approx(losses(sft.run_dir), abs=2e-3, rel=0)
    got = load_file(tmp_path / "ddp" / "checkpoints" / "step_000006" / "adapter_model.safetensors")
    want = load_file(sft.result.checkpoints[-1] / "adapter_model.safetensors")
    assert got.keys() == want.keys() and len(got) == 2 * 4 * 7  # A and B of 7 layers x 4
    # Adam turns rounding in near-zero gradients into lr-sized steps: compare the adapters whole
    diff = sum(float((got[k] - want[k]).norm() ** 2) for k in want) ** 0.5
    assert diff < 0.02 * sum(float(want[k].norm() ** 2) for k in want) ** 0.5


@pytest.mark.parametrize("engine", SHARDED)
def test_lora_on_two_sharding_processes_matches_one_and_saves_peft_s_format(sft, engine):
    """fsdp2, ZeRO-2 and ZeRO-3 on 2 gloo ranks (accumulation 1 x dp 2) against the single-process
    run (2 x 1): the adapter's gradients, the losses, and the checkpoint: peft's adapter files,
    gathered onto rank 0, which plain peft loads, beside merged weights streamed with peft's delta.
    ZeRO-3 (its sharded state holds the adapter's partitions only) also resumes bit for bit."""
    import subprocess

    from distributed_helpers import env, torchrun_cmd
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from training.run.metrics import read_metrics

    root = Path(sft.cfg.trainer.run_root)  # beside the fixture: its token cache is warm
    over = [
        *FAST,
        *LORA,
        f"trainer.run_root={root}",
        "trainer.max_steps=6",
        "trainer.save_every=3",
        "rung.peak_flops_per_device=1e12",
        f"rung.engine={engine}",
        "rung.gpus_per_node=2",
    ]

    def torchrun(name: str, *extra: str) -> Path:
        cmd = torchrun_cmd(2, [*over, f"trainer.run_name={name}", *extra])
        proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return root / name

    run_dir = torchrun(engine)
    got, want = read_metrics(run_dir / "metrics.jsonl"), read_metrics(sft.run_dir / "metrics.jsonl")
    # The gradient norm of steps 1-3 at the engines' tolerance (tests/test_engines.py: 1e-4; measured
    # <= 2e-7 relative); from step 4 on, Adam at LoRA's 10x rate turns rounding in near-zero
    # gradients into rate-sized steps (as under ddp): the losses at the ddp test's 2e-3
    norm = [r["grad_norm"] for r in want[:3]]
    assert [r["grad_norm"] for r in got[:3]] == pytest.approx(norm, rel=1e-4, abs=0)
    assert losses(run_dir) == pytest.approx(losses(sft.run_dir), abs=2e-3, rel=0)
    ckpt = run_dir / "checkpoints" / "step_000006"
    got_a = load_file(ckpt / "adapter_model.safetensors")
    want_a = load_file(sft.result.checkpoints[-1] / "adapter_model.safetensors")
    assert got_a.keys() == want_a.keys() and len(got_a) == 2 * 4 * 7
    diff = sum(float((got_a[k] - want_a[k]).norm() ** 2) for k in want_a) ** 0.5
    assert diff < 0.02 * sum(float(want_a[k].norm() ** 2) for k in want_a) ** 0.5
    # peft's format: plain peft loads it on the base, and the merged weights are base + delta
    cfg, tok = sft.cfg, load_tokenizer(sft.cfg.model)
    ids = torch.tensor([tok.encode("reverse: a b c")])
    with torch.no_grad():
        plain = PeftModel.from_pretrained(build_model(cfg.model, tok, seed=0), str(ckpt)).eval()
        merged = AutoModelForCausalLM.from_pretrained(ckpt / "merged").eval()
        want_logits = plain(input_ids=ids).logits
        assert torch.allclose(merged(input_ids=ids).logits, want_logits, atol=1e-4)
    if engine == "deepspeed_zero3":  # resumed from step 3 in another folder: the same steps 4-6
        step3 = run_dir / "checkpoints" / "step_000003"
        resumed = torchrun(
            "zero3-resumed", f"trainer.resume={step3}", "trainer.trust_checkpoint=true"
        )
        assert losses(resumed) == losses(run_dir)[3:]
        again = load_file(resumed / "checkpoints" / "step_000006" / "adapter_model.safetensors")
        assert all(torch.equal(again[k], got_a[k]) for k in got_a)


def test_the_ledger_marks_a_lora_run_and_plans_lora_runs_from_lora_runs_only(tmp_path):
    import json

    from launch.accounting.ledger import Ledger
    from launch.commands.launch_cmd import ledger_fields, prepare
    from launch.planning.rates import planning_rate

    where = [*FAST, f"trainer.run_root={tmp_path}"]
    ledger = Ledger(tmp_path / "ladder.db")
    rows = {}
    for name, extra, tokens_per_s in (("full", [], 1000.0), ("lora", LORA, 1500.0)):
        _, [job] = prepare([*where, f"trainer.run_name={name}", *extra])
        fields = {**ledger_fields(job), "team": "t", "period": "2026-12", "planned_gpu_hours": 0.1}
        rows[name] = ledger.job(
            ledger.add_job(**fields, state="completed", tokens_per_s=tokens_per_s)
        )
    assert rows["full"]["adapter"] is None
    assert json.loads(rows["lora"]["adapter"]) == {
        "method": "lora",
        "r": 4,
        "alpha": 32,
        "dropout": 0.0,
        "target_modules": list(lora.LLAMA_LINEAR),
        "modules_to_save": [],
        "quantize": "none",
    }
    # a LoRA token skips the base's weight gradients: each kind of run plans from its own kind
    rate, kind, source = planning_rate(compose([*where, *LORA]), ledger)
    assert (rate, kind) == (1500.0, "tokens_per_s") and "1 LoRA run of rung tiny" in source
    assert planning_rate(compose(where), ledger)[0] == 1000.0


def test_wandb_marks_a_lora_run_and_its_checkpoints_as_adapters(tmp_path):
    import json
    import time

    from wandb_records import read_records

    from training.run.tracking import Tracker

    cfg = compose(["rung=tiny", *LORA, "tracker.mode=offline", f"trainer.run_root={tmp_path}"])
    (tmp_path / "step_000006").mkdir()  # the artifact references it: nothing in it is read
    tracker = Tracker(cfg, tmp_path)
    tracker.log_checkpoint(tmp_path / "step_000006", 6)
    tracker.finish()
    [path] = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    for _ in range(100):  # W&B's service process may still be flushing the file after finish()
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        time.sleep(0.1)
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs, [r.WhichOneof("record_type") for r in records]
    config = {i.key: json.loads(i.value_json) for i in runs[0].config.update}
    assert config["adapter"] == lora.adapter_record(cfg) and config["adapter"]["r"] == 4
    [art] = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    meta = json.loads(art.metadata)
    assert meta["adapter"]["method"] == "lora" and meta["adapter"]["alpha"] == 32


def test_promote_carries_a_lora_point_s_adapter_and_its_rate(tmp_path):
    """A point's model.* overrides belong to the rung and are not carried up, but its adapter is
    its method: the promoted job trains LoRA with the same r at the target rung's LoRA rate."""
    import json

    from omegaconf import OmegaConf

    from launch.promotion.promote import Point, transfer

    over = ["rung=tiny", "model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8"]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(compose(over)))
    job = {"id": 1, "run_name": "p", "state": "completed", "overrides": json.dumps(over)}
    t = transfer(Point(str(tmp_path), job), "tiny_wide", "s@tiny_wide", "p-tiny_wide", [], {})
    child = compose(t.overrides)
    assert lora.adapter_record(child) == lora.adapter_record(compose(over))
    assert not any(ov.startswith("optim.lr") for ov in t.overrides)  # the rung's own rule
    assert t.child_lr == effective_lr(child) == pytest.approx(child.rung.lr * 10)
    assert t.rule == "the rung's rate, as at tiny" and t.not_carried == []


def test_lm_eval_scores_an_adapter_checkpoint_as_its_merged_weights(sft):
    """lm-eval's loader cannot read an adapter checkpoint (no config.json, no base weights): ladder
    hands it the base plus adapter as ladder eval loads them, which scores as the merged weights."""
    import re

    from evals.tasks.lm_harness import run_lm_eval

    ckpt, lm_cfg = sft.result.checkpoints[-1], compose(["eval=cpu"]).eval.lm_eval

    def logliks(path) -> list[float]:
        [task] = run_lm_eval(path, lm_cfg, ["ladder_reverse_mc"], 4, "cpu").values()
        assert task["n"] == 4
        return [float(x) for e in task["examples"] for x in re.findall(r"-?\d+\.\d+", e["output"])]

    adapter, merged = logliks(ckpt), logliks(ckpt / "merged")
    assert len(adapter) == 16 and adapter == pytest.approx(merged, rel=1e-5)


def test_the_registry_and_the_leaderboard_mark_an_adapter_checkpoint_with_r_and_alpha(
    sft, tmp_path, capsys
):
    """A LoRA run's checkpoint is registered with its adapter (from its adapter_config.json), a
    full fine-tuning checkpoint with none, and `ladder leaderboard` shows which is which."""
    import json

    from evals.store.cache import task_specs
    from evals.store.checkpoint_ref import resolve_checkpoint
    from evals.store.registry import Registry, adapter_of
    from launch.cli import main as ladder_main
    from training.run.checkpoint import save_checkpoint

    cfg = compose([*FAST, f"trainer.run_root={tmp_path}", "trainer.run_name=full"])
    tok = load_tokenizer(cfg.model)
    full = save_checkpoint(tmp_path / "full", 6, build_model(cfg.model, tok), tok, {"step": 6}, cfg)
    registry = Registry.from_config(cfg)
    for i, ckpt in enumerate([sft.result.checkpoints[-1], full]):
        ref = resolve_checkpoint(ckpt)
        registry.register_checkpoint(ref)
        for spec in task_specs(cfg.eval):
            result = {"metric": "exact_match", "score": 50.0 + i, "n": 10}
            registry.record_result(
                f"k{i}{spec.name}", ref.content_hash, spec, result, tmp_path / "x", cfg.eval.name
            )
    adapters = {r["run_name"]: adapter_of(r) for r in registry.checkpoints()}
    assert adapters == {"sft": {"method": "lora", "r": 4, "alpha": 32}, "full": None}
    lrs = {r["run_name"]: r["lr"] for r in registry.checkpoints()}  # the rate each run trained at
    assert lrs == {"sft": pytest.approx(effective_lr(sft.cfg)), "full": effective_lr(cfg)}
    assert lrs["sft"] == pytest.approx(10 * lrs["full"])
    out = tmp_path / "lb.json"
    assert ladder_main(["leaderboard", f"trainer.run_root={tmp_path}", "--json", str(out)]) == 0
    rows = {r["run_name"]: r["adapter"] for r in json.loads(out.read_text())["rows"]}
    assert rows == adapters
    printed = capsys.readouterr().out
    assert "adapter" in printed and "LoRA r=4 alpha=32" in printed and "full" in printed


def test_a_hostile_adapter_config_is_refused_naming_the_file_and_the_key(sft, tmp_path):
    import json

    from evals.store.checkpoint_ref import read_adapter
    from training.common.errors import CheckpointError

    src = sft.result.checkpoints[-1] / lora.ADAPTER_CONFIG
    good = json.loads(src.read_text())
    assert read_adapter(tmp_path) is None  # no adapter_config.json: full weights
    here = tmp_path / lora.ADAPTER_CONFIG
    for bad, says in [
        (json.dumps({**good, "r": "4"}), "r must be a positive integer, not '4'"),
        (
            json.dumps({**good, "lora_alpha": True}),
            "lora_alpha must be a positive integer, not True",
        ),
        (json.dumps({**good, "r": 0}), "r must be a positive integer, not 0"),
        (json.dumps({**good, "peft_type": "IA3"}), "peft_type 'IA3' is not 'LORA'"),
        (json.dumps([good]), "holds a JSON list, not peft's object"),
        ('{"peft_type": "LORA", "r": NaN}', "is not JSON (NaN is not a JSON value)"),
        ("\x80", "is not JSON"),  # written as latin-1 below: not UTF-8
    ]:
        here.write_bytes(bad.encode("latin-1"))
        with pytest.raises(CheckpointError) as e:
            read_adapter(tmp_path)
        assert str(e.value).startswith(f"{here}") and says in str(e.value), str(e.value)
    here.unlink()
    here.symlink_to(src)  # a planted link to a good file elsewhere is not read
    with pytest.raises(CheckpointError, match="is a symlink, and Ladder follows none"):
        read_adapter(tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/registry.db"
    return request.getfixturevalue("pg_url")


def test_a_version_2_registry_gains_the_adapter_column_and_keeps_its_rows(
    sft, registry_url, tmp_path
):
    from evals.store import registry as registry_mod
    from evals.store.registry import Registry, adapter_of

    reg = Registry(registry_url, cache_root=tmp_path)
    first, last = sft.result.checkpoints
    reg.register_checkpoint(first, "hash-first")
    with reg.transaction() as db:  # the table as version 2 wrote it
        db.execute("ALTER TABLE checkpoints DROP COLUMN adapter")
        db.execute("UPDATE ladder_schema SET version = 2 WHERE component = 'registry'")
    assert reg.schema_version() == 2
    reg = Registry(registry_url, cache_root=tmp_path)
    assert reg.schema_version() == registry_mod.SCHEMA_VERSION == 3
    [old] = reg.checkpoints()  # kept whole; registered before the column, so no adapter yet
    assert (old["path"], old["content_hash"], old["step"]) == (str(first), "hash-first", 3)
    assert old["adapter"] is None and '"run_name": "sft"' in old["lineage"]
    reg.register_checkpoint(last, "hash-last")
    reg.register_checkpoint(first, "hash-first")  # evaluated again: the row is filled in
    assert [adapter_of(r)["r"] for r in reg.checkpoints()] == [4, 4]


def test_under_bf16_the_frozen_base_is_stored_in_bf16_as_the_plan_counts_it(sft):
    """The base never trains, so under rung.bf16 it is built in bf16 (2 bytes per parameter, as
    `ladder plan` counts it) while the adapters stay fp32; a LoRA step still runs under autocast."""
    from launch.planning.plan import make_plan
    from training.run.callbacks import Callback

    seen = {}

    class States(Callback):  # the model states alive as the step ends, as bench/lora.py counts
        def on_step_end(self, step: int, metrics: dict) -> None:
            params = list(self.trainer.model.parameters())
            seen["weights"] = sum(p.numel() * p.element_size() for p in params)
            seen["grads"] = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
            seen["adam"] = sum(  # m and v; the scalar step counts are not model states
                t.numel() * t.element_size()
                for state in self.trainer.engine.torch_optimizer.state.values()
                for t in state.values()
                if torch.is_tensor(t) and t.dim() > 0
            )

    extra = [
        "rung.bf16=true",
        "rung.micro_batch_tokens=256",  # bf16 matmuls are slow on a CPU without bf16 units
        "trainer.global_batch_tokens=256",
        "optim.warmup_ratio=0",  # step 1 updates the adapters
        "trainer.save_merged=none",
    ]
    root = Path(sft.cfg.trainer.run_root)  # beside the fixture: its token cache is warm
    t = run(root, "bf16", 1, extra, callbacks=[States()])
    named = dict(t.model.named_parameters())
    frozen = {n: p.dtype for n, p in named.items() if not p.requires_grad}
    trained = {n: p.dtype for n, p in named.items() if p.requires_grad}
    assert set(frozen.values()) == {torch.bfloat16} and set(trained.values()) == {torch.float32}
    m = make_plan(t.cfg).memory
    assert (seen["weights"], seen["grads"], seen["adam"]) == (m.params, m.grads, m.optimizer)
    [loss] = losses(t.run_dir)
    assert math.isfinite(loss)
    assert any(p.abs().sum() > 0 for n, p in named.items() if "lora_B" in n)  # the step updated
