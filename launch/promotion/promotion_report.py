"""`ladder promotion-report`: did the lower rung's ranking predict the higher rung's?

    ladder promotion-report --sweep lr-sweep            # every promotion from or to this sweep
    ladder promotion-report --sweep lr-sweep@70b --json
    rho = spearman([71.0, 64.0, 52.0], [40.1, 44.9, 30.2])   # 0.5

For each promotion (the jobs one `ladder promote` launched, launch/promotion/promote.py) it reads the
lineage from the ledger and shows each promoted configuration's score and rank at the lower
rung (its rank in the whole sweep) beside its score and rank at the higher rung. A promoted run
is scored like its parent: its last registered checkpoint, on the promotion's metric, with the
eval settings recorded in the lineage, so both rungs are scored alike; a run not yet finished
or not yet evaluated shows as such and is left out. Nothing is evaluated here.

Spearman's rho is the Pearson correlation of the two rankings over the n configurations scored
at both rungs, with tied scores given the average of their ranks; the p-value is one-sided (how
often a random order of the higher rung agrees at least as well), exact up to n = 8, else from
20,000 seeded random orders. With n < 3 rho is +1, -1 or undefined whatever the models do: not
meaningful. Only the lower rung's best points are promoted, so rho says whether the proxy
orders the *good* configurations, and it is usually lower than it would be over a whole sweep.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from omegaconf import OmegaConf

from launch.accounting.ledger import ACTIVE, Ledger
from launch.console import make_console, safe_text
from training.common.errors import ConfigError

EXACT_UP_TO = 8  # n! orders: 40,320 at 8
DRAWS = 20_000


def average_ranks(values: list[float]) -> list[float]:
    """Rank 1 = the highest value; tied values share the average of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(x: list[float], y: list[float]) -> float | None:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / (sxx * syy) ** 0.5


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation of paired scores; None when undefined (n < 2, or all tied)."""
    if len(x) != len(y):
        raise ValueError("spearman: x and y differ in length")
    if len(x) < 2:
        return None
    return _pearson(average_ranks(x), average_ranks(y))


def spearman_p(x: list[float], y: list[float]) -> float | None:
    """One-sided p-value: P(rho >= observed) when the higher rung's order is random."""
    rho = spearman(x, y)
    if rho is None:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    if len(x) <= EXACT_UP_TO:
        orders = list(itertools.permutations(ry))
    else:
        rng = random.Random(0)
        orders = [rng.sample(ry, len(ry)) for _ in range(DRAWS)]
    hits = sum(1 for o in orders if (_pearson(rx, list(o)) or 0.0) >= rho - 1e-12)
    return hits / len(orders) if len(x) <= EXACT_UP_TO else (hits + 1) / (len(orders) + 1)


def verdict(rho: float | None, n: int, p: float | None, lower: str, higher: str) -> str:
    if n < 2 or rho is None:
        why = (
            "fewer than 2 configurations are scored at both rungs"
            if n < 2
            else "every score at one rung is tied"
        )
        return f"not computable: {why}."
    if n < 3:
        return (
            f"not meaningful: with n = {n} rho can only be +1 or -1, whatever the models do. Promote at "
            f"least 3 configurations (5 or more to trust the answer)."
        )
    if rho >= 0.8:
        text = (
            f"strong agreement: the {lower} ranking predicted the {higher} ranking; "
            f"{lower} looks like a trustworthy proxy for this kind of sweep"
        )
    elif rho >= 0.5:
        text = (
            f"moderate agreement: {lower} picks good configurations but not reliably their order at {higher}; "
            f"promote a few more than you need"
        )
    elif rho > 0:
        text = (
            f"weak agreement: the {lower} ranking says little about {higher}; "
            f"do not trust {lower} alone for this kind of sweep"
        )
    else:
        text = (
            f"no agreement: the {lower} ranking did not carry over to {higher} (it reversed); "
            f"{lower} is a misleading proxy here"
        )
    if rho > 0 and p is not None and p > 0.05:
        text += f" (but with n = {n} an agreement this good happens by chance with p = {p:.2f})"
    return text + "."


