r"""MATH-style answers: the model's final answer, a normal form, and equivalence with a ground truth.

    from training.rl.verifiers.math_answers import final_answer, normalize, is_equiv, math_equal
    final_answer(r"... so $x = \boxed{\frac{1}{2}}$.")       # '\\frac{1}{2}'
    normalize(r"\dfrac12")                                   # '\\frac{1}{2}'
    is_equiv("0.5", r"\frac{1}{2}")                          # True
    is_equiv("0.33", r"\frac{1}{3}")                         # False (exact, not rounded)
    math_equal(r"we get \boxed{(2, -1)}", "(2,-1)")          # True: the `math` verifier's check
    python -m pytest -q tests/test_math_verifier.py

The MATH ground truths of allenai/RLVR-GSM-MATH-IF-Mixed-Constraints are LaTeX answers
(\frac{1}{2}, \sqrt{3}, (2, -1), x^2+1, \text{(B)}, 10\%, 90^\circ, \pi/4), so "the last number"
cannot check them. Our own implementation, in the spirit of Hendrycks' MATH `is_equiv` and
Minerva's `normalize_final_answer`:

1. final_answer: the last \boxed{...} / \fbox{...} (nested braces kept), else what follows the last
   "final answer is" / "answer is" / "answer:", else the last number; a <think> section is skipped.
2. normalize: presentation that does not change the value goes: $ signs, \left/\right, thin
   spaces, spaces, \text{...} units, trailing periods, degrees, percent and dollar signs, a leading
   "x =", thousands separators; \dfrac/\tfrac become \frac, \frac12 becomes \frac{1}{2}.
3. is_equiv, in order, stopping at the first that decides:
   a. the normal forms are equal strings;
   b. both are exact numbers (integers, decimals, a/b, \frac{a}{b}): equal as Fractions, so
      0.5 == \frac{1}{2} but 0.33 != \frac{1}{3};
   c. both are tuples/intervals with the same brackets: element by element, in order
      ((2,-1) != (-1,2), [1,2) != [1,2]); both bare comma lists ("all solutions"): as multisets;
      unions of intervals: piece by piece;
   d. last resort, sympy (already installed: torch needs it): a small LaTeX subset is turned into
      a whitelisted expression and a - b is simplified, under a time limit, so \pi/4 ==
      \frac{\pi}{4} and x^2+1 == 1+x^2. Anything it cannot read is simply not equal.
   Steps a-c are pure string/Fraction work and deterministic; d only ever adds matches that a-c
   missed, and runs on short, already-normalised text.
"""

from __future__ import annotations

import functools
import re
import signal
import string
import threading
from fractions import Fraction

# ---- extracting the final answer -----------------------------------------------------------
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The contents of the {...} group opening at text[start], nested braces included, and the
    index after its closing brace; None when it is not closed (a truncated answer)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif text[i] == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    r"""The contents of the last \boxed{...} or \fbox{...} (nested braces kept: \boxed{\frac{1}{2}}
    gives \frac{1}{2}); also the brace-less `\boxed 5` some MATH solutions write. None if there is
    none, or the last one is never closed."""
    at = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if at < 0:
        return None
    rest = at + len("\\boxed" if text.startswith("\\boxed", at) else "\\fbox")
    if text.startswith(" ", rest) and not text[rest:].lstrip().startswith("{"):
        # `\boxed 5$`: the token up to the closing $ or whitespace
        return re.split(r"[\s$]", text[rest:].lstrip(), maxsplit=1)[0] or None
    rest = len(text) - len(text[rest:].lstrip())  # `\boxed {x}` is the same as `\boxed{x}`
    if not text.startswith("{", rest):
        return None
    group = _braced(text, rest)
    return group[0] if group else None


# "Final Answer: The final answer is X. I hope it is correct." (Minerva's prompt), then plain
# "the answer is X" / "Answer: X": X runs to the end of its sentence or line. A '.' followed by a
# digit is a decimal point, not the end of the sentence.
_ANSWER_IS = [
    re.compile(r"final\s+answer\s+is\s*:?\s*(.+?)\s*(?:\.(?!\d)|\n|$)", re.IGNORECASE),
    re.compile(r"answer\s*(?:is\b\s*:?|:)\s*(.+?)\s*(?:\.(?!\d)|\n|$)", re.IGNORECASE),
]


