"""The compute planner: every rung on the meta device, memory against DeepSpeed's own estimators,
FLOPs from the one shared definition, the fit verdict and its fixes, and the MFU it plans with."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ladder_cli

from launch.accounting.ledger import Ledger
from launch.planning.doc_lengths import save_lengths, summarize
from launch.planning.memory import GiB, model_states
from launch.planning.plan import USABLE_FRACTION, make_plan, model_shape
from training.common.errors import ConfigError
from training.config.compose import compose
from training.model.flops import matmul_params, train_flops

# Published Llama 3.1 counts (Meta's model cards, Hugging Face safetensors metadata).
PUBLISHED = {"8b": 8_030_261_248, "70b": 70_553_706_496, "405b": 405_853_388_800}


@pytest.mark.parametrize("rung", ["tiny", "8b", "70b", "405b"])
def test_every_rung_builds_on_meta_with_the_right_parameter_count(rung):
    from training.model.shape import meta_shape

    cfg = compose([f"rung={rung}"])
    shape = model_shape(cfg)  # arithmetic, what `ladder plan` uses: the model built on meta agrees
    assert shape == meta_shape(cfg)
    tied = compose([f"rung={rung}", "model.tie_word_embeddings=true"])
    assert model_shape(tied) == meta_shape(tied)
    if rung in PUBLISHED:
        assert shape.params == PUBLISHED[rung] == cfg.model.published_params
        assert (
            shape.largest_module_params == 128256 * cfg.model.hidden_size
        )  # the embedding / LM head
    else:  # the tiny shape, counted by hand: embedding + matmuls (with LM head) + 2 norms a layer + final norm
        m = cfg.model
        expected = (
            shape.vocab * m.hidden_size
            + matmul_params(
                m.hidden_size,
                m.intermediate_size,
                m.num_layers,
                m.num_heads,
                m.num_kv_heads,
                shape.vocab,
            )
            + (2 * m.num_layers + 1) * m.hidden_size
        )
        assert shape.params == expected and 1e6 < expected < 5e6


def _deepspeed_printout(fn, *args, capsys) -> dict[str, tuple[float, float]]:
    """Run one of DeepSpeed's *_all_cold estimators and read back its table: options -> (CPU GB, GPU GB)."""
    fn(*args)
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        m = re.match(r"\s*([\d.]+)GB \|\s*([\d.]+)GB \| (.*)$", line)
        if m:
            # "offload_param=OffloadDeviceEnum.cpu, ..." in 0.19.8 -> "offload_param=cpu,..."
            options = re.sub(r"\s+|OffloadDeviceEnum\.", "", m.group(3))
            rows[options] = (float(m.group(1)), float(m.group(2)))
    assert rows, "DeepSpeed printed no estimate"
    return rows


@pytest.mark.parametrize(
    "rung,nodes,gpus_per_node", [("8b", 1, 8), ("70b", 8, 8), ("405b", 32, 8), ("405b", 1, 8)]
)
def test_model_state_memory_matches_deepspeed_estimators(rung, nodes, gpus_per_node, capsys):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_cold

    shape = model_shape(compose([f"rung={rung}"]))
    P, big, gpus = shape.params, shape.largest_module_params, nodes * gpus_per_node

    def ours(engine, offload=False):
        p, g, o, cpu = model_states(engine, P, big, gpus, nodes, offload)
        return round((p + g + o) / GiB, 2), round(cpu / GiB, 2)

    z2 = _deepspeed_printout(
        estimate_zero2_model_states_mem_needs_all_cold, P, gpus_per_node, nodes, capsys=capsys
    )
    assert ours("deepspeed_zero2")[0] == pytest.approx(z2["offload_optimizer=none"][1], abs=0.011)

    z3 = _deepspeed_printout(
        estimate_zero3_model_states_mem_needs_all_cold, P, big, gpus_per_node, nodes, capsys=capsys
    )
    assert ours("deepspeed_zero3")[0] == pytest.approx(
        z3["offload_param=none,offload_optimizer=none,zero_init=1"][1], abs=0.011
    )
    gpu, cpu = ours("deepspeed_zero3", offload=True)
    ds_cpu, ds_gpu = z3["offload_param=cpu,offload_optimizer=cpu,zero_init=1"]
    assert gpu == pytest.approx(ds_gpu, abs=0.011) and cpu == pytest.approx(ds_cpu, abs=0.011)


