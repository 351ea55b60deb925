"""GRPO units: advantages, each loss against a hand computation on two groups, the first-pass
ratio, zero advantages, accumulation invariance, seeded sampling, verifiers and clear errors.

    .venv/bin/python -m pytest -q tests/test_grpo.py
"""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch

from training.common.errors import ConfigError, DataError
from training.config.compose import compose
from training.config.validate import validate
from training.model.modeling import build_model, load_tokenizer
from training.rl.generator import HFGenerator, sample_key
from training.rl.grpo import GRPO
from training.rl.rlvr_data import load_prompts
from training.rl.rollouts import group_advantages, pack
from training.rl.verifiers.registry import (
    VERIFIERS,
    exact_match,
    final_number,
    ifeval,
    number_match,
    verify,
)

G = 2


@functools.cache  # composing takes a second; the configs are read-only
def grpo_cfg(*extra):
    return compose(["recipe=grpo", "rung=tiny", *extra])


@pytest.fixture(scope="module")
def tiny():
    cfg = grpo_cfg()
    tok = load_tokenizer(cfg.model)
    return tok, build_model(cfg.model, tok, seed=0)


@pytest.fixture(scope="module")
def two_groups(tiny):
    """Two prompts, two fixed answers each: the batch every loss is checked on."""
    tok, _ = tiny
    enc = lambda m: tok(
        tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
        add_special_tokens=False,
    )["input_ids"]
    prompts = [
        enc([{"role": "user", "content": "Reverse: a b c"}]),
        enc([{"role": "user", "content": "Reverse: d e"}]),
    ]
    eos = tok.eos_token_id
    answers = [
        tok("c b a", add_special_tokens=False)["input_ids"] + [eos],
        tok("a b", add_special_tokens=False)["input_ids"],  # truncated: no EOS
        tok("e d", add_special_tokens=False)["input_ids"] + [eos],
        tok("d e e e", add_special_tokens=False)["input_ids"] + [eos],
    ]
    inputs = [prompts[0], prompts[0], prompts[1], prompts[1]]
    return inputs, answers, torch.tensor([[1.0, 0.0], [1.0, 0.0]])


def make_batch(
    recipe,
    inputs,
    answers,
    rewards,
    old_shift=0.0,
    ref_shift=None,
    first_pass=True,
    model=None,
    rows=False,
):
    b = pack(inputs, answers, rows=rows)
    adv, flat = group_advantages(rewards, recipe.name)
    w = torch.ones_like(rewards)
    if recipe.name == "dapo" and not bool(flat.all()):
        w[flat] = 0.0
    lens = torch.tensor([len(a) for a in answers])
    b.update(
        advantages=adv.flatten().float(),
        weights=w.flatten().float(),
        first_pass=first_pass,
        n_units=float((w.flatten() * recipe.sequence_units(lens)).sum()),
    )
    if model is not None:
        with torch.no_grad():
            lp = direct_logps(model, inputs, answers)
        flat_lp = torch.cat(
            [torch.cat([torch.zeros(len(p) - 1), x, torch.zeros(1)]) for p, x in zip(inputs, lp)]
        )
        if (
            not first_pass
        ):  # a later pass: the rollout policy's log-probs, a little away from the current
            # the shift depends on each token's place in its own document, so it survives repacking
            wave = torch.cat(
                [
                    torch.sin(torch.arange(len(p) + len(a), dtype=torch.float32))
                    for p, a in zip(inputs, answers)
                ]
            )
            b["old_logps"] = flat_lp + old_shift * wave
        if ref_shift is not None:
            b["ref_logps"] = flat_lp + ref_shift
    return b


def direct_logps(model, inputs, answers) -> list[torch.Tensor]:
    """Each answer token's log-prob, from its own unpacked forward pass."""
    out = []
    for p, a in zip(inputs, answers):
        ids = torch.tensor([p + a])
        logits = model(input_ids=ids, use_cache=False).logits[0].float()
        lp = torch.log_softmax(logits, -1)[len(p) - 1 : len(p) + len(a) - 1]
        out.append(lp.gather(1, torch.tensor(a)[:, None])[:, 0])
    return out


