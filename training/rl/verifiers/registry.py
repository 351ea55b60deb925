"""Verifiers: pure functions of (answer, ground truth) -> reward in [0, 1], one registry.

    from training.rl.verifiers.registry import verify, VERIFIERS
    verify("gsm8k", "so the answer is 42.", "42")         # 1.0
    verify("math", r"so $\\boxed{\\dfrac12}$", "0.5")     # 1.0
    python -m pytest -q tests/test_grpo.py -k verifier

Each check is written once here and serves both as the GRPO reward (training/rl/grpo.py) and as the
eval score (evals/tasks/synthetic.py: exact match; evals/tasks/instructions.py: the ifeval_lite checks).
evals import this module; training never imports evals.

Rows name their verifier by open-instruct's RLVR `dataset` field (case-insensitive):
  reverse, exact_match   the stripped answer equals the ground truth
  gsm8k, arith           the last number in the answer equals the ground truth's number
  math                   the final answer (last \\boxed{...}, else "the answer is X", else the last
                         number) is equivalent to a LaTeX ground truth: \\frac{1}{2} == 0.5,
                         (2, -1), \\text{(B)}, 90^\\circ... (training/rl/verifiers/math_answers.py)
  ifeval                 every constraint holds; the ground truth is one constraint, a list of them,
                         or either as JSON text. A constraint is ours (ifeval_lite's
                         {"type": "max_words", "n": 5}) or open-instruct's ({"func_name":
                         "validate_lowercase", "N": null, ...}: training/rl/verifiers/if_functions.py)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from fractions import Fraction

from training.common.errors import DataError
from training.rl.verifiers.if_functions import call_constraint, constraint_problem
from training.rl.verifiers.math_answers import math_equal, normalize


# ---- exact match ---------------------------------------------------------------------------
def exact_match(answer: str, ground_truth) -> float:
    return float(answer.strip() == str(ground_truth).strip())


# ---- final number (GSM8K, MATH-style) ------------------------------------------------------
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def _to_number(text: str) -> Fraction | None:
    text = text.replace(",", "").strip().rstrip(".")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def final_number(answer: str) -> Fraction | None:
    """The answer's final number: the last \\boxed{...} if any (MATH), else the last number in the
    text (GSM8K's '#### 42' and 'the answer is 42.' both end with it)."""
    boxed = _BOXED.findall(answer)
    candidates = _NUMBER.findall(boxed[-1]) if boxed else _NUMBER.findall(answer)
    return _to_number(candidates[-1]) if candidates else None


def number_match(answer: str, ground_truth) -> float:
    want = _to_number(str(ground_truth).split("####")[-1])
    if want is None:
        raise ValueError(f"the ground truth {ground_truth!r} is not a number")
    got = final_number(answer)
    return float(got is not None and got == want)


# ---- MATH: LaTeX answers (training/rl/verifiers/math_answers.py) ------------------------------------------
def math_truth(ground_truth) -> str:
    """The ground truth's normal form; a ValueError when nothing is left of it (the row is refused
    at load time). MATH truths are LaTeX (\\frac{1}{2}, (2, -1), x^2+1), not only numbers."""
    normal = normalize(ground_truth) if ground_truth is not None else ""
    if not normal:
        raise ValueError(
            f"the ground truth {ground_truth!r} is empty once normalised "
            "(a MATH answer such as 42, \\frac{1}{2} or (2, -1) is expected)"
        )
    return normal


def math_match(answer: str, ground_truth) -> float:
    math_truth(ground_truth)  # a truth with nothing in it is a data error, not a reward of 0
    return float(math_equal(answer, ground_truth))


# ---- IFEval-style constraints (the ifeval_lite eval scores with these) ---------------------
def _words(text: str) -> list[str]:
    return text.split()


def _bare(word: str) -> str:
    return re.sub(r"^\W+|\W+$", "", word).lower()


# One checker per constraint type: (answer, params) -> met or not.
CHECKS: dict[str, Callable[[str, dict], bool]] = {
    "lowercase": lambda a, p: any(c.isalpha() for c in a) and a == a.lower(),
    "uppercase": lambda a, p: any(c.isalpha() for c in a) and a == a.upper(),
    "word_count": lambda a, p: len(_words(a)) == p["n"],
    "max_words": lambda a, p: 0 < len(_words(a)) <= p["n"],
    "min_words": lambda a, p: len(_words(a)) >= p["n"],
    "ends_with": lambda a, p: bool(_words(a)) and _bare(_words(a)[-1]) == p["word"].lower(),
    "starts_with": lambda a, p: bool(_words(a)) and _bare(_words(a)[0]) == p["word"].lower(),
    "include_word": lambda a, p: p["word"].lower() in {_bare(w) for w in _words(a)},
    "no_commas": lambda a, p: bool(a.strip()) and "," not in a,
    "single_line": lambda a, p: bool(a.strip()) and "\n" not in a.strip(),
}


def check(answer: str, constraint: dict) -> bool:
    """One constraint on one answer (ifeval_lite scores each constraint of a prompt with this).
    open-instruct's func_name constraints go to their functions, on the answer without its <think>."""
    if "func_name" in constraint:
        return call_constraint(answer, constraint)
    return CHECKS[constraint["type"]](answer.strip(), constraint)


def constraints_of(ground_truth) -> list[dict]:
    gt = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    gt = [gt] if isinstance(gt, dict) else gt
    if not isinstance(gt, list) or not gt or not all(isinstance(c, dict) for c in gt):
        raise ValueError(
            "an ifeval ground truth is a constraint object or a non-empty list of them"
        )
    problems = [p for c in gt if "func_name" in c and (p := constraint_problem(c))]
    if problems:  # an unknown func_name or its arguments: the row is named before any generation
        raise ValueError("; ".join(problems))
    unknown = [c.get("type") for c in gt if "func_name" not in c and c.get("type") not in CHECKS]
    if unknown:
        raise ValueError(
            f"unknown constraint type(s) {unknown}; known: {sorted(CHECKS)} "
            '(or open-instruct\'s {"func_name": ...})'
        )
    return gt


def ifeval(answer: str, ground_truth) -> float:
    return float(all(check(answer, c) for c in constraints_of(ground_truth)))


# ---- the registry --------------------------------------------------------------------------
VERIFIERS: dict[str, Callable[[str, object], float]] = {
    "reverse": exact_match,
    "exact_match": exact_match,
    "gsm8k": number_match,
    "math": math_match,
    "arith": number_match,
    "ifeval": ifeval,
}
# Ground truths a verifier can check before any generation (a malformed one fails at load time).
GROUND_TRUTH_CHECKS: dict[str, Callable[[object], object]] = {
    "ifeval": constraints_of,
    "gsm8k": lambda gt: number_match(str(gt), gt),
    "math": math_truth,
    "arith": lambda gt: number_match(str(gt), gt),
}


def verifier_name(dataset: str) -> str:
    return str(dataset).lower()


def check_row_verifier(dataset, ground_truth, where: str) -> str:
    """The row's verifier name; a DataError naming the row when it has none or its truth is malformed."""
    name = verifier_name(dataset)
    if name not in VERIFIERS:
        raise DataError(
            f"{where}: dataset={dataset!r} names no verifier; known: {sorted(VERIFIERS)}"
        )
    try:
        GROUND_TRUTH_CHECKS.get(name, lambda gt: None)(ground_truth)
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise DataError(
            f"{where}: ground_truth {ground_truth!r} cannot be checked by {name!r}: {e}"
        ) from None
    return name


def verify(name: str, answer: str, ground_truth, where: str = "a row") -> float:
    """The reward; a verifier that raises becomes a DataError naming the row and the answer."""
    try:
        return float(VERIFIERS[name](answer, ground_truth))
    except (
        Exception
    ) as e:  # a verifier bug or a malformed truth: name the row, not a bare traceback
        raise DataError(
            f"{where}: verifier {name!r} raised {type(e).__name__}: {e} "
            f"(answer {answer[:80]!r}, ground_truth {str(ground_truth)[:80]!r})"
        ) from e