def final_answer(text: str) -> str | None:
    """The model's final answer as text, or None when it gives none (no box, no 'answer is', no
    number). A reasoning model's <think> section is skipped: only what follows the last </think>
    counts, so a number mused about while thinking is not taken for the answer."""
    text = str(text).split("</think>")[-1]
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for pattern in _ANSWER_IS:
        found = pattern.findall(text)
        if found and found[-1].strip(" $"):
            # "the answer is $5$ because ...": the math span is the answer, not the whole sentence
            math = re.search(r"\$([^$]+)\$", found[-1])
            return math.group(1) if math else found[-1]
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


# ---- the normal form -----------------------------------------------------------------------
# Words that are units, not part of the value, when they follow a number ("5 cm", "12 dollars").
_UNIT_WORDS = re.compile(
    r"^(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+))\s+(?:square\s+|cubic\s+)?"
    r"(?:units?|cm|mm|m|km|meters?|inches|inch|feet|foot|ft|yards?|miles?|mph|hours?|minutes?|"
    r"seconds?|days?|weeks?|years?|dollars?|cents?|degrees?|pounds?|ounces?|grams?|kg|liters?|"
    r"people|students|ways|points)\.?$",
    re.IGNORECASE,
)
_TEXT_COMMANDS = r"\\(?:text|textbf|textit|textrm|mbox|mathrm|mathbf|operatorname)"


def _fix_fracs(s: str) -> str:
    r"""\frac12 -> \frac{1}{2}, \frac1{x} -> \frac{1}{x}, \frac{a}b -> \frac{a}{b}: LaTeX takes
    one character (or one command) as an argument without braces; we always brace it so that
    equal values are written alike."""
    out, i = [], 0
    while True:
        j = s.find("\\frac", i)
        if j < 0:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:j] + "\\frac")
        k = j + len("\\frac")
        for _ in range(2):
            if k >= len(s):
                break
            if s[k] == "{":
                group = _braced(s, k)
                if group is None:
                    break
                out.append("{" + _fix_fracs(group[0]) + "}")
                k = group[1]
            elif s[k] == "\\":
                cmd = re.match(r"\\[a-zA-Z]+", s[k:])
                arg = cmd.group(0) if cmd else s[k : k + 2]
                out.append("{" + arg + "}")
                k += len(arg)
            else:
                out.append("{" + s[k] + "}")
                k += 1
        i = k


def _drop_text(s: str) -> str:
    r"""\text{...} and friends: a trailing one after a value is a unit (5\text{ cm}^2 -> 5), any
    other is unwrapped (\text{(B)} -> (B), \text{Monday} -> Monday)."""
    trailing = re.compile(_TEXT_COMMANDS + r"\s*\{[^{}]*\}(?:\^\{?\d\}?)?\s*$")
    m = trailing.search(s)
    if m and s[: m.start()].strip():
        s = s[: m.start()]
    return re.sub(_TEXT_COMMANDS + r"\s*\{([^{}]*)\}", r"\1", s)


def normalize(answer) -> str:
    r"""The answer's normal form: two answers with equal normal forms are equal (the converse needs
    is_equiv). Deterministic string work only; '' when nothing of a value is left."""
    return _normalize(str(answer))