def hand_loss(
    name, model, inputs, answers, rewards, old_shift, ref_shift, beta, lo, hi, max_new, first_pass
):
    """The loss per the paper formulas, answer by answer, token by token, in plain Python."""
    lps = direct_logps(model, inputs, answers)
    groups = rewards.tolist()
    total, units = 0.0, 0.0
    for i, (p, a, lp) in enumerate(zip(inputs, answers, lps)):
        g = groups[i // G]
        mean = sum(g) / G
        std = math.sqrt(sum((r - mean) ** 2 for r in g) / (G - 1))
        r = g[i % G]
        A = r - mean if name == "dr_grpo" else (r - mean) / (std + 1e-4)
        if name == "dapo" and all(x == g[0] for x in g):  # dynamic sampling drops the group
            continue
        tok_losses = []
        for t, x in enumerate(lp.tolist()):
            flat_index = len(p) - 1 + t
            old = x if first_pass else x + old_shift * math.sin(flat_index)
            ratio = math.exp(x - old)
            l_t = -min(ratio * A, min(max(ratio, 1 - lo), 1 + hi) * A)
            if beta:
                d = (x + ref_shift) - x
                l_t += beta * (math.exp(d) - d - 1)
            tok_losses.append(l_t)
        if name == "grpo":
            total, units = total + sum(tok_losses) / len(a), units + 1
        elif name == "dr_grpo":
            total, units = total + sum(tok_losses), units + max_new
        else:
            total, units = total + sum(tok_losses), units + len(a)
    return total / units


def recipe_for(name, clip_low=0.2, clip_high=0.28, kl_beta=0.0):
    return GRPO(
        grpo_cfg(
            f"recipe.loss={name}",
            f"recipe.clip_low={clip_low}",
            f"recipe.clip_high={clip_high}",
            f"recipe.kl_beta={kl_beta}",
        )
    )


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("first_pass", [True, False])
def test_loss_equals_the_hand_computation_on_two_groups(tiny, two_groups, name, first_pass):
    _, model = tiny
    inputs, answers, rewards = two_groups
    if name == "dapo":  # the second group agrees: dynamic sampling drops it
        rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    beta = 0.05
    recipe = recipe_for(name, kl_beta=beta)
    b = make_batch(
        recipe,
        inputs,
        answers,
        rewards,
        old_shift=0.8,
        ref_shift=0.3,
        first_pass=first_pass,
        model=model,
    )
    with torch.no_grad():
        loss, _ = recipe.loss_sum(model, b)
    want = hand_loss(
        name,
        model,
        inputs,
        answers,
        rewards,
        0.8,
        0.3,
        beta,
        0.2,
        0.28,
        recipe.max_new_tokens,
        first_pass,
    )
    assert float(loss) / GRPO.count(b) == pytest.approx(want, abs=1e-5, rel=1e-5)
    stats = recipe.take_token_stats()
    assert (stats["clipped"] > 0) == (not first_pass), (
        "the 0.8 shift moves some ratios past the clip range"
    )
    assert stats["kl"] > 0


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "dapo"])
def test_zero_advantages_give_zero_gradient(tiny, two_groups, name):
    _, model = tiny
    inputs, answers, _ = two_groups
    recipe = recipe_for(name)
    b = make_batch(
        recipe,
        inputs,
        answers,
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        old_shift=0.4,
        first_pass=False,
        model=model,
    )
    b["advantages"] = torch.zeros_like(b["advantages"])
    model.zero_grad()
    loss, _ = recipe.loss_sum(model, b)
    loss.backward()
    norms = [float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None]
    assert norms and max(norms) == 0.0
    model.zero_grad()


