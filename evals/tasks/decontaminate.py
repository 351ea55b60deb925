"""Training data against the eval suite's prompts: n-gram overlap, per source and per eval task.

    ladder data decontaminate data=reverse_mix eval=cpu [--json] [--write DIR]
    report = decontaminate(cfg)            # what `ladder launch` checks before it records a job

The prompts are those of the suite the config names (eval=), read by evals/tasks/suite_prompts.py:
the built-in tasks' files and the documents of lm-eval tasks, local or from its catalogue, wherever
they can be loaded. A task whose documents cannot be loaded here is reported unchecked (so is a hub
source that is not on this machine), and the report's status says so: never clean for what was not
read. Every message of a training row (both sides of a preference pair) is checked.

Rows and prompts are matched by token n-grams (evals/tasks/ngram_match.py, which says how text is
split and when a row matches). Results are cached under <run_root>/cache/decontam/ by the content
of the data and the prompts, n, the threshold and VERSION: `ladder data decontaminate` writes the
entry, `ladder launch` reuses it; evals/tasks/contamination_report.py prints the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from evals.tasks.ngram_match import PromptIndex
from training.common.errors import DataError
from training.common.safe_files import atomic_file, write_atomic
from training.data.chat_data import iter_jsonl
from training.data.mixture_config import SourceSpec, is_mixture, source_specs
from training.recipes.losses import loss_spec

# bump when the matching rule changes: it keys the result cache (2: NO_SPACE characters, NFKC)
VERSION = 2
log = logging.getLogger("ladder.decontaminate")


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
