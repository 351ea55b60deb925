"""`ladder compare` and `ladder leaderboard`: read the registry, evaluate what is missing, print.

    ladder compare runs/a/checkpoints/step_000000 runs/a/checkpoints/step_000150 [--html r.html]
    ladder compare runs/a runs/b sweep:lr-sweep --baseline runs/a eval=cpu
    ladder leaderboard --sweep lr-sweep --rung tiny [eval=cpu] [trainer.run_root=/data/runs]

Both take Hydra overrides after their options: `eval=SUITE` and `eval.*` pick the tasks and
settings, `registry.url` or `trainer.run_root` the registry. Without them, compare uses the
registry beside the first checkpoint or run it names, and leaderboard <trainer.run_root>/registry.db.
"""

from __future__ import annotations

import json
from pathlib import Path

from evals.store.registry import Registry, run_dir_of
from launch.console import make_console
from training.config.compose import compose


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """Targets are paths or sweep:NAME; anything else with '=' is a Hydra override."""
    targets, overrides = [], []
    for item in items:
        (overrides if "=" in item and not Path(item).exists() else targets).append(item)
    return targets, overrides


def registry_for_targets(cfg, overrides: list[str], targets: list[str]) -> Registry:
    explicit = any(
        o.lstrip("+").startswith(("registry.url=", "trainer.run_root=")) for o in overrides
    )
    if not explicit:
        for t in targets:
            p = Path(t)
            run_dir = (
                p.resolve()
                if (p / "checkpoints").is_dir()
                else run_dir_of(p)
                if p.is_dir()
                else None
            )
            if run_dir is not None:
                return Registry(run_dir.parent / "registry.db", cfg.registry.busy_timeout_s)
    return Registry.from_config(cfg)


def check_outputs(**files: str | None) -> None:
    """Refuse an output option that cannot be written (a folder, a NUL, a name too long) before the
    command evaluates anything; files={"--json": path, ...}."""
    from training.common.errors import ConfigError
    from training.config.paths import output_problem

    problems = [p for flag, path in files.items() if path and (p := output_problem(flag, path))]
    if problems:
        raise ConfigError("; ".join(problems))


def write_output(flag: str, path: str, text: str) -> None:
    """Write an output option's file; what check_outputs could not foresee (no permission, a full
    disk) is an error naming the option, not a traceback."""
    from training.common.errors import ConfigError

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot write it: {e.strerror or e}") from None


def cmd_compare(args) -> int:
    from evals.analysis.compare import compare, print_comparison

    check_outputs(**{"--json": args.json, "--html": args.html})
    targets, overrides = split_overrides(args.items)
    cfg = compose(overrides)
    registry = registry_for_targets(cfg, overrides, targets)
    console = make_console()
    c = compare(targets, cfg.eval, registry, baseline=args.baseline)
    print_comparison(c, console)
    pts = seed_points(c, registry, console)
    if args.json:
        out = {**c.to_json(), **({"points": [p.to_json() for p in pts]} if pts else {})}
        write_output("--json", args.json, json.dumps(out, indent=1) + "\n")
        console.print(f"json: {args.json}")
    if args.html:
        from evals.analysis.report import report_html

        write_output("--html", args.html, report_html(c, cfg.eval, registry))
        console.print(f"report: {args.html}")
    return 0


def cmd_leaderboard(args) -> int:
    from evals.analysis.leaderboard import best_per_run, hidden_note, leaderboard, print_leaderboard

    check_outputs(**{"--json": args.json})
    cfg = compose(args.overrides)
    registry = Registry.from_config(cfg)
    filters = {
        "sweep": args.sweep,
        "rung": args.rung,
        "recipe": args.recipe,
        "data": args.data,
        "lr": args.lr,
        "run_name": args.run,
    }
    tasks, ranked = leaderboard(registry, cfg.eval, task=args.task, **filters)
    rows, hidden = (ranked, None) if args.all else best_per_run(ranked)
    rows = rows[: args.top] if args.top else rows
    console = make_console()
    print_leaderboard(tasks, rows, cfg.eval.name, args.task, console)
    if hidden and (note := hidden_note(hidden)):
        console.print(note, highlight=False)
    # points are runs over their seeds: from every checkpoint, whichever rows are shown
    pts = seed_points((registry, cfg.eval, ranked, args.task), registry, console)
    if args.json:
        out = {
            "tasks": tasks,
            "rows": rows,
            **({"points": [p.to_json() for p in pts]} if pts else {}),
        }
        write_output("--json", args.json, json.dumps(out, indent=1) + "\n")
    return 0


def seed_points(source, registry, console) -> list:
    """Points over their seeds (evals/analysis/points.py), printed when some point has several
    seeds (sweep.seeds); source: a Comparison, or leaderboard_points' arguments."""
    from evals.analysis.points import (
        comparison_points,
        has_replicates,
        leaderboard_points,
        print_points,
    )

    if isinstance(source, tuple):
        pts = leaderboard_points(*source)
    else:
        pts = comparison_points(source, registry)
    if not has_replicates(pts):
        return []
    print_points(pts, "sweep points: mean over seeds, ranked", console)
    return pts