def test_first_pass_ratio_is_one_and_clipping_changes_nothing(tiny, two_groups):
    _, model = tiny
    inputs, answers, rewards = two_groups
    grads, losses = [], []
    for lo, hi in [(1e-6, 1e-6), (0.2, 0.2), (0.9, 100.0)]:
        recipe = recipe_for("grpo", clip_low=lo, clip_high=hi)
        b = make_batch(recipe, inputs, answers, rewards)
        model.zero_grad()
        loss, _ = recipe.loss_sum(model, b)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        assert recipe.take_token_stats()["clipped"] == 0
    # ratio exactly 1: each answer's loss is -A, so the sum over answers is -sum(A) (0 for normalised groups)
    adv, _ = group_advantages(rewards, "grpo")
    assert losses[0] == pytest.approx(-float(adv.sum()), abs=1e-7)
    assert losses[0] == losses[1] == losses[2]
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[1], grads[2])
    assert float(grads[0].abs().max()) > 0
    model.zero_grad()


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "dapo"])
def test_gradient_is_the_same_whatever_the_accumulation(tiny, two_groups, name):
    """One micro-batch of both groups, or one group per micro-batch, each summed loss divided by
    the step's units (the loop's rule): the same gradient."""
    _, model = tiny
    inputs, answers, _ = two_groups
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    recipe = recipe_for(name)

    def grad(parts):
        model.zero_grad()
        batches = [
            make_batch(
                recipe,
                [inputs[i] for i in ix],
                [answers[i] for i in ix],
                rewards[g],
                old_shift=0.4,
                first_pass=False,
                model=model,
            )
            for g, ix in parts
        ]
        units = sum(GRPO.count(b) for b in batches)
        for b in batches:
            (recipe.loss_sum(model, b)[0] / units).backward()
        return torch.cat([p.grad.flatten().clone() for p in model.parameters()])

    whole = grad([([0, 1], [0, 1, 2, 3])])
    split = grad([([0], [0, 1]), ([1], [2, 3])])
    assert torch.allclose(whole, split, atol=1e-7, rtol=1e-5)
    assert float(whole.abs().max()) > 0
    model.zero_grad()


def test_padded_rows_give_the_packed_rows_loss_and_gradient(tiny, two_groups):
    """Answers in padded rows (SDPA's layout, rollouts.rows_layout) or packed in one row: the same
    loss, gradient and token statistics, to float32 rounding (another summation order, so not bit
    for bit), for every RL loss, with the clipped ratio, KL and DAPO's dropped group all acting."""
    _, model = tiny
    inputs, answers, _ = two_groups
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # DAPO drops the second group
    for name in ("grpo", "dr_grpo", "dapo"):
        recipe = recipe_for(name, kl_beta=0.05)
        packed = make_batch(recipe, inputs, answers, rewards, 0.8, 0.3, False, model)
        # the same batch in rows: the log-probs it carries are per token, in packed order
        rows = {**packed, **pack(inputs, answers, rows=True)}
        out = {}
        for layout, b in (("packed", packed), ("rows", rows)):
            model.zero_grad()
            loss, _ = recipe.loss_sum(model, b)
            loss.backward()
            grad = torch.cat([p.grad.flatten() for p in model.parameters()])
            out[layout] = (float(loss), grad, recipe.take_token_stats())
        model.zero_grad()
        assert rows["input_ids"].shape == (4, max(len(p) + len(a) for p, a in zip(inputs, answers)))
        assert out["rows"][1].abs().max() > 0
        assert out["rows"][0] == pytest.approx(out["packed"][0], rel=1e-6, abs=1e-7), name
        grad_rows, grad_packed = out["rows"][1], out["packed"][1]
        assert float((grad_rows - grad_packed).norm() / grad_packed.norm()) < 1e-6, name
        for k, v in out["packed"][2].items():
            assert out["rows"][2][k] == pytest.approx(v, rel=1e-6, abs=1e-6), (name, k)