@functools.lru_cache(maxsize=65536)  # a GRPO group scores G answers against one truth
def _normalize(s: str) -> str:
    s = s.strip()
    boxed = last_boxed(s)
    if boxed is not None:  # a truth (or an extracted answer) still written as \boxed{...}
        s = boxed
    s = s.replace("\n", " ").replace("\\$", "").replace("$", "")  # math mode and dollar signs
    s = re.sub(r"\\[()\[\]]", "", s)  # \( \) \[ \] math delimiters
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[!,;:> ]|~|\\q?quad(?![a-zA-Z])", " ", s)  # LaTeX spacing
    s = re.sub(r"\\displaystyle(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![a-zA-Z])", r"\\binom", s)
    # degrees and percent are the unit of the value, never part of it (90^\circ == 90, 10\% == 10)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])|°", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = _drop_text(s)
    s = s.strip().rstrip(".").strip()
    m = _UNIT_WORDS.match(s)
    if m:
        s = m.group(1)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    s = s.replace("{,}", "")  # LaTeX thousands separator 1{,}000
    # "x = 5", "k=-2", "\theta = \pi": the value only. A single '=' and a bare name on its left;
    # "x=1,y=2" (two names) keeps its names.
    m = re.fullmatch(r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?=([^=]+)", s)
    if m:
        s = m.group(1)
    s = _fix_fracs(s)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)  # \sqrt3 -> \sqrt{3}
    s = re.sub(r"\^\{(\w)\}", r"^\1", s)  # x^{2} -> x^2
    s = re.sub(r"(?<![\d}])\.(\d)", r"0.\1", s)  # .5 -> 0.5
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):  # 1,000 -> 1000 (a number, not a list)
        s = s.replace(",", "")
    m = re.fullmatch(r"(-?)(\d+)/(\d+)", s)  # 3/4 -> \frac{3}{4}
    if m:
        s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    m = re.fullmatch(r"\(([A-Ea-e])\)|([A-E])", s)  # multiple choice: (B), \text{(B)}, B
    if m:
        s = (m.group(1) or m.group(2)).upper()
    s = re.sub(r"\\le(?![a-zA-Z])", r"\\leq", s)
    s = re.sub(r"\\ge(?![a-zA-Z])", r"\\geq", s)
    s = re.sub(r"^(-?)(?:inf|infinity|∞)$", r"\1\\infty", s)
    while len(s) > 1 and s[0] == "{" and _braced(s, 0) == (s[1:-1], len(s)):
        s = s[1:-1]  # {5} -> 5: a group around the whole answer does nothing
    return s


# ---- exact numbers -------------------------------------------------------------------------
_DECIMAL = r"-?(?:\d+(?:\.\d*)?|\.\d+)"


def as_fraction(s: str) -> Fraction | None:
    r"""The exact value of a normalised number: 2, -0.5, 1e3, 3/4, \frac{3}{4}, -\frac{1}{2},
    \frac{-1}{2}, \frac{1.5}{3}; None for anything else (x, \sqrt{2}, a zero denominator)."""
    try:
        if re.fullmatch(_DECIMAL + r"(?:e[-+]?\d+)?", s):
            return Fraction(s)
        m = re.fullmatch(rf"({_DECIMAL})/({_DECIMAL})", s)
        if m:
            return Fraction(m.group(1)) / Fraction(m.group(2))
        m = re.fullmatch(rf"(-?)\\frac\{{({_DECIMAL})\}}\{{({_DECIMAL})\}}", s)
        if m:
            value = Fraction(m.group(2)) / Fraction(m.group(3))
            return -value if m.group(1) else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


# ---- tuples, intervals, lists --------------------------------------------------------------
_OPEN, _CLOSE = "([{", ")]}"


