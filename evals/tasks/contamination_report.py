"""How a decontamination report reads: the refusal lines of `ladder launch` and the table of
`ladder data decontaminate`. Task ids, row places and reasons come from files Ladder did not
write (eval task files, data rows, error text): they are printed through safe_text, so markup or
control characters in them print as themselves.
"""

from __future__ import annotations

from training.common.store import safe_text


def summary_lines(report: dict) -> list[str]:
    """One line per contaminated source: what `ladder launch` says when it refuses."""
    return [
        f"{s['source']}: {len(s['matching_rows'])} of {s['rows_checked']} rows match "
        + ", ".join(
            f"{safe_text(t, False)} ({n} rows)" for t, n in sorted(s["rows_by_task"].items())
        )
        + f", e.g. {safe_text(s['matching_rows'][0]['where'], False)}"
        for s in report["sources"]
        if s["matching_rows"]
    ]


def unchecked_line(report: dict) -> str:
    """One line naming what was not checked (empty when everything was)."""
    tasks = [safe_text(x["task"], False) for x in report["unchecked_tasks"]]
    sources = [safe_text(x["source"], False) for x in report["unchecked_sources"]]
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
        table.add_column(f"{safe_text(t)} ({report['eval_prompts'][t]} prompts)", justify="right")
    table.add_column("matching rows", justify="right")
    for s in report["sources"]:
        table.add_row(
            safe_text(s["source"]),
            f"{s['rows_checked']:,}",
            *(f"{s['rows_by_task'].get(t, 0):,}" for t in tasks),
            f"{len(s['matching_rows']):,}",
        )
    console.print(table)
    for t, n in sorted(report.get("prompts_by_task", {}).items()):
        console.print(
            f"{safe_text(t)}: {n} of its {report['eval_prompts'][t]} prompts occur in the training data"
        )
    for s in report["sources"]:
        for m in s["matching_rows"][:5]:
            console.print(
                f"  {safe_text(s['source'])}: {safe_text(m['where'])} matches "
                + "; ".join(
                    f"{safe_text(t)} {', '.join(safe_text(i) for i in ids[:3])}"
                    for t, ids in m["tasks"].items()
                )
            )
        if len(s["matching_rows"]) > 5:
            console.print(
                f"  {safe_text(s['source'])}: ... {len(s['matching_rows']) - 5} more "
                "(--json lists them all)"
            )
    for x in report["unchecked_tasks"] + report["unchecked_sources"]:
        what = safe_text(x.get("task") or x.get("source"))
        console.print(f"unchecked: {what}: {safe_text(x['reason'])}")
    for name, path in report.get("written", {}).items():
        console.print(f"wrote {safe_text(path)} ({safe_text(name)} without its matching rows)")