def test_group_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    adv, flat = group_advantages(r, "grpo")
    std = math.sqrt(1 / 3)  # unbiased std of (1, 0, 0, 1)
    assert adv[0].tolist() == pytest.approx(
        [0.5 / (std + 1e-4), -0.5 / (std + 1e-4)] * 1 + [-0.5 / (std + 1e-4), 0.5 / (std + 1e-4)]
    )
    assert adv[1].tolist() == [0.0] * 4 and flat.tolist() == [False, True]
    adv, _ = group_advantages(r, "dr_grpo")
    assert adv[0].tolist() == [0.5, -0.5, -0.5, 0.5]


def test_sampling_is_seeded_per_answer_not_per_batch(tiny):
    """An answer's sample depends on its key only: alone or beside another prompt, the same tokens."""
    tok, model = tiny
    gen = HFGenerator(grpo_cfg().generator, tok)
    p1 = tok(
        "<|im_start|>user\nReverse: a b<|im_end|>\n<|im_start|>assistant\n",
        add_special_tokens=False,
    )["input_ids"]
    p2 = tok(
        "<|im_start|>user\nReverse: q r s t u<|im_end|>\n<|im_start|>assistant\n",
        add_special_tokens=False,
    )["input_ids"]
    keys = [sample_key(0, 1, 7, j) for j in range(3)]
    alone, _ = gen.sample(model, [p1] * 3, keys)
    mixed, _ = gen.sample(model, [p2, p1, p1, p1], [sample_key(0, 1, 9, 0), *keys])
    assert mixed[1:] == alone
    assert len({tuple(a) for a in alone}) > 1, "different keys draw different answers"
    other, _ = gen.sample(model, [p1] * 3, [sample_key(0, 2, 7, j) for j in range(3)])
    assert other != alone, "another step draws other answers"


# ---- verifiers ---------------------------------------------------------------------------------
def test_verifiers_score_answers():
    assert exact_match(" m z q k\n", "m z q k") == 1.0 and exact_match("m z q", "m z q k") == 0.0
    assert number_match("so 3 + 4 = 7. The answer is 7.", "7") == 1.0
    assert (
        number_match("#### 1,234", "1234") == 1.0 and number_match("the answer is 12", "13") == 0.0
    )
    assert number_match(r"we get \boxed{3/4} after 10 steps", "0.75") == 1.0
    assert final_number("no digits") is None and number_match("none", "5") == 0.0
    assert number_match("-43", "-43") == 1.0
    gt = json.dumps([{"type": "lowercase"}, {"type": "max_words", "n": 3}])
    assert ifeval("all small words", gt) == 1.0 and ifeval("Not all small", gt) == 0.0
    assert {"reverse", "gsm8k", "math", "ifeval"} <= set(VERIFIERS)


def test_a_verifier_that_raises_names_the_row():
    with pytest.raises(DataError, match=r"data.jsonl:3: verifier 'gsm8k' raised .*not a number"):
        verify("gsm8k", "42", "forty-two", "data.jsonl:3")


# ---- data and config errors ---------------------------------------------------------------------
def rlvr_file(tmp_path, rows):
    path = tmp_path / "rl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROW = {
    "messages": [{"role": "user", "content": "Compute: 1 + 2"}],
    "ground_truth": "3",
    "dataset": "gsm8k",
}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({k: v for k, v in ROW.items() if k != "ground_truth"}, r"rl.jsonl:2: no 'ground_truth'"),
        ({**ROW, "dataset": "chess"}, r"rl.jsonl:2: dataset='chess' names no verifier; known: \["),
        (
            {**ROW, "dataset": "ifeval", "ground_truth": '{"type": "haiku"}'},
            r"rl.jsonl:2: .*unknown constraint type",
        ),
        (
            {**ROW, "messages": [{"role": "user", "content": "Reverse: " + "a " * 60}]},
            r"rl.jsonl:2: the prompt is \d+ tokens; with generator.max_new_tokens=16 "
            r"it does not fit in data.max_seq_len=64",
        ),
    ],
)
def test_bad_rows_are_named_by_file_and_line(tiny, tmp_path, bad, message):
    tok, _ = tiny
    path = rlvr_file(tmp_path, [ROW, bad])
    cfg = grpo_cfg(f"data.train_files=[{path}]")
    with pytest.raises(DataError, match=message):
        load_prompts(cfg.data, tok, cfg.generator.max_new_tokens)