def test_plan_flops_use_the_shared_definition_with_attention():
    cfg = compose(["rung=tiny", "trainer.max_steps=3"])
    plan = make_plan(cfg)
    docs = [cfg.data.max_seq_len] * (plan.tokens // cfg.data.max_seq_len)
    assert plan.tokens == 3 * 2048
    assert plan.flops == pytest.approx(
        train_flops(plan.matmul_params, cfg.model.num_layers, cfg.model.hidden_size, docs)
    )
    assert plan.flops > 6 * plan.matmul_params * plan.tokens  # attention is counted


def test_405b_on_one_node_does_not_fit_and_names_the_fix(tmp_path):
    proc = ladder_cli("plan", "rung=405b", "rung.nodes=1", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "DOES NOT FIT" in out and "Traceback" not in out + proc.stderr
    assert (
        "rung.nodes=32" in out
    )  # the smallest node count that fits and keeps the global batch whole
    assert "rung.offload=true rung.nodes=8" in out  # or offload, with enough host memory


def test_plan_json_has_the_keys_and_the_rung_fits(tmp_path):
    proc = ladder_cli("plan", "rung=405b", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    for key in (
        "params",
        "flops",
        "memory_per_gpu_gb",
        "fits",
        "gpus",
        "gpu_hours",
        "wall_clock_h",
    ):
        assert key in plan
    assert plan["params"] == PUBLISHED["405b"] and plan["gpus"] == 256 and plan["fits"] is True
    assert plan["memory_per_gpu_gb"] <= 80 * USABLE_FRACTION
    assert plan["gpu_hours"] == pytest.approx(plan["gpus"] * plan["wall_clock_h"])
    assert plan["cost"] == pytest.approx(plan["gpu_hours"] * 2.0)


def test_other_fixes_are_named_when_they_are_the_cure():
    # short documents (data=reverse), so a smaller micro-batch still holds a whole one
    plan = make_plan(compose(["rung=70b", "rung.activation_checkpointing=false", "data=reverse"]))
    assert not plan.fits
    fixes = [f for f, _ in plan.fixes]
    assert "rung.activation_checkpointing=true" in fixes
    assert any(f.startswith("rung.micro_batch_tokens=") for f in fixes)
    plan = make_plan(compose(["rung=8b", "rung.engine=ddp"]))
    assert not plan.fits and "rung.engine=deepspeed_zero3" in [f for f, _ in plan.fixes]
    for _, gib in plan.fixes:
        assert gib <= 80 * USABLE_FRACTION


def test_plan_uses_the_median_measured_mfu_of_the_rung(tmp_path):
    cfg = compose(["rung=8b", f"trainer.run_root={tmp_path}"])
    assumed = make_plan(cfg, None)
    assert assumed.rate == cfg.rung.assumed_mfu and "assumed" in assumed.rate_source
    ledger = Ledger.from_config(cfg)
    for mfu in (0.2, 0.3, 0.5):
        ledger.add_job(
            team="t",
            period="2026-01",
            rung="8b",
            gpus=8,
            planned_gpu_hours=1.0,
            state="completed",
            mfu=mfu,
        )
    ledger.add_job(
        team="t",
        period="2026-01",
        rung="70b",
        gpus=64,
        planned_gpu_hours=1.0,
        state="completed",
        mfu=0.9,
    )
    measured = make_plan(cfg, ledger)
    assert measured.rate == 0.3 and measured.rate_source.startswith("measured (3 runs")
    steps = measured.gpu_hours - measured.overhead.gpu_hours  # start-up is not a rate's
    assert steps == pytest.approx(
        (assumed.gpu_hours - assumed.overhead.gpu_hours) * cfg.rung.assumed_mfu / 0.3
    )
    assert steps == pytest.approx(measured.flops / (989e12 * 0.3) / 3600)


def test_bad_ledger_url_and_bad_batch_are_clear_errors(tmp_path):
    # a server that cannot be reached: one clear line, no traceback (PostgreSQL ledgers: launch/accounting/ledger.py)
    proc = ladder_cli("plan", "rung=8b", "ledger.url=postgresql://db.invalid/ladder", cwd=tmp_path)
    assert (
        proc.returncode == 2
        and "cannot open the ledger at postgresql://db.invalid/ladder" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    with pytest.raises(
        ConfigError,
        match=r"rung.global_batch_tokens=524288 is not a multiple .* trainer.global_batch_tokens",
    ):
        make_plan(compose(["rung=8b", "rung.nodes=3"]))


@pytest.mark.parametrize(
    "overrides",
    [
        [
            "rung=70b",
            "rung.engine=deepspeed_zero2",
            "rung.nodes=1",
        ],  # offload is refused with ZeRO-2
        ["rung=70b", "rung.engine=ddp"],
        ["rung=405b", "rung.nodes=1"],
        ["rung=8b", "rung.gpu_memory_gb=10"],
        ["rung=8b", "rung.engine=single", "rung.nodes=1", "rung.gpus_per_node=1"],
    ],
)
def test_every_fix_the_planner_offers_validates_and_fits_when_planned(overrides):
    from launch.planning.plan import fix_message, make_plan

    plan = make_plan(compose(overrides))
    assert not plan.fits and plan.fixes, fix_message(plan)
    for fix, gib in plan.fixes:
        fixed = make_plan(
            compose([*overrides, *fix.split()])
        )  # validates, as `ladder launch` would
        assert fixed.fits, (overrides, fix, fix_message(fixed))
        assert fixed.memory.total / 2**30 == pytest.approx(gib)


@pytest.mark.parametrize(
    "rung, recipe, hub_name, seq",
    [
        ("8b", "sft", "allenai/tulu-3-sft-mixture", 4096),
        ("70b", "sft", "allenai/tulu-3-sft-mixture", 4096),
        ("405b", "sft", "allenai/tulu-3-sft-mixture", 4096),
        ("8b", "dpo", "allenai/llama-3.1-tulu-3-8b-preference-mixture", 2048),
    ],
)
def test_big_rungs_plan_on_the_tulu3_mixtures_not_on_the_toy_task(rung, recipe, hub_name, seq):
    cfg = compose([f"rung={rung}", f"recipe={recipe}"])
    assert cfg.data.hub_name == hub_name and cfg.data.max_seq_len == seq
    plan = make_plan(cfg)
    assert plan.doc_tokens == seq
    # the textbook figure, written out here independently: 6N per token plus causal attention,
    # 6 x layers x hidden x sequence length per token
    n, m = plan.matmul_params, cfg.model
    reference = plan.reference.flops if plan.reference else 0.0  # DPO's reference pass, apart
    assert plan.flops - reference == pytest.approx(
        plan.tokens * (6 * n + 6 * m.num_layers * m.hidden_size * seq), rel=1e-9
    )
    assert compose(["rung=tiny", f"recipe={recipe}"]).data.name.startswith(
        "reverse"
    )  # the CPU rungs keep it


def test_dpo_plans_its_reference_forward_and_a_live_reference_memory(tmp_path):
    """#28 item 3: the reference's forward passes count in FLOPs and GPU-hours, and a live
    reference (precompute_reference=false) also in memory; a precomputed one scores the data set."""
    dpo = ["rung=70b", "recipe=dpo", f"trainer.run_root={tmp_path}"]
    pre, live = (
        make_plan(compose(dpo)),
        make_plan(compose([*dpo, "recipe.precompute_reference=false"])),
    )
    seq = compose(dpo).data.max_seq_len
    sft = make_plan(compose(["rung=70b", "recipe=sft", f"data.max_seq_len={seq}"]))
    assert sft.reference is None and pre.tokens == sft.tokens and pre.doc_tokens == sft.doc_tokens
    for p in (pre, live):  # unmeasured data: one forward over the run's tokens, a third of training
        assert p.reference.tokens == p.tokens
        assert p.flops == pytest.approx(sft.flops * 4 / 3, rel=1e-9)
        steps_h = p.gpu_hours - p.overhead.gpu_hours  # the same start-up and wrap-up for both
        assert steps_h == pytest.approx((sft.gpu_hours - sft.overhead.gpu_hours) * 4 / 3, rel=1e-9)
    # the live reference sits beside the policy: bf16 weights sharded over the 64 GPUs (ZeRO-3)
    assert pre.memory.reference == 0.0
    assert live.memory.reference == pytest.approx(2 * live.params / live.gpus)
    assert live.memory.total == pytest.approx(pre.memory.total + live.memory.reference)
    # measured by `ladder data inspect`: the precomputed pass scores the whole data set once
    cfg = compose(dpo)
    save_lengths(cfg, summarize([seq] * (3 * pre.tokens // seq)))
    measured = make_plan(cfg)
    assert measured.reference.tokens == 3 * pre.tokens
    assert measured.flops == pytest.approx(sft.flops + 3 * (pre.flops - sft.flops), rel=1e-9)
    again = make_plan(compose([*dpo, "recipe.precompute_reference=false"]))
    assert again.flops == pytest.approx(live.flops)  # live: every step's tokens, measured or not
    simpo = make_plan(compose([*dpo, "recipe.loss=simpo"]))
    assert simpo.reference is None and simpo.flops == pytest.approx(sft.flops, rel=1e-9)