def _split_top(s: str, sep: str = ",") -> list[str]:
    """s split on `sep` outside any bracket or brace ((1,2),3 -> ['(1,2)', '3'])."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _enclosed(s: str) -> tuple[str, str, str] | None:
    r"""(open, inside, close) when one bracket pair spans all of s: (1,2), [0,1), \{1,2\}. An
    interval may close with the other kind of bracket, so any ( [ pairs with any ) ]."""
    if s.startswith("\\{") and s.endswith("\\}"):
        return "\\{", s[2:-2], "\\}"
    if len(s) < 2 or s[0] not in "([" or s[-1] not in ")]":
        return None
    depth = 0
    for i, c in enumerate(s):
        depth += c in _OPEN
        depth -= c in _CLOSE
        if depth == 0 and i < len(s) - 1:
            return None  # (1)+(2): the first bracket closes early
    return s[0], s[1:-1], s[-1]


def _same_multiset(xs: list[str], ys: list[str]) -> bool:
    unmatched = list(ys)
    for x in xs:
        hit = next((k for k, y in enumerate(unmatched) if _equiv_normal(x, y)), None)
        if hit is None:
            return False
        unmatched.pop(hit)
    return not unmatched


def _structured_equal(a: str, b: str) -> bool | None:
    """True/False when a and b are compared as collections; None when they are not collections."""
    for sep in ("\\cup", "\\cap"):  # unions of intervals: piece by piece, in order
        pa, pb = _split_top(a, sep), _split_top(b, sep)
        if len(pa) > 1 or len(pb) > 1:
            return len(pa) == len(pb) and all(_equiv_normal(x, y) for x, y in zip(pa, pb))
    ea, eb = _enclosed(a), _enclosed(b)
    if ea and eb:
        xs, ys = _split_top(ea[1]), _split_top(eb[1])
        if (
            len(xs) == 1
            and len(ys) == 1
            and ea[0] == "("
            and eb[0] == "("
            and ea[2] == eb[2] == ")"
        ):
            return None  # (x+1) is a parenthesised expression, not a 1-tuple: let sympy read it
        if ea[0] != eb[0] or ea[2] != eb[2] or len(xs) != len(ys):
            return False  # (1,2) vs [1,2], (1,2) vs (1,2,3)
        if ea[0] == "\\{":  # a set: order does not matter
            return _same_multiset(xs, ys)
        return all(_equiv_normal(x, y) for x, y in zip(xs, ys))
    xs, ys = _split_top(a), _split_top(b)
    if len(xs) > 1 or len(ys) > 1:
        if ea or eb:
            return False  # a tuple against a bare list
        # "Enter all the solutions, separated by commas": the order is the solver's choice
        return len(xs) == len(ys) and _same_multiset(xs, ys)
    return None


# ---- sympy, the last resort ----------------------------------------------------------------
_FUNCTIONS = {"sqrt", "pi", "sin", "cos", "tan", "log", "exp"}
_MAX_SYMBOLIC_CHARS = 120  # longer answers are compared as strings only: simplify can take ages
_SYMPY_SECONDS = 2.0
_MAX_EXPONENT = 300  # 9^{9^9} would build a giant integer that no timer can interrupt


def _latex_to_python(s: str) -> str | None:
    r"""A small LaTeX subset as a Python expression over whitelisted names, or None. The result is
    given to sympy's parser, which evaluates it: only digits, operators, brackets, single-letter
    variables and the names in _FUNCTIONS get through, so no model output is ever run as code."""
    if len(s) > _MAX_SYMBOLIC_CHARS or "=" in s or "," in s:
        return None

    def convert(t: str) -> str | None:
        out, i = [], 0
        while i < len(t):
            if t.startswith("\\frac", i) or t.startswith("\\sqrt", i):
                cmd = t[i : i + 5]
                i += 5
                root = None
                if cmd == "\\sqrt" and t.startswith("[", i):
                    end = t.find("]", i)
                    if end < 0:
                        return None
                    root, i = convert(t[i + 1 : end]), end + 1
                args = []
                for _ in range(2 if cmd == "\\frac" else 1):
                    group = _braced(t, i) if t.startswith("{", i) else None
                    if group is None:
                        return None
                    inner = convert(group[0])
                    if inner is None:
                        return None
                    args.append(inner)
                    i = group[1]
                if cmd == "\\frac":
                    out.append(f"(({args[0]})/({args[1]}))")
                elif root is not None:
                    out.append(f"(({args[0]})**(1/({root})))")
                else:
                    out.append(f"sqrt({args[0]})")
                continue
            m = re.match(r"\\([a-zA-Z]+)", t[i:])
            if m:
                name = {"cdot": "*", "times": "*", "div": "/", "ln": "log"}.get(
                    m.group(1), m.group(1)
                )
                if name not in _FUNCTIONS and name not in "*/":
                    return None  # \infty, \alpha, \binom, ...: not ours to read
                out.append(f" {name} " if name not in _FUNCTIONS or name == "pi" else f" {name}")
                i += len(m.group(0))
                continue
            c = t[i]
            out.append({"{": "(", "}": ")", "^": "**"}.get(c, c))
            i += 1
        return "".join(out)

    expr = convert(s)
    if expr is None or not re.fullmatch(r"[0-9a-zA-Z+\-*/().\s]*", expr):
        return None
    # Letter runs that are not function names are products of single-letter variables (xy = x*y).
    expr = re.sub(
        r"[a-zA-Z]+",
        lambda m: m.group(0) if m.group(0) in _FUNCTIONS else "*".join(m.group(0)),
        expr,
    )
    return expr or None


class _Timeout(BaseException):
    """BaseException, so that sympy's own `except Exception` blocks cannot swallow it."""