def test_open_instruct_rows_load_through_the_same_loader(tiny, tmp_path):
    """The RLVR-GSM-MATH-IF format (messages, ground_truth, dataset), here from a local file."""
    tok, _ = tiny
    rows = [
        ROW,
        {**ROW, "dataset": "MATH", "ground_truth": "1/2"},
        {
            "messages": [{"role": "user", "content": "Say hi in lowercase."}],
            "ground_truth": '{"type": "lowercase"}',
            "dataset": "ifeval",
        },
    ]
    cfg = grpo_cfg(f"data.train_files=[{rlvr_file(tmp_path, rows)}]", "data.max_seq_len=256")
    prompts = load_prompts(cfg.data, tok, cfg.generator.max_new_tokens)
    assert [p.verifier for p in prompts] == ["gsm8k", "math", "ifeval"]
    assert prompts[0].where.endswith("rl.jsonl:1")


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "recipe.num_generations=1",
            r"recipe.num_generations=1: GRPO compares the answers within a prompt's group",
        ),
        ("generator.max_new_tokens=64", r"generator.max_new_tokens=64 leaves no room for a prompt"),
        ("generator=vllm", r"generator=vllm runs vLLM on the GPUs, and this run has none"),
        (
            "data=reverse",
            r"data.format='messages': recipe.loss=grpo needs data in the 'rlvr' format",
        ),
    ],
)
def test_bad_configs_are_refused_at_start(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(grpo_cfg(override), world_size=1)


def test_shipped_prompts_are_disjoint_from_the_heldout_split():
    from training.data.synthetic import ASSETS

    read = lambda name: [json.loads(line) for line in (ASSETS / name).read_text().splitlines()]
    train, heldout = read("reverse_rlvr_train.jsonl"), read("reverse_rlvr_heldout.jsonl")
    prompt = lambda r: r["messages"][-1]["content"]
    assert not {prompt(r) for r in train} & {prompt(r) for r in heldout}
    assert {r["dataset"] for r in train} == {"reverse", "arith"} and sum(
        r["dataset"] == "arith" for r in train
    ) >= 200
    eval_heldout = read("reverse_heldout.jsonl")  # the eval's split: no GRPO prompt is scored there
    assert not {prompt(r) for r in train} & {r["messages"][0]["content"] for r in eval_heldout}


def test_plan_counts_generation_at_2n_per_token():
    from launch.planning.plan import make_plan

    plan = make_plan(grpo_cfg("rung=8b", "trainer.max_steps=10", "recipe.ppo_epochs=2"))
    rl = plan.rl
    answers = 64 * 8  # the 8b rung's rung.rl_prompts_per_step x recipe.num_generations
    assert rl.answers_per_step == answers and rl.prompt_tokens + rl.new_tokens == 2048
    assert rl.gen_tokens == 5 * answers * 2048, (
        "one generation per rollout batch: 10 steps / 2 passes"
    )
    assert rl.gen_flops == 2 * plan.matmul_params * rl.gen_tokens
    assert plan.flops == rl.train_flops + rl.gen_flops
    # generation is timed at the assumed decode MFU, training at the rung's
    want_s = rl.train_flops / (8 * 989e12 * plan.rate) + rl.gen_flops / (
        8 * 989e12 * rl.assumed_decode_mfu
    )
    assert plan.wall_clock_h * 3600 - plan.overhead.seconds == pytest.approx(want_s)
