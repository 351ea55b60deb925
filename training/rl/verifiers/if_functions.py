"""open-instruct's IFEval constraint functions, by name: the `func_name` ground truths of RLVR sets.

    from training.rl.verifiers.if_functions import IF_FUNCTIONS, call_constraint, constraint_problem
    call_constraint("hello world", {"func_name": "validate_lowercase", "N": None})   # True
    python -m pytest -q tests/test_if_functions.py

allenai/RLVR-GSM-MATH-IF-Mixed-Constraints carries IF rows whose ground truth is JSON text such as
{"func_name": "verify_keyword_frequency", "word": "cat", "N": 3, "quantifier": null, ...}: the
verifier calls the named function on the answer with the non-null fields as keyword arguments.
These are our own implementations of every function of open-instruct's IF_FUNCTIONS_MAP
(open_instruct/if_functions.py), with the same names, argument names and semantics, so a reward
here equals the reward open-instruct's ifeval verifier gives the same answer. Where their check
has a quirk (a substring match, an "around" tolerance) we keep it: a different reward would make
our runs incomparable with theirs. Two deliberate differences: an empty answer (after removing a
<think> section) fails every constraint, and an out-of-range paragraph index fails instead of
raising; both would otherwise reward saying nothing or stop a run.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable


def _count_ok(actual: int, n: int, quantifier: str, around: int) -> bool:
    """'at least' / 'at most' / 'around' (within `around`); any other quantifier fails, as theirs does."""
    return {
        "at least": actual >= n,
        "at most": actual <= n,
        "around": abs(actual - n) <= around,
    }.get(quantifier, False)


# ---- keywords -------------------------------------------------------------------------------
def verify_keywords(text: str, keyword_list: list) -> bool:
    """Every keyword occurs, case-insensitively, as a substring (theirs is a substring test too)."""
    low = text.lower()
    return all(str(k).lower() in low for k in keyword_list)


def verify_keyword_frequency(text: str, word: str, N: int) -> bool:
    """`word` occurs exactly N times as a whole word, case-insensitively."""
    return re.findall(r"\b\w+\b", text.lower()).count(word.lower()) == N


def validate_forbidden_words(text: str, forbidden_words: list) -> bool:
    """No forbidden word occurs, even inside another word (a case-insensitive substring test)."""
    low = text.lower()
    return not any(str(w).lower() in low for w in forbidden_words)


def verify_letter_frequency(text: str, letter: str, N: int) -> bool:
    """`letter` (one character, case-sensitive) occurs exactly N times."""
    if len(letter) != 1:
        raise ValueError(f"letter={letter!r} must be a single character")
    return text.count(letter) == N


def validate_response_language(text: str, language: str) -> bool:
    """langdetect names `language` (an ISO code such as 'en') for the answer, as in open-instruct.
    langdetect is imported here only: no other function needs it (constraint_problem asks for it at
    load time when a row uses this function)."""
    import langdetect

    langdetect.DetectorFactory.seed = (
        0  # langdetect samples: unseeded, a resumed run would see other rewards
    )
    try:
        return langdetect.detect(text) == language
    except langdetect.LangDetectException:  # no letters to detect from ("123"): not in any language
        return False


# ---- length and layout ----------------------------------------------------------------------
def verify_paragraph_count(text: str, N: int) -> bool:
    """Exactly N non-empty paragraphs separated by the markdown divider '* * *'."""
    text = "\n".join(line.strip() for line in text.splitlines()).strip()
    parts = text.split("* * *")
    return all(p.strip() for p in parts) and len(parts) == N


def validate_word_constraint(text: str, N: int, quantifier: str) -> bool:
    """Whitespace-separated words: at least / at most / around N (around: within 10%, at least 1)."""
    return _count_ok(len(text.split()), N, quantifier, max(round(N * 0.1), 1))


# A sentence ends at '.', '?' or '!' followed by whitespace, except after an abbreviation such as
# "e.g." or "Mr." (the same split open-instruct uses, so sentence counts agree).
_SENTENCE_END = re.compile(r"(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?|!)\s")


def verify_sentence_constraint(text: str, N: int, quantifier: str) -> bool:
    """Sentences: at least / at most / around N (around: within one)."""
    return _count_ok(len(_SENTENCE_END.split(text)), N, quantifier, 1)


def validate_paragraphs(text: str, N: int, first_word: str, i: int) -> bool:
    """Exactly N paragraphs separated by blank lines ('\\n\\n'), the i-th (from 1) starting with first_word."""
    paragraphs = text.split("\n\n")
    return len(paragraphs) == N and 1 <= i <= N and paragraphs[i - 1].strip().startswith(first_word)


def verify_postscript(text: str, postscript_marker: str) -> bool:
    """The marker (e.g. 'P.S.') occurs and something follows it."""
    at = text.find(postscript_marker)
    return at >= 0 and len(text[at:].strip()) > len(postscript_marker)


def validate_placeholders(text: str, N: int) -> bool:
    """At least N placeholders in square brackets, such as [address]."""
    return len(re.findall(r"\[(.*?)\]", text)) >= N


def verify_bullet_points(text: str, N: int) -> bool:
    """Exactly N lines that start with a markdown bullet ('*' or '-')."""
    return sum(line.strip().startswith(("*", "-")) for line in text.split("\n")) == N


def validate_title(text: str) -> bool:
    """A title in double angular brackets, such as <<poem of joy>>."""
    return re.search(r"<<(.*?)>>", text) is not None


def validate_choice(text: str, options: list) -> bool:
    """One of the options occurs (a substring test: option 'A' also matches 'Apple', as theirs does)."""
    return any(str(o) in text for o in options)


def validate_highlighted_sections(text: str, N: int) -> bool:
    """At least N markdown highlights, *like this*."""
    return len(re.findall(r"\*(.*?)\*", text)) >= N


def validate_sections(text: str, N: int, section_splitter: str) -> bool:
    """At least N sections headed by the splitter and a number ('Section 1', 'SECTION 2')."""
    header = r"\s?" + re.escape(section_splitter) + r"\s?\d+\s?"
    return len(re.split(header, text, flags=re.IGNORECASE)) - 1 >= N


def validate_json_format(text: str) -> bool:
    """The whole answer parses as JSON."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def validate_repeat_prompt(text: str, original_prompt: str) -> bool:
    """The answer starts by repeating the request word for word."""
    return text.startswith(original_prompt)


