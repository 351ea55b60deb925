"""generator.impl: every impl draws the eager path's tokens, and the fast ones drop finished answers.

    .venv/bin/python -m pytest -q tests/test_generator_impls.py            # -m slow: the compiled one

An answer's tokens are a function of its key (training/rl/sampling_noise.py), so the static-cache
loop (training/rl/decode_loop.py) and continuous batching (training/rl/continuous.py) must give
the answers transformers' generate gives, sampled (temperature, top-p) and greedy alike.
"""

from __future__ import annotations

import functools

import pytest
from omegaconf import OmegaConf

from training.common.errors import ConfigError
from training.config.compose import compose
from training.config.validate import validate
from training.model.modeling import build_model, load_tokenizer
from training.rl.generator import HFGenerator, sample_key

N = 12


@functools.cache
def grpo_cfg(*extra):
    return compose(["recipe=grpo", "rung=tiny", f"generator.max_new_tokens={N}", *extra])


@pytest.fixture(scope="module")
def tiny():
    cfg = grpo_cfg("generator.top_p=0.9")
    tok = load_tokenizer(cfg.model)
    enc = lambda s: tok(
        f"<|im_start|>user\n{s}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
    )["input_ids"]
    # with seed 0 and these keys, the second answer ends after 3 tokens, the others run to N
    prompts = [enc("Reverse: a b"), enc("Reverse: q r s t u v"), enc("Add 2 and 3"), enc("x")]
    keys = [sample_key(0, 1, i, 0) for i in range(len(prompts))]
    return cfg, tok, build_model(cfg.model, tok, seed=0), prompts, keys


def generator(cfg, tok, impl, compile=False):
    gen_cfg = OmegaConf.merge(OmegaConf.to_container(cfg.generator), {"impl": impl})
    return HFGenerator(gen_cfg, tok, compile=compile)


@pytest.fixture(scope="module")
def eager(tiny):
    cfg, tok, model, prompts, keys = tiny
    gen = generator(cfg, tok, "eager")
    return gen.sample(model, prompts, keys)[0], gen.sample(model, prompts, None)[0]


def batch_sizes(model):
    """The batch size of every forward pass the model runs, until the handle is removed."""
    sizes = []
    handle = model.register_forward_pre_hook(
        lambda _, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return sizes, handle


@pytest.mark.parametrize("impl", ["static_compiled", "continuous"])
def test_each_impl_draws_the_eager_tokens(tiny, eager, impl):
    cfg, tok, model, prompts, keys = tiny
    sampled, greedy = eager
    assert len(sampled[1]) < N and {len(a) for a in sampled[::2]} == {N}, "one answer ends early"
    gen = generator(cfg, tok, impl)  # static_compiled with compile off: the same loop, eager
    assert gen.sample(model, prompts, keys)[0] == sampled
    assert gen.sample(model, prompts, None)[0] == greedy
    # an answer does not depend on its batch: alone, or in another order, the same tokens
    assert gen.sample(model, [prompts[2]], [keys[2]])[0] == [sampled[2]]
    order = [3, 1, 0]
    assert gen.sample(model, [prompts[i] for i in order], [keys[i] for i in order])[0] == [
        sampled[i] for i in order
    ]


def test_static_loop_drops_finished_answers(tiny, eager):
    """Answers 0 and 1: once answer 1 has ended, each decode step forwards one row, not two."""
    cfg, tok, model, prompts, keys = tiny
    sizes, handle = batch_sizes(model)
    try:
        out, _ = generator(cfg, tok, "static_compiled").sample(model, prompts[:2], keys[:2])
    finally:
        handle.remove()
    assert out == eager[0][:2]
    ended = len(out[1])  # answer 1's last token came from the forward at index ended - 1
    assert sizes[:ended] == [2] * ended and sizes[ended:] == [1] * (N - ended)


def test_static_loop_prefills_each_prompt_once_for_its_answers(tiny, eager):
    """GRPO's G answers per prompt: one prefill row per distinct prompt, then every answer's own
    tokens, the same as generate's, which prefills all 3 x 3 rows."""
    cfg, tok, model, prompts, keys = tiny
    group = [0, 0, 2, 0, 2, 3, 2, 3, 3]  # three prompts, three answers each, interleaved
    answer_keys = [sample_key(0, 1, p, j) for j, p in enumerate(group)]
    sampled = generator(cfg, tok, "eager").sample(model, [prompts[p] for p in group], answer_keys)
    sizes, handle = batch_sizes(model)
    try:
        out, _ = generator(cfg, tok, "static").sample(
            model, [prompts[p] for p in group], answer_keys
        )
    finally:
        handle.remove()
    assert out == sampled[0]
    assert len({tuple(a) for a in out}) > 3, "a prompt's answers differ from each other"
    assert sizes[0] == 3 and sizes[1] == 16, "3 prefill rows, then the 9 answers' bucket of 16"


def test_auto_is_the_static_loop_on_a_cpu_and_generate_for_a_peft_model(tiny):
    from peft import LoraConfig, get_peft_model

    from training.rl.generator import resolve_impl

    cfg, tok, model, prompts, keys = tiny
    assert cfg.generator.impl == "auto"
    assert resolve_impl("auto", model) == "static"
    assert resolve_impl("eager", model) == "eager"
    peft = get_peft_model(
        build_model(cfg.model, tok, seed=0), LoraConfig(r=1, target_modules=["q_proj"])
    )
    assert resolve_impl("auto", peft) == "eager"


@pytest.mark.slow
def test_compiled_static_loop_draws_the_eager_tokens(tiny, eager):
    """torch.compile on a CPU (inductor and a C++ compiler): about a minute on 2 cores."""
    cfg, tok, model, prompts, keys = tiny
    gen = generator(cfg, tok, "static_compiled", compile=True)
    assert gen.sample(model, prompts[:2], keys[:2])[0] == eager[0][:2]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["rung.engine=fsdp2", "rung.gpus_per_node=2", "generator.impl=continuous"],
            "generator.impl=continuous with rung.engine=fsdp2",
        ),
        (["generator=vllm", "generator.impl=static_compiled"], "applies to generator=hf"),
    ],
)
def test_impls_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(grpo_cfg(*overrides))


def test_an_unknown_impl_is_refused_at_compose_naming_the_choices():
    with pytest.raises(
        ConfigError, match="generator.impl takes one of auto, eager, static, static_compiled, "
    ):
        compose(["recipe=grpo", "generator.impl=sglang"])
