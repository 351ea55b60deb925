"""Token n-grams of eval prompts and training rows: the matching rule of evals/tasks/decontaminate.py.

Text is lower-cased (NFKC-normalised when not ASCII, so full-width forms equal their plain ones)
and split into tokens: a word (\\w+) in scripts written with spaces, a single character in scripts
written without them (NO_SPACE: Han, kana, Bopomofo, Thai, Lao, Khmer, Myanmar), so their n-grams
are character n-grams, and punctuation or spaces put between characters change nothing. A row
matches an eval prompt of at least n tokens (n = data.decontamination.ngram, 8 as in Tulu 3; half
of n, rounded up, for a prompt mostly in NO_SPACE characters: char_n) when at least
data.decontamination.threshold of the prompt's distinct n-grams occur in one row; a
shorter prompt has no n-gram and matches a message whose tokens are exactly its tokens (the
reverse task's prompts are five words: a training prompt that merely starts with a held-out one is
a different question).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# Scripts written without spaces between words, one token per character: Thai and Lao
# (U+0E00-0EFF), Myanmar (U+1000-109F), Khmer (U+1780-17FF), Hiragana and Katakana (U+3040-30FF,
# U+31F0-31FF, half-width U+FF66-FF9F), Bopomofo (U+3100-312F, U+31A0-31BF), Han: CJK Unified
# Ideographs and Extension A (U+3400-4DBF, U+4E00-9FFF), Compatibility Ideographs (U+F900-FAFF) and
# the supplementary ideographic planes (U+20000-3134F). Hangul is written with spaces: words.
NO_SPACE = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3100-\u312f\u31a0-\u31bf"
    "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
TOKEN = re.compile(rf"[{NO_SPACE}]|[^\W{NO_SPACE}]+")
NO_SPACE_CHAR = re.compile(rf"[{NO_SPACE}]")
WORD = re.compile(r"\w+")  # TOKEN on ASCII text


def words(text: str) -> tuple[str, ...]:
    """The tokens of a text (module doc): words, and single characters of NO_SPACE scripts."""
    if text.isascii():  # most rows: no normalisation, and the plain word pattern is faster
        return tuple(WORD.findall(text.lower()))
    return tuple(TOKEN.findall(unicodedata.normalize("NFKC", text).lower()))


def ngrams(ws: tuple[str, ...], n: int) -> set[tuple[str, ...]]:
    return {ws[i : i + n] for i in range(len(ws) - n + 1)}


def char_n(n: int) -> int:
    """The n-gram size of a prompt written mostly in NO_SPACE characters: half of n, rounded up
    (8 -> 4). A character is about half a word, and a shorter gram keeps a prompt whose function
    characters were swapped (的 -> 之 at each of its six places) above the threshold: 0.65 of its
    4-grams remain where 0.39 of its 8-grams did (tests/test_decontaminate.py)."""
    return max(1, (n + 1) // 2)


def mostly_no_space(ws: tuple[str, ...]) -> bool:
    return sum(1 for w in ws if len(w) == 1 and NO_SPACE_CHAR.match(w)) * 2 > len(ws)


class PromptIndex:
    """Eval prompts by n-gram (long prompts) and by their whole token sequence (short ones)."""

    def __init__(self, prompts: list[tuple[str, str, str]], n: int, threshold: float):
        self.prompts, self.n, self.threshold = prompts, n, threshold
        self.char_n = char_n(n) if n != char_n(n) else None  # None: one size for every prompt
        self.any_char_n = False
        self.by_gram: dict[tuple, list[int]] = {}
        self.by_text: dict[tuple, list[int]] = {}
        self.need: list[int] = []
        for pid, (_, _, text) in enumerate(prompts):
            ws = words(text)
            size = n
            if self.char_n and not text.isascii() and mostly_no_space(ws):
                size, self.any_char_n = self.char_n, True
            grams = ngrams(ws, size)
            self.need.append(len(grams))
            if grams:
                for g in grams:
                    self.by_gram.setdefault(g, []).append(pid)
            elif ws:
                self.by_text.setdefault(ws, []).append(pid)

    def match(self, texts: list[str]) -> set[int]:
        """The prompts one training row (its messages' texts) matches."""
        hit: set[int] = set()
        row_grams: set[tuple] = set()
        for text in texts:
            ws = words(text)
            hit.update(self.by_text.get(ws, ()))
            row_grams |= ngrams(ws, self.n)
            if self.any_char_n and not text.isascii():  # grams of both sizes: tuples never collide
                row_grams |= ngrams(ws, self.char_n)
        counts = Counter(pid for g in row_grams for pid in self.by_gram.get(g, ()))
        hit.update(pid for pid, c in counts.items() if c >= self.threshold * self.need[pid])
        return hit