def validate_two_responses(text: str) -> bool:
    """Two different responses separated by exactly one '******'."""
    if text.count("******") != 1:
        return False
    first, second = (part.strip() for part in text.split("******"))
    return first != second


# ---- case, punctuation, ending --------------------------------------------------------------
def validate_uppercase(text: str) -> bool:
    """No lowercase letter (an answer with no letters passes, as theirs does)."""
    return text == text.upper()


def validate_lowercase(text: str) -> bool:
    """No capital letter (an answer with no letters passes, as theirs does)."""
    return text == text.lower()


def validate_frequency_capital_words(text: str, N: int, quantifier: str) -> bool:
    """All-capital words: at least / at most / around N (around: within 10%, at least 1)."""
    return _count_ok(len(re.findall(r"\b[A-Z]+\b", text)), N, quantifier, max(round(N * 0.1), 1))


def validate_end(text: str, end_phrase: str) -> bool:
    """The answer ends with the exact phrase."""
    return text.endswith(end_phrase)


def validate_quotation(text: str) -> bool:
    """The whole answer is wrapped in double quotation marks."""
    return text.startswith('"') and text.endswith('"')


def validate_no_commas(text: str) -> bool:
    return "," not in text


IF_FUNCTIONS: dict[str, Callable[..., bool]] = {
    f.__name__: f
    for f in (
        verify_keywords,
        verify_keyword_frequency,
        validate_forbidden_words,
        verify_letter_frequency,
        validate_response_language,
        verify_paragraph_count,
        validate_word_constraint,
        verify_sentence_constraint,
        validate_paragraphs,
        verify_postscript,
        validate_placeholders,
        verify_bullet_points,
        validate_title,
        validate_choice,
        validate_highlighted_sections,
        validate_sections,
        validate_json_format,
        validate_repeat_prompt,
        validate_two_responses,
        validate_uppercase,
        validate_lowercase,
        validate_frequency_capital_words,
        validate_end,
        validate_quotation,
        validate_no_commas,
    )
}


def remove_thinking(answer: str) -> str:
    """What the constraints are checked on: the text after the last </think> (a reasoning model's
    thoughts are not its answer), without <answer> tags or a leading <|assistant|>, stripped, as
    open-instruct's ifeval verifier cleans an answer before its check."""
    answer = answer.replace("<|assistant|>", "").strip().split("</think>")[-1]
    return answer.replace("<answer>", "").replace("</answer>", "").strip()


def _arguments(constraint: dict) -> dict:
    # the hub rows carry every argument name, null where the function does not take it
    return {k: v for k, v in constraint.items() if k != "func_name" and v is not None}


def constraint_problem(constraint: dict) -> str | None:
    """Why a func_name constraint cannot be called (an unknown function, a missing or unexpected
    argument, langdetect not installed), or None: checked when the data loads, before generation."""
    name = constraint.get("func_name")
    fn = IF_FUNCTIONS.get(name)
    if fn is None:
        return f"unknown func_name {name!r}; known: {sorted(IF_FUNCTIONS)}"
    params = list(inspect.signature(fn).parameters)[1:]  # after the answer text
    args = _arguments(constraint)
    missing, extra = [p for p in params if p not in args], [a for a in args if a not in params]
    if missing or extra:
        return (
            f"{name} takes {params or 'no arguments'}"
            + (f"; missing (null or absent): {missing}" if missing else "")
            + (f"; not its arguments: {extra}" if extra else "")
        )
    if fn is validate_response_language:
        try:
            import langdetect  # noqa: F401
        except ImportError:
            return (
                "validate_response_language needs langdetect: pip install langdetect "
                "(the ifeval extra: pip install -e '.[ifeval]')"
            )
    return None


def call_constraint(answer: str, constraint: dict) -> bool:
    """One func_name constraint on one answer (its thinking section removed). An empty answer fails
    every constraint: otherwise 'no commas' or 'lowercase' would reward saying nothing."""
    text = remove_thinking(answer)
    if not text:
        return False
    return bool(IF_FUNCTIONS[constraint["func_name"]](text, **_arguments(constraint)))
