"""A data mixture as config: its sources, their documents per round, and the rules a mixture obeys.

    ladder data inspect data=reverse_mix                        # what the rules below give, per source
    from training.data.mixture_config import source_specs, round_counts, mixture_problems
    specs = source_specs(cfg.data)                              # one SourceSpec per source (one for plain data)

`data.sources` maps a source name to its local jsonl files or hub dataset. A run reads the sources
in rounds. Each round takes `count` documents from every source (round_counts):
  weights  every source has a `weight`: a round holds as many documents as all the sources have rows,
           shared out in proportion to the weights (largest remainders, so the counts add up);
  epochs   no source has a weight: a round takes `epochs` x its rows from each source (default 1).
`max_samples` keeps the first N rows of a source in either case. A source's draws continue from
round to round through its own shuffled passes, so a weight above its natural share repeats its
rows and a small one leaves some for later rounds (training/data/mixture.py).

This module imports no torch: `ladder launch` and `ladder config` use it to validate and record.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from training.config.names import name_problem

NAME = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
)  # becomes metric keys (data/<name>/loss) and ledger JSON


@dataclass(frozen=True)
class SourceSpec:
    """One source. Its attribute names are those of DataConfig, so the row loader takes either."""

    name: str
    train_files: tuple[str, ...] = ()
    hub_name: str | None = None
    hub_split: str = "train"
    weight: float | None = None
    epochs: float | None = None
    max_samples: int | None = None

    def describe(self) -> str:
        return (
            ", ".join(self.train_files)
            if self.train_files
            else f"{self.hub_name}[{self.hub_split}]"
        )


def is_mixture(data_cfg: DictConfig) -> bool:
    return bool(data_cfg.sources)


def source_specs(data_cfg: DictConfig) -> list[SourceSpec]:
    """The mixture's sources in config order; plain data (train_files or hub_name) is one source
    named data.name, with its data.max_samples."""
    if not is_mixture(data_cfg):
        return [
            SourceSpec(
                data_cfg.name,
                tuple(data_cfg.train_files),
                data_cfg.hub_name,
                data_cfg.hub_split,
                max_samples=data_cfg.max_samples,
            )
        ]
    return [
        SourceSpec(
            name, tuple(s.train_files), s.hub_name, s.hub_split, s.weight, s.epochs, s.max_samples
        )
        for name, s in data_cfg.sources.items()
    ]


def weighted(specs: list[SourceSpec]) -> bool:
    return any(s.weight is not None for s in specs)


def round_counts(specs: list[SourceSpec], rows: list[int]) -> list[int]:
    """Documents each source contributes to one round, from its usable rows (see the module doc)."""
    if weighted(specs):
        total_w, size = sum(s.weight for s in specs), sum(rows)
        exact = [s.weight / total_w * size for s in specs]
        counts = [math.floor(x) for x in exact]
        # largest remainders get the documents rounding left over, ties to the earlier source
        for i in sorted(range(len(specs)), key=lambda i: (counts[i] - exact[i], i))[
            : size - sum(counts)
        ]:
            counts[i] += 1
    else:
        counts = [
            math.floor((s.epochs if s.epochs is not None else 1.0) * n + 0.5)
            for s, n in zip(specs, rows)
        ]
    return counts


def count_problems(specs: list[SourceSpec], rows: list[int], counts: list[int]) -> list[str]:
    """Sources that would contribute no document to a round (the data is known only once loaded)."""
    out = []
    for s, n, c in zip(specs, rows, counts):
        if c == 0:
            how = (
                f"weight {s.weight:g} of {sum(x.weight for x in specs):g} is under one document in a round of "
                f"{sum(rows)}"
                if s.weight is not None
                else f"epochs={s.epochs:g} of {n} rows is under one row"
            )
            out.append(
                f"data.sources.{s.name}: {how}; raise it or drop the source (~data.sources.{s.name})"
            )
    return out


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def mixture_problems(data_cfg: DictConfig) -> list[str]:
    """Every rule a mixture breaks, as messages naming the key to fix (validate() calls this when
    data.sources is set). Rules about rows (a source left empty) are checked when the data loads."""
    problems = []
    if data_cfg.train_files or data_cfg.hub_name:
        problems.append(
            "data.sources is set, so data.train_files and data.hub_name must be empty: give each file "
            "to a source (data.sources.<name>.train_files)"
        )
    if data_cfg.max_samples is not None:
        problems.append(
            "data.max_samples applies to single-source data; with data.sources set "
            "data.sources.<name>.max_samples per source"
        )
    names = list(data_cfg.sources)
    real = [n for n in names if data_cfg.sources[n].train_files or data_cfg.sources[n].hub_name]
    for name in names:
        s, key = data_cfg.sources[name], f"data.sources.{name}"
        # the one name rule first (it becomes DIR/<name>.jsonl: training/config/names.py), then metric keys' own
        problem = name_problem(f"data.sources[{names.index(name)}]", name)
        if problem:
            problems.append(problem)
        elif not NAME.fullmatch(name):
            problems.append(
                f"{key}: a source name is letters, digits, '_', '.' and '-' (at most 64, not starting "
                "with a punctuation mark): it becomes metric keys data/<name>/loss"
            )
        if not s.train_files and not s.hub_name:
            problems.append(
                f"{key} names no source of the mixture (it has no train_files or hub_name); the "
                f"sources of data={data_cfg.name} are: {', '.join(real) or '(none)'}"
            )
            continue
        if s.train_files and s.hub_name:
            problems.append(f"{key}: set exactly one of train_files (local jsonl) and hub_name")
        for f in s.train_files:
            if not Path(f).is_file():
                problems.append(f"{key}.train_files: no such file: {f}")
        if s.weight is not None and not _positive(s.weight):
            problems.append(
                f"{key}.weight={s.weight} must be a finite number > 0; to leave the source out, "
                f"drop it: ~{key}"
            )
        if s.epochs is not None and not _positive(s.epochs):
            problems.append(f"{key}.epochs={s.epochs} must be a finite number > 0")
        if s.weight is not None and s.epochs is not None:
            problems.append(
                f"{key}: set weight or epochs, not both (a weighted source's epochs follow from its "
                "share and the run's length; `ladder data inspect` shows them)"
            )
        if s.max_samples is not None and s.max_samples <= 0:
            problems.append(f"{key}.max_samples={s.max_samples} must be > 0")
    with_w = [n for n in real if data_cfg.sources[n].weight is not None]
    if with_w and len(with_w) < len(real):
        problems.append(
            "data.sources: give every source a weight or none (with: "
            + ", ".join(with_w)
            + "; without: "
            + ", ".join(n for n in real if n not in with_w)
            + ")"
        )
    return problems


def unknown_source(full_key: str, overrides: list[str], recompose=None) -> str | None:
    """Hydra's "Key 'x' is not in struct" for data.sources.<x> (or its type error for
    +data.sources.x...), said as a mixture error that lists the sources there are (composed again
    without the overrides that named the stranger)."""
    parts = full_key.split(".")
    if parts[:2] != ["data", "sources"] or len(parts) < 3:
        return None
    name = parts[2]
    prefix = f"data.sources.{name}"
    rest = [o for o in overrides if not o.lstrip("+~").startswith(prefix)]
    try:  # recompose is training.config.compose.compose, handed down (importing it here would be a circle)
        known = list(recompose(rest).data.sources) if recompose else []
    except Exception:  # the rest fails too: Hydra's own message for that comes next time
        known = []
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return (
        f"{prefix}: the mixture has no source named {name!r}"
        + (f" (did you mean {close[0]}?)" if close else "")
        + f"; its sources are: {', '.join(known) or '(none: data.sources is empty)'}. A new source goes "
        "into a data config file (configs/data/<name>.yaml, like configs/data/reverse_mix.yaml): the "
        "command line can change a source but not add one"
    )


def mixture_record(data_cfg: DictConfig) -> dict:
    """What the ledger keeps of a job's data (jobs.data_mixture): every source, its files or hub
    dataset, and its weight, epochs and max_samples as configured."""
    out = {}
    for s in source_specs(data_cfg):
        rec: dict[str, Any] = (
            {"files": list(s.train_files)}
            if s.train_files
            else {"hub": s.hub_name, "split": s.hub_split}
        )
        for k in ("weight", "epochs", "max_samples"):
            if getattr(s, k) is not None:
                rec[k] = getattr(s, k)
        out[s.name] = rec
    return {"name": data_cfg.name, "max_seq_len": data_cfg.max_seq_len, "sources": out}
