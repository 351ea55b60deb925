r"""The `math` verifier: MATH-style LaTeX answers (training/rl/verifiers/math_answers.py) and their rows loading.

    .venv/bin/python -m pytest -q tests/test_math_verifier.py

allenai/RLVR-GSM-MATH-IF-Mixed-Constraints has dataset="MATH" rows whose ground truths are LaTeX
(\frac{1}{2}, (2, -1), \text{(B)}, 90^\circ): each form is here, equal and unequal, as a whole
model response scored through verify, the path GRPO rewards take.
"""

from __future__ import annotations

import json

import pytest

from training.common.errors import DataError
from training.config.compose import compose
from training.model.modeling import load_tokenizer
from training.rl.rlvr_data import load_prompts
from training.rl.verifiers.math_answers import final_answer, is_equiv, last_boxed, normalize
from training.rl.verifiers.registry import VERIFIERS, check_row_verifier, number_match, verify

# (model response, ground truth, reward)
CASES = [
    # fractions and decimals: exact values, never rounded
    (r"so the probability is $\boxed{\frac{1}{2}}$.", "0.5", 1.0),
    (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
    (r"\boxed{0.33}", r"\frac{1}{3}", 0.0),
    (r"\boxed{\dfrac{3}{4}}", "3/4", 1.0),
    (r"\boxed{\tfrac34}", r"\frac{3}{4}", 1.0),
    (r"\boxed{\frac12}", r"\frac{1}{2}", 1.0),
    (r"\boxed{6/8}", r"\frac{3}{4}", 1.0),
    (r"\boxed{-\frac{1}{2}}", r"\frac{-1}{2}", 1.0),
    (r"\boxed{\frac{1}{2}}", r"-\frac{1}{2}", 0.0),
    (r"\boxed{.5}", "0.5", 1.0),
    # roots, pi and algebra: sympy decides what the string forms cannot
    (r"\boxed{\sqrt3}", r"\sqrt{3}", 1.0),
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),
    (r"\boxed{1.414}", r"\sqrt{2}", 0.0),
    (r"\boxed{\frac{\pi}{4}}", r"\pi/4", 1.0),
    (r"\boxed{\frac{\pi}{3}}", r"\pi/4", 0.0),
    (r"\boxed{1 + x^{2}}", "x^2+1", 1.0),
    (r"\boxed{x^2-1}", "x^2+1", 0.0),
    (r"\boxed{x = 5}", "5", 1.0),
    (r"\boxed{y=2x+3}", "3+2x", 1.0),
    # tuples and intervals: element by element, brackets included
    (r"\boxed{\left( 2, -1 \right)}", "(2, -1)", 1.0),
    (r"\boxed{(2,-1)}", "(-1,2)", 0.0),
    (r"\boxed{(0.5, 3)}", r"(\frac{1}{2}, 3)", 1.0),
    (r"\boxed{[1, 2)}", "[1,2]", 0.0),
    (r"\boxed{(-\infty, 3]}", r"(-\infty,3]", 1.0),
    (r"\boxed{(1,2,3)}", "(1,2)", 0.0),
    (r"\boxed{3, -2}", "-2, 3", 1.0),  # "all the solutions": in any order
    (r"\boxed{\{1,2\}}", r"\{2, 1\}", 1.0),
    # units and signs around the value
    (r"\boxed{\text{(B)}}", r"\text{(B)}", 1.0),
    (r"\boxed{B}", r"\text{(B)}", 1.0),
    (r"\boxed{(C)}", r"\text{(B)}", 0.0),
    (r"\boxed{10\%}", "10", 1.0),
    (r"\boxed{10}", r"10\%", 1.0),
    (r"\boxed{\$5}", "5", 1.0),
    (r"\boxed{5 \text{ dollars}}", r"\$5", 1.0),
    (r"\boxed{90^\circ}", "90", 1.0),
    (r"\boxed{90^{\circ}}", r"90^\circ", 1.0),
    (r"\boxed{12\text{ cm}^2}", "12", 1.0),
    (r"\boxed{1,000}", "1000", 1.0),
    (r"\boxed{\text{Monday}}", r"\text{Monday}", 1.0),
    (r"\boxed{\text{Tuesday}}", r"\text{Monday}", 0.0),
    # nested braces in the box, several boxes (the last counts), an unclosed box
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", 1.0),
    (r"first \boxed{2}, then corrected: \boxed{\frac{1}{\frac{1}{2}}}", "2", 1.0),
    (r"first \boxed{2}, then corrected: \boxed{3}", "2", 0.0),
    (r"\fbox{7}", "7", 1.0),
    # no box: "the answer is", Minerva's "Final Answer", then the last number
    (
        "Final Answer: The final answer is $\\frac{2}{3}$. I hope it is correct.",
        r"\frac{2}{3}",
        1.0,
    ),
    ("Adding them, the answer is 3.5. That is all.", r"\frac{7}{2}", 1.0),
    ("The answer is: $(2,-1)$", "(2,-1)", 1.0),
    ("So the answer is $12$ because both sides agree.", "12", 1.0),
    ("3 + 4 = 7 apples in total", "7", 1.0),
    ("3 + 4 = 7 apples in total", "8", 0.0),
    ("<think>maybe \\boxed{9}</think> It is \\boxed{8}", "8", 1.0),
    ("no answer at all", r"\frac{1}{2}", 0.0),
    (r"\boxed{}", "0", 0.0),
]


