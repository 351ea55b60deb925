"""The check `ladder launch` makes before it records a job: is its data contaminated against its own
eval suite? (evals/tasks/decontaminate.py does the matching.)

    ladder launch data=my_mix eval=cpu                          # refused (exit status 2) if rows match
    ladder launch data=my_mix eval=cpu --allow-contamination    # launched; the ledger records the flag

Jobs of a sweep that share their data and eval suite are checked once; a result cached by `ladder
data decontaminate` is reused (the launch itself writes no cache entry). A source or task that
cannot be read on this machine (a hub dataset or lm-eval catalogue task not downloaded) is named
in a note on stderr and does not stop the launch: only a match does.
"""

from __future__ import annotations

import json
import sys

from training.common.errors import DataError


def check_jobs(jobs: list, allow: bool) -> None:
    """Raise DataError for the first job whose data matches its eval suite, unless allowed;
    mark every job with the flag (the ledger's jobs.allow_contamination)."""
    from omegaconf import OmegaConf

    from evals.tasks.decontaminate import decontaminate, summary_lines

    seen: dict[str, dict] = {}
    for j in jobs:
        j.allow_contamination = allow
        key = json.dumps(
            [
                OmegaConf.to_container(j.cfg.data),
                OmegaConf.to_container(j.cfg.eval),
                j.cfg.recipe.loss,
                j.cfg.trainer.run_root,
            ],
            sort_keys=True,
            default=str,
        )
        first = key not in seen
        if first:
            seen[key] = decontaminate(j.cfg, write_cache=False)  # a refused launch writes no file
        report = seen[key]
        if first:
            for x in report["not_checked_tasks"] + report["not_checked_sources"]:
                print(
                    f"ladder launch: note: {x.get('task') or x.get('source')} was not checked for contamination: "
                    f"{x['reason']}",
                    file=sys.stderr,
                    flush=True,
                )
        if not report["matching_rows"]:
            continue
        lines = summary_lines(report)
        what = (
            f"the data of job {j.run_name} (data={j.cfg.data.name}) overlaps the prompts of its eval suite "
            f"eval={j.cfg.eval.name}: " + "; ".join(lines)
        )
        if not allow:
            raise DataError(
                what
                + f". `ladder data decontaminate {' '.join(j.overrides)} --write DIR` writes copies "
                "without those rows; --allow-contamination launches anyway (recorded in the ledger)"
            )
        if first:
            print(
                f"ladder launch: warning: {what} (launched with --allow-contamination)",
                file=sys.stderr,
                flush=True,
            )