def promotion_groups(ledger: Ledger, sweep: str | None) -> list[list[dict]]:
    rows = ledger.promotions(sweep)
    if not rows:
        if sweep is None:
            raise ConfigError(
                f"no promotions in the ledger {ledger.path}; run `ladder promote` first"
            )
        promoted = sorted({safe_text(r["from_sweep"], markup=False) for r in ledger.promotions()})
        raise ConfigError(
            f"no promotion from or to sweep {sweep!r} in the ledger {ledger.path}; promoted "
            f"sweeps there: {', '.join(promoted) or 'none'}"
        )
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["from_sweep"], r["to_sweep"]), []).append(r)
    return list(groups.values())


def report(ledger: Ledger, cfg, sweep: str | None) -> list[dict]:
    """One dict per promotion: its rows (lower and higher scores and ranks) and Spearman's rho."""
    from evals.store.run_scores import Metric, parse_metric, run_score
    from training.config.compose import literal
    from training.config.schema import EvalConfig

    out = []
    for rows in promotion_groups(ledger, sweep):
        first = rows[0]
        # plain values (JSON): escaped, so a literal `${` in one is not read as an interpolation
        eval_cfg = OmegaConf.merge(
            OmegaConf.structured(EvalConfig), literal(json.loads(first["eval_json"]))
        )
        try:
            metric = parse_metric(first["metric"], eval_cfg)
        except (
            ConfigError
        ) as e:  # the suite's files moved: say so instead of failing the whole report
            metric = Metric(first["metric"], {}, None)
            error = str(e)
        else:
            error = None
        children = {r["child_job_id"]: r for r in rows}
        jobs = {j["id"]: j for j in (ledger.job(i) for i in children)}
        if any(j["state"] in ACTIVE for j in jobs.values()):
            try:
                from launch.commands.status_cmd import refresh

                jobs = {j["id"]: j for j in refresh(ledger, list(jobs.values()))}
            except (ImportError, OSError):
                pass
        cache: dict = {}
        entries = []
        for r in rows:
            job = jobs[r["child_job_id"]]
            ckpt, score = (None, None)
            if metric.keys and job["state"] == "completed":
                ckpt, score = run_score(r["child_run_dir"], cfg, metric, cache)
            entries.append(
                {
                    "configuration": r["parent_run_name"],
                    "parent_job_id": r["parent_job_id"],
                    "lower_score": r["parent_score"],
                    "lower_rank": r["parent_rank"],
                    "lower_points": r["points"],
                    "lower_lr": r["parent_lr"],
                    "lower_checkpoint": r["parent_checkpoint"],
                    "run": r["child_run_name"],
                    "job_id": r["child_job_id"],
                    "state": job["state"],
                    "higher_score": score,
                    "higher_rank": None,
                    "higher_lr": r["child_lr"],
                    "higher_checkpoint": ckpt["path"] if ckpt else None,
                    "status": job["state"]
                    if job["state"] != "completed"
                    else ("scored" if score is not None else "not evaluated"),
                }
            )
        both = [e for e in entries if e["higher_score"] is not None]
        for e, rank in zip(both, average_ranks([e["higher_score"] for e in both])):
            e["higher_rank"] = rank
        lower, higher = [e["lower_score"] for e in both], [e["higher_score"] for e in both]
        rho, p = spearman(lower, higher), spearman_p(lower, higher)
        n = len(both)
        out.append(
            {
                "from_sweep": first["from_sweep"],
                "to_sweep": first["to_sweep"],
                "from_rung": first["from_rung"],
                "to_rung": first["to_rung"],
                "metric": first["metric"],
                "suite": first["suite"],
                "promoted": len(rows),
                "rows": entries,
                "eval_error": error,
                "spearman": {
                    "rho": rho,
                    "n": n,
                    "p_value": p,
                    "meaningful": n >= 3 and rho is not None,
                    "verdict": verdict(rho, n, p, first["from_rung"], first["to_rung"]),
                },
                "decision_accuracy": decision_accuracy_json(lower, higher),
            }
        )
    return out


