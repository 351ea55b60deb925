"""Compare checkpoints task by task, with paired-bootstrap confidence intervals on the deltas.

    ladder compare runs/a/checkpoints/step_000000 runs/a/checkpoints/step_000150
    ladder compare runs/a runs/b sweep:lr-sweep --baseline runs/a --html report.html eval=cpu
    comparison = compare(["runs/a", "runs/b"], cfg)          # from Python

A target is a checkpoint directory, a run directory (its latest complete checkpoint) or
`sweep:NAME` (the latest registered checkpoint of each run of the sweep, from the registry).
Each is evaluated on the suite through the eval cache (evals/runner.py), so only checkpoints
never scored with these settings load a model. The first target is the baseline unless
--baseline names another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from evals.analysis.bootstrap import RESAMPLES, SEED, Delta, average_delta, paired_delta
from evals.runner import evaluate_checkpoint
from evals.store.registry import Registry, adapter_text, run_dir_of
from training.common.console import make_console
from training.common.errors import CheckpointError, EvalError
from training.common.store import safe_text
from training.run.checkpoint import COMPLETE, check_checkpoint, complete_checkpoints


@dataclass
class Entry:
    label: str
    target: str  # as the user named it
    checkpoint: Path
    result: dict  # evals.runner's result, with per-example rows
    deltas: dict[str, Delta | None] = field(default_factory=dict)  # task -> delta vs the baseline
    average_delta: Delta | None = None

    @property
    def scores(self) -> dict[str, float]:
        return {t: r["score"] for t, r in self.result["tasks"].items()}

    @property
    def average(self) -> float:
        return sum(self.scores.values()) / len(self.scores)


@dataclass
class Comparison:
    suite: str
    tasks: list[str]  # task names, in suite order
    metrics: dict[str, str]  # task -> metric name
    entries: list[Entry]
    baseline: int  # index into entries

    def to_json(self) -> dict:
        def d(x: Delta | None):
            return (
                None
                if x is None
                else {
                    "delta": x.delta,
                    "lo": x.lo,
                    "hi": x.hi,
                    "n": x.n,
                    "significant": x.significant,
                }
            )

        return {
            "suite": self.suite,
            "baseline": self.entries[self.baseline].label,
            "tasks": self.tasks,
            "bootstrap": {"resamples": RESAMPLES, "seed": SEED, "level": 0.95},
            "entries": [
                {
                    "label": e.label,
                    "target": e.target,
                    "checkpoint": str(e.checkpoint),
                    "step": e.result["step"],
                    "run_name": e.result["run_name"],
                    "adapter": e.result.get("adapter"),  # None: full weights
                    "content_hash": e.result["content_hash"],
                    "scores": e.scores,
                    "average": e.average,
                    "deltas": {t: d(x) for t, x in e.deltas.items()},
                    "average_delta": d(e.average_delta),
                }
                for e in self.entries
            ],
        }


def resolve_target(target: str, registry: Registry) -> list[Path]:
    """The checkpoint(s) a target names; a bad target is a clear LadderError."""
    if target.startswith("sweep:"):
        name = target.split(":", 1)[1]
        rows = registry.checkpoints(sweep=name)
        latest: dict[str, dict] = {}
        for r in rows:  # rows are ordered by run and step: the last one of each run wins
            if Path(r["path"], COMPLETE).is_file():
                latest[r["run_dir"] or r["path"]] = r
        if not latest:
            known = sorted({r["sweep"] for r in registry.checkpoints() if r["sweep"]})
            raise EvalError(
                f"sweep {name!r} has no checkpoints on disk in the registry {registry.path}; "
                f"sweeps there: {known or 'none'} (a sweep's runs set sweep.name)"
            )
        return [Path(r["path"]) for r in latest.values()]
    p = Path(target)
    if p.is_dir() and not (p / COMPLETE).is_file() and (p / "checkpoints").is_dir():
        found = complete_checkpoints(p)
        if not found:
            raise CheckpointError(f"run {p} has no complete checkpoint yet")
        return [found[-1]]
    return [check_checkpoint(p)]


def compare(
    targets: list[str], eval_cfg: DictConfig, registry: Registry, baseline: str | None = None
) -> Comparison:
    if not targets:
        raise EvalError("name at least one checkpoint, run or sweep:NAME to compare")
    named: list[tuple[str, Path]] = [(t, c) for t in targets for c in resolve_target(t, registry)]
    if len(named) < 2:  # a comparison of one is a table of deltas against itself
        raise EvalError(
            f"compare needs two checkpoints, and {' '.join(targets)} names one ({named[0][1]}); "
            "add another checkpoint, run or sweep:NAME, e.g. `ladder compare "
            "runs/a/checkpoints/step_000000 runs/a` (a run is its latest checkpoint)"
        )
    base_idx = 0
    if baseline is not None:
        base_paths = {c.resolve() for c in resolve_target(baseline, registry)}
        matches = [
            i for i, (t, c) in enumerate(named) if t == baseline or c.resolve() in base_paths
        ]
        if not matches:
            raise EvalError(f"--baseline {baseline} is not one of the compared targets")
        base_idx = matches[0]
    entries, seen = [], {}
    for target, ckpt in named:
        result = evaluate_checkpoint(ckpt, eval_cfg, registry)
        label = f"{result['run_name']}@{result['step']}"
        seen[label] = seen.get(label, 0) + 1
        entries.append(
            Entry(label if seen[label] == 1 else f"{label} ({seen[label]})", target, ckpt, result)
        )
    tasks = list(entries[0].result["tasks"])
    base = entries[base_idx]
    for e in entries:
        for t in tasks:
            e.deltas[t] = paired_delta(
                base.result["tasks"][t]["examples"], e.result["tasks"][t]["examples"]
            )
        e.average_delta = average_delta([d for d in e.deltas.values() if d is not None])
    return Comparison(
        eval_cfg.name,
        tasks,
        {t: base.result["tasks"][t]["metric"] for t in tasks},
        entries,
        base_idx,
    )


def mark(d: Delta | None) -> str:
    if d is None or not d.significant:
        return ""
    return "▲" if d.delta > 0 else "▼"


def delta_text(d: Delta | None) -> str:
    if d is None:
        return "n/a"
    return f"{d.delta:+.1f} [{d.lo:+.1f}, {d.hi:+.1f}] {mark(d) or '·'}"


def table(c: Comparison) -> Table:
    """One row per task and checkpoint: narrow enough for a terminal however many are compared."""
    base = c.entries[c.baseline]
    t = Table(
        title=f"eval suite {c.suite!r}: deltas vs {base.label}, 95% CI from a paired bootstrap"
    )
    t.add_column("task", overflow="fold")
    t.add_column("checkpoint", overflow="fold")
    t.add_column("score", justify="right")
    t.add_column("Δ vs baseline [95% CI]", justify="right")
    groups = [
        (f"{task}/{c.metrics[task]}", [(e.scores[task], e.deltas[task]) for e in c.entries])
        for task in c.tasks
    ]
    if len(c.tasks) > 1:  # of one task, the average is that task again
        groups.append(("average", [(e.average, e.average_delta) for e in c.entries]))
    for name, cells in groups:
        for j, (e, (score, d)) in enumerate(zip(c.entries, cells)):
            if j == c.baseline:
                row = [f"{score:.1f}", "baseline"]
            else:
                style = {"▲": "green", "▼": "red"}.get(mark(d))
                row = [f"{score:.1f}", f"[{style}]{delta_text(d)}[/]" if style else delta_text(d)]
            t.add_row(name if j == 0 else "", e.label, *row, end_section=j == len(cells) - 1)
    return t


def print_comparison(c: Comparison, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(table(c))
    n = {t: c.entries[c.baseline].result["tasks"][t]["n"] for t in c.tasks}
    console.print(
        f"▲ / ▼: significantly better / worse (the 95% CI of the paired-bootstrap delta excludes 0; "
        f"{RESAMPLES} resamples over examples, seed {SEED}); · : no significant difference. "
        f"Examples per task: {', '.join(f'{t} {k}' for t, k in n.items())}.",
        highlight=False,
    )
    adapters = [
        f"{e.label} ({adapter_text(e.result['adapter'])})"
        for e in c.entries
        if e.result.get("adapter")
    ]
    if adapters:  # which rows are adapters on a base, not full weights
        text = safe_text(", ".join(adapters), markup=False)  # run names come from checkpoint files
        console.print(f"adapter checkpoints: {text}", highlight=False, markup=False)
    for group in same_checkpoints(c):
        console.print(
            f"{' and '.join(group)} are the same checkpoint (same content hash): their deltas are 0 by "
            "construction, not a finding",
            highlight=False,
        )
    cached = sum(len(e.result["cached_tasks"]) for e in c.entries)
    total = sum(len(e.result["tasks"]) for e in c.entries)
    console.print(f"{cached} of {total} task results came from the eval cache.", highlight=False)


def same_checkpoints(c: Comparison) -> list[list[str]]:
    """Groups of entries (by target as given) that are one checkpoint by content, e.g. `compare A A`."""
    by_hash: dict[str, list[str]] = {}
    for e in c.entries:
        by_hash.setdefault(e.result["content_hash"], []).append(e.target)
    return [targets for targets in by_hash.values() if len(targets) > 1]


def run_dirs(c: Comparison) -> list[Path]:
    out = []
    for e in c.entries:
        d = run_dir_of(e.checkpoint)
        if d is not None and d not in out:
            out.append(d)
    return out