@pytest.mark.parametrize("response, truth, reward", CASES)
def test_math_answers_are_scored(response, truth, reward):
    assert verify("math", response, truth, "case") == reward


def test_the_dataset_name_is_case_insensitive_and_gsm8k_keeps_the_last_number():
    assert check_row_verifier("MATH", r"\frac{1}{2}", "row") == "math"
    assert VERIFIERS["gsm8k"] is number_match and VERIFIERS["arith"] is number_match
    with pytest.raises(
        DataError, match=r"row: ground_truth '\\\\frac\{1\}\{2\}' cannot be checked by 'gsm8k'"
    ):
        check_row_verifier("gsm8k", r"\frac{1}{2}", "row")


def test_extraction_and_normal_forms():
    assert last_boxed(r"a \boxed{\frac{a}{\sqrt{b}}} b") == r"\frac{a}{\sqrt{b}}"
    assert last_boxed(r"\boxed{\frac{1}{2}") is None  # cut off mid-box: no answer
    assert final_answer(r"\boxed 5$ done") == "5"
    assert final_answer("nothing here") is None
    assert normalize(r"$\left[ \dfrac12, 3 \right)$.") == r"[\frac{1}{2},3)"
    assert normalize(r"x = \frac1{x}") == r"\frac{1}{x}"
    assert is_equiv("0.5", r"\frac{1}{2}") and not is_equiv("0.33", r"\frac{1}{3}")


def test_sympy_never_runs_model_text_as_code_and_giant_powers_are_refused():
    assert verify("math", r"\boxed{__import__('os').getcwd()}", "1", "case") == 0.0
    assert verify("math", r"\boxed{9^{9^{9^{9}}}}", "1", "case") == 0.0


@pytest.mark.parametrize("truth", ["", "$ $", r"\boxed{}", r"\text{}", None])
def test_an_empty_truth_is_refused_at_load_and_at_scoring(truth):
    with pytest.raises(DataError, match=r"rl.jsonl:4: ground_truth .* cannot be checked by 'math'"):
        check_row_verifier("MATH", truth, "rl.jsonl:4")
    with pytest.raises(DataError, match=r"rl.jsonl:4: verifier 'math' raised ValueError"):
        verify("math", r"\boxed{1}", truth, "rl.jsonl:4")


TRUTHS = [
    r"\frac{1}{2}",
    r"\sqrt{3}",
    "(2, -1)",
    "x^2+1",
    r"\text{(B)}",
    r"10\%",
    r"\$5",
    r"90^\circ",
    r"\pi/4",
    "[0, 1)",
    "42",
]


def test_hub_style_math_rows_with_latex_truths_load(tmp_path):
    """Rows in allenai/RLVR-GSM-MATH-IF-Mixed-Constraints' format, from a local file."""
    path = tmp_path / "math.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Problem {i}: put the answer in \\boxed{{}}."}
            ],
            "ground_truth": truth,
            "dataset": "MATH",
        }
        for i, truth in enumerate(TRUTHS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose(
        ["recipe=grpo", "rung=tiny", f"data.train_files=[{path}]", "data.max_seq_len=256"]
    )
    prompts = load_prompts(cfg.data, load_tokenizer(cfg.model), cfg.generator.max_new_tokens)
    assert [p.verifier for p in prompts] == ["math"] * len(TRUTHS)
    assert [p.ground_truth for p in prompts] == TRUTHS
    assert (
        verify(
            prompts[2].verifier, r"so $\boxed{(2,-1)}$", prompts[2].ground_truth, prompts[2].where
        )
        == 1.0
    )

    path.write_text(json.dumps({**rows[0], "ground_truth": "$\\text{}$"}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:1: ground_truth .* cannot be checked by 'math'"):
        load_prompts(cfg.data, load_tokenizer(cfg.model), cfg.generator.max_new_tokens)