def _with_time_limit(fn, seconds: float):
    """fn() stopped after `seconds` when we can set a timer (the main thread, on POSIX, and no
    other timer pending that we would clobber); elsewhere the size limits above are the guard."""
    if (
        threading.current_thread() is not threading.main_thread()
        or not hasattr(signal, "setitimer")
        or signal.getitimer(signal.ITIMER_REAL)[0] > 0
    ):
        return fn()

    def alarm(signum, frame):
        raise _Timeout

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _too_big(expr) -> bool:
    import sympy

    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow) and not node.exp.free_symbols:
            try:
                if abs(float(node.exp.evalf(5))) > _MAX_EXPONENT:
                    return True
            except (TypeError, ValueError, OverflowError):
                return True
    return False


@functools.lru_cache(maxsize=65536)
def symbolic_equal(a: str, b: str) -> bool:
    r"""Whether two normalised answers are the same expression for sympy (\pi/4 and \frac{\pi}{4},
    x^2+1 and 1+x^2, \sqrt{8} and 2\sqrt{2}). False whenever either cannot be read, the check is
    too big, or it runs past the time limit: this step only adds matches."""
    pa, pb = _latex_to_python(a), _latex_to_python(b)
    if pa is None or pb is None:
        return False
    try:
        import sympy
        from sympy.parsing.sympy_parser import (
            implicit_multiplication,
            parse_expr,
            standard_transformations,
        )
    except ImportError:
        return False
    transformations = standard_transformations + (implicit_multiplication,)
    # every letter is a plain symbol on both sides: otherwise sympy's namespace would read E, I, N,
    # S, O, Q as its own objects
    names = {c: sympy.Symbol(c) for c in string.ascii_letters}

    def check() -> bool:
        ea, eb = (
            parse_expr(p, local_dict=dict(names), transformations=transformations, evaluate=False)
            for p in (pa, pb)
        )
        if _too_big(ea) or _too_big(eb):
            return False
        return sympy.simplify(ea - eb) == 0

    try:
        return bool(_with_time_limit(check, _SYMPY_SECONDS))
    except (_Timeout, Exception):  # noqa: BLE001 - unreadable, too slow, a sympy error: no match
        return False


# ---- equivalence ---------------------------------------------------------------------------
def _equiv_normal(a: str, b: str) -> bool:
    """Equivalence of two normal forms: strings, then exact numbers, then collections, then sympy."""
    if a == b:
        return True
    if not a or not b:
        return False
    fa, fb = as_fraction(a), as_fraction(b)
    if fa is not None and fb is not None:
        return fa == fb  # both exact numbers: nothing else can make them equal
    structured = _structured_equal(a, b)
    if structured is not None:
        return structured
    return symbolic_equal(a, b)


def is_equiv(answer, truth) -> bool:
    """Whether an extracted answer and a ground truth are the same value (both as written, e.g.
    '0.5' and '\\frac{1}{2}'). An answer that normalises to nothing equals nothing."""
    return _equiv_normal(normalize(answer), normalize(truth))


def math_equal(response: str, truth) -> bool:
    """Whether a model's whole response ends with an answer equal to the truth: its final_answer,
    compared with is_equiv."""
    answer = final_answer(response)
    return answer is not None and is_equiv(answer, truth)