def decision_accuracy_json(lower: list[float], higher: list[float]) -> dict:
    """DataDecide's pairwise decision accuracy with its bootstrap interval (launch/promotion/noise.py)."""
    from launch.promotion.noise import decision_accuracy_ci

    acc, lo, hi = decision_accuracy_ci(lower, higher)
    return {"accuracy": acc, "lo": lo, "hi": hi, "pairs": len(lower) * (len(lower) - 1) // 2}


def _fmt(x: float | None, digits: str = ".4g") -> str:
    return "-" if x is None else format(x, digits)


def render(promotions: list[dict], ledger_path: Path | str, console=None) -> None:
    from rich.table import Table

    console = console or make_console()
    show = safe_text  # every string below comes from the ledger's rows, which other tools may have written
    for pr in promotions:
        lo, hi = show(pr["from_rung"]), show(pr["to_rung"])
        console.print(
            f"promotion {show(pr['from_sweep'])} ({lo}) -> {show(pr['to_sweep'])} ({hi}): "
            f"{pr['promoted']} configuration(s), scored by {show(pr['metric'])} (suite {show(pr['suite'])})",
            highlight=False,
        )
        t = Table()
        for col, right in (
            ("configuration", False),
            (f"score @ {lo}", True),
            (f"rank @ {lo}", True),
            ("promoted run", False),
            (f"score @ {hi}", True),
            (f"rank @ {hi}", True),
            ("lr", True),
            ("job", False),
        ):
            t.add_column(col, justify="right" if right else "left", overflow="fold")
        scored = sum(1 for e in pr["rows"] if e["higher_rank"] is not None)
        for e in pr["rows"]:
            t.add_row(
                show(e["configuration"]),
                _fmt(e["lower_score"]),
                f"{e['lower_rank']} of {e['lower_points']}",
                show(e["run"]),
                _fmt(e["higher_score"]),
                "-" if e["higher_rank"] is None else f"{e['higher_rank']:g} of {scored}",
                f"{_fmt(e['lower_lr'], '.3g')} -> {_fmt(e['higher_lr'], '.3g')}",
                f"{e['job_id']}: {show(e['status'])}",
            )
        console.print(t)
        s = pr["spearman"]
        if s["rho"] is None:
            console.print(f"Spearman's rho: undefined over n = {s['n']}", highlight=False)
        else:
            console.print(
                f"Spearman's rho = {s['rho']:+.2f} over n = {s['n']} configuration(s) scored at both "
                f"rungs (one-sided permutation p = {s['p_value']:.2f})",
                highlight=False,
            )
        da = pr.get("decision_accuracy") or {}
        if da.get("accuracy") is not None:
            ci = "" if da["lo"] is None else f", 95% CI [{da['lo']:.2f}, {da['hi']:.2f}]"
            console.print(
                f"pairwise decision accuracy = {da['accuracy']:.2f} over {da['pairs']} pair(s){ci} "
                "(the fraction of pairs whose lower-rung order holds at the higher rung)",
                highlight=False,
            )
        console.print(f"verdict: {show(s['verdict'])}", highlight=False)  # it names the rungs
        missing = [e for e in pr["rows"] if e["higher_score"] is None]
        if missing:
            left = ", ".join(f"{show(e['run'])} ({show(e['status'])})" for e in missing)
            console.print(
                f"left out: {left}; score finished runs with `ladder eval CKPT eval={show(pr['suite'])} "
                "...` (the settings of the lower rung's scores)",
                highlight=False,
            )
        if pr["eval_error"]:
            console.print(
                f"the promotion's eval settings no longer load: {show(pr['eval_error'])}",
                highlight=False,
            )
    lower = show(promotions[0]["from_rung"]) if promotions else "the lower rung"
    console.print(
        f"ledger: {show(ledger_path)}. Ranks at {lower} "
        "are over the whole sweep; rho compares the order of the promoted configurations only "
        "(ties get average ranks); n < 3 is not meaningful.",
        style="dim",
        highlight=False,
    )


def cmd_promotion_report(args) -> int:
    from training.config.compose import compose

    cfg = compose(args.overrides)
    ledger = Ledger.existing(cfg)
    if ledger is None:
        raise ConfigError(
            f"no ledger at {cfg.ledger.url}; point at the run root (trainer.run_root=...)"
        )
    promotions = report(ledger, cfg, args.sweep)
    if args.json:
        print(json.dumps({"ledger": str(ledger.path), "promotions": promotions}, indent=1))
    else:
        render(promotions, ledger.path)
    return 0
