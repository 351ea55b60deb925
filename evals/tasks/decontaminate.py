"""Training data against the eval suite's prompts: n-gram overlap, per source and per eval task.

    ladder data decontaminate data=reverse_mix eval=cpu [--json] [--write DIR]
    report = decontaminate(cfg)            # what `ladder launch` checks before it records a job

The prompts are those of the suite the config names (eval=), read by evals/tasks/suite_prompts.py:
the built-in tasks' files and the documents of lm-eval tasks, local or from its catalogue, wherever
they can be loaded. A task whose documents cannot be loaded here is reported unchecked (so is a hub
source that is not on this machine), and the report's status says so: never clean for what was not
read. Every message of a training row (both sides of a preference pair) is checked.

Text is lower-cased (NFKC-normalised when not ASCII, so full-width forms equal their plain ones)
and split into tokens: a word (\\w+) in scripts written with spaces, a single character in scripts
written without them (NO_SPACE: Han, kana, Bopomofo, Thai, Lao, Khmer, Myanmar), so their n-grams
are character n-grams, and punctuation or spaces put between characters change nothing. A row
matches an eval prompt of at least n tokens (n = data.decontamination.ngram, 8 as in Tulu 3; half
of n, rounded up, for a prompt mostly in NO_SPACE characters: char_n) when at least
data.decontamination.threshold of the prompt's distinct n-grams occur in one row; a
shorter prompt has no n-gram and matches a message whose tokens are exactly its tokens (the
reverse task's prompts are five words: a training prompt that merely starts with a held-out one is
a different question). Results are cached under <run_root>/cache/decontam/ by the content of the
data and the prompts, n, the threshold and VERSION: `ladder data decontaminate` writes the entry,
`ladder launch` reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import unicodedata
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from training.common.errors import DataError
from training.common.safe_files import atomic_file, write_atomic
from training.data.chat_data import iter_jsonl
from training.data.mixture_config import SourceSpec, is_mixture, source_specs
from training.recipes.losses import loss_spec

# bump when the matching rule changes: it keys the result cache (2: NO_SPACE characters, NFKC)
VERSION = 2
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
log = logging.getLogger("ladder.decontaminate")


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


# ---- the training rows --------------------------------------------------------------------
def row_format(cfg: DictConfig) -> str:
    """The format training checks the rows in: the loss's data format (training/recipes/losses.py). RLVR
    prompts are checked as preference rows, as before the table of losses, which refuses them."""
    return "messages" if loss_spec(cfg.recipe.loss).data_format == "messages" else "preference"


def row_texts(row: dict) -> list[str]:
    msgs = row.get("messages") or (row.get("chosen", []) + row.get("rejected", []))
    return list(dict.fromkeys(m["content"] for m in msgs))  # a pair's shared prompt once


def iter_rows(spec: SourceSpec, fmt: str, prefix: str = ""):
    """(where, row) of a source in training order, checked as training checks them, up to max_samples."""
    from training.data.token_cache import row_check

    check = row_check(fmt, prefix)
    n = 0
    if spec.train_files:
        for path in spec.train_files:
            for line, row in iter_jsonl(path):
                if spec.max_samples is not None and n >= spec.max_samples:
                    return
                check(row, f"{path}:{line}")
                n += 1
                yield f"{path}:{line}", row
        return
    import datasets

    for i, row in enumerate(datasets.load_dataset(spec.hub_name, split=spec.hub_split)):
        if spec.max_samples is not None and i >= spec.max_samples:
            return
        check(row, f"{spec.hub_name}[{spec.hub_split}] row {i}")
        yield f"{spec.hub_name}[{spec.hub_split}] row {i}", row


def _source_key(spec: SourceSpec) -> list:
    from training.common.content_cache import file_hash

    if spec.train_files:
        return [[file_hash(f) for f in spec.train_files], spec.max_samples]
    import datasets

    return [
        spec.hub_name,
        spec.hub_split,
        datasets.load_dataset(spec.hub_name, split=spec.hub_split)._fingerprint,
        spec.max_samples,
    ]


def check_source(spec: SourceSpec, fmt: str, index: PromptIndex, prefix: str) -> dict:
    matches = []
    n = 0
    for where, row in iter_rows(spec, fmt, prefix):
        n += 1
        hit = index.match(row_texts(row))
        if hit:
            by_task: dict[str, list[str]] = {}
            for pid in sorted(hit):
                task, ex_id, _ = index.prompts[pid]
                by_task.setdefault(task, []).append(ex_id)
            matches.append({"where": where, "id": row.get("id"), "tasks": by_task})
    by_task = Counter(t for m in matches for t in m["tasks"])
    return {
        "source": spec.name,
        "data": spec.describe(),
        "rows_checked": n,
        "matching_rows": matches,
        "rows_by_task": dict(by_task),
    }


def decontaminate(cfg: DictConfig, use_cache: bool = True, write_cache: bool = True) -> dict:
    """Check every source of cfg.data against cfg.eval's prompts (see the module doc). `ladder launch`
    reads the cache but does not write it (write_cache=False): a refused launch leaves no file."""
    d = cfg.data.decontamination
    if d.ngram < 1 or not 0 < d.threshold <= 1:
        raise DataError(
            f"data.decontamination: ngram={d.ngram} must be >= 1 and threshold={d.threshold} in (0, 1]"
        )
    from evals.tasks.suite_prompts import suite_prompts

    fmt = row_format(cfg)
    prompts, skipped = suite_prompts(cfg.eval)
    sources, unchecked = [], []
    for spec in source_specs(cfg.data):
        if spec.train_files:
            sources.append((spec, _source_key(spec)))
            continue
        try:
            sources.append((spec, _source_key(spec)))
        except Exception as e:  # noqa: BLE001 (datasets raises many kinds): a hub dataset not on this machine
            unchecked.append(
                {
                    "source": spec.name,
                    "data": spec.describe(),
                    "reason": f"cannot read it here ({e})",
                }
            )
    digest = hashlib.sha256(
        json.dumps(
            [
                prompts,
                [k for _, k in sources],
                [(s.name, s.describe()) for s, _ in sources],
                fmt,
                d.ngram,
                d.threshold,
                VERSION,
            ]
        ).encode()
    ).hexdigest()[:32]
    cache = Path(cfg.trainer.run_root) / "cache" / "decontam" / f"{digest}.json"
    report = _load(cache) if use_cache else None
    if report is None:
        index = PromptIndex(prompts, d.ngram, d.threshold)
        mixture = is_mixture(cfg.data)
        report = {
            "eval": cfg.eval.name,
            "ngram": d.ngram,
            "threshold": d.threshold,
            "eval_prompts": dict(Counter(t for t, _, _ in prompts)),
            "sources": [
                check_source(s, fmt, index, f"data.sources.{s.name}: " if mixture else "")
                for s, _ in sources
            ],
        }
        report["prompts_by_task"] = dict(
            Counter(
                t
                for t, i in {
                    (t, i)
                    for src in report["sources"]
                    for m in src["matching_rows"]
                    for t, ids in m["tasks"].items()
                    for i in ids
                }
            )
        )
        if use_cache and write_cache:
            _store(cache, report)
    report.update(
        data=cfg.data.name,
        unchecked_tasks=skipped,
        unchecked_sources=unchecked,
        matching_rows=sum(len(s["matching_rows"]) for s in report["sources"]),
    )
    # contaminated wins: rows known to match say more than tasks that could not be read
    report["status"] = (
        "contaminated"
        if report["matching_rows"]
        else "unchecked"
        if skipped or unchecked
        else "clean"
    )
    report["rows_by_task"] = dict(
        sum((Counter(s["rows_by_task"]) for s in report["sources"]), Counter())
    )
    return report


def _load(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_text())
        body = json.dumps(entry["report"], sort_keys=True)
        if hashlib.sha256(body.encode()).hexdigest() != entry["sha256"]:
            raise ValueError("checksum mismatch")
        return entry["report"]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, OSError) as e:
        log.warning("decontamination cache entry %s is corrupt (%s); checking again", path.name, e)
        return None


def _store(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(report, sort_keys=True)
    write_atomic(
        path, json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest(), "report": report})
    )


# ---- output ---------------------------------------------------------------------------------
def write_filtered(cfg: DictConfig, report: dict, out_dir: str) -> dict[str, str]:
    """DIR/<source>.jsonl: each checked source without its matching rows (local rows verbatim).
    Only inside DIR: a source name is one plain path component (training/config/names.py), and each path
    is checked again once resolved, so neither a name nor a link planted in DIR writes elsewhere."""
    from training.common.errors import ConfigError

    fmt = row_format(cfg)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--write {out_dir}: cannot make the folder: {e.strerror}") from None
    root = out.resolve()
    checked = {s["source"]: s for s in report["sources"]}
    written = {}
    for spec in source_specs(cfg.data):
        if spec.name not in checked:
            continue
        drop = {m["where"] for m in checked[spec.name]["matching_rows"]}
        if checked[spec.name]["rows_checked"] == len(drop):
            raise DataError(
                f"source {spec.name}: every one of its {len(drop)} rows matches the eval suite, so a "
                "filtered copy would have no rows; leave the source out instead"
            )
        path = out / f"{spec.name}.jsonl"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        for p in (path, tmp):
            if p.resolve().parent != root:
                raise ConfigError(
                    f"--write {out_dir}: the copy of source {spec.name!r} would be written to "
                    f"{p.resolve()}, outside {root}; nothing of it was written"
                )
        with atomic_file(
            path, text=True
        ) as f:  # a random temporary name, renamed: never through a link
            for where, row in iter_rows(spec, fmt):
                if where not in drop:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        written[spec.name] = str(path)
    return written


def summary_lines(report: dict) -> list[str]:
    """One line per contaminated source: what `ladder launch` says when it refuses."""
    return [
        f"{s['source']}: {len(s['matching_rows'])} of {s['rows_checked']} rows match "
        + ", ".join(f"{t} ({n} rows)" for t, n in sorted(s["rows_by_task"].items()))
        + f", e.g. {s['matching_rows'][0]['where']}"
        for s in report["sources"]
        if s["matching_rows"]
    ]


def unchecked_line(report: dict) -> str:
    """One line naming what was not checked (empty when everything was)."""
    tasks = [x["task"] for x in report["unchecked_tasks"]]
    sources = [x["source"] for x in report["unchecked_sources"]]
    if not tasks and not sources:
        return ""

    def few(names: list[str]) -> str:
        return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")

    parts = [f"eval task(s) {few(tasks)}"] if tasks else []
    parts += [f"source(s) {few(sources)}"] if sources else []
    return (
        " and ".join(parts)
        + " could not be read here, so nothing was checked against them (the hub unreachable or "
        "offline, and no local copy or datasets cache holds them)"
    )


def print_report(report: dict, console) -> None:
    """The report on `console` (launch/console.make_console: evals never import launch)."""
    from rich.table import Table

    tasks = sorted(report["eval_prompts"])
    table = Table(
        title=f"data={report['data']} against eval={report['eval']}: rows matching its prompts "
        f"({report['ngram']}-grams, threshold {report['threshold']:g})"
    )
    table.add_column("source")
    table.add_column("rows checked", justify="right")
    for t in tasks:
        table.add_column(f"{t} ({report['eval_prompts'][t]} prompts)", justify="right")
    table.add_column("matching rows", justify="right")
    for s in report["sources"]:
        table.add_row(
            s["source"],
            f"{s['rows_checked']:,}",
            *(f"{s['rows_by_task'].get(t, 0):,}" for t in tasks),
            f"{len(s['matching_rows']):,}",
        )
    console.print(table)
    for t, n in sorted(report.get("prompts_by_task", {}).items()):
        console.print(
            f"{t}: {n} of its {report['eval_prompts'][t]} prompts occur in the training data"
        )
    for s in report["sources"]:
        for m in s["matching_rows"][:5]:
            console.print(
                f"  {s['source']}: {m['where']} matches "
                + "; ".join(f"{t} {', '.join(ids[:3])}" for t, ids in m["tasks"].items())
            )
        if len(s["matching_rows"]) > 5:
            console.print(
                f"  {s['source']}: ... {len(s['matching_rows']) - 5} more (--json lists them all)"
            )
    for x in report["unchecked_tasks"] + report["unchecked_sources"]:
        console.print(f"unchecked: {x.get('task') or x.get('source')}: {x['reason']}")
    for name, path in report.get("written", {}).items():
        console.print(f"wrote {path} ({name} without its matching rows)")
