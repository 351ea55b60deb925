"""The check `ladder launch` makes before it records a job: is its data contaminated against its own
eval suite, and was all of the suite checked? (evals/tasks/decontaminate.py does the matching.)

    ladder launch data=my_mix eval=cpu                          # refused (exit status 2) if rows match
    ladder launch data=my_mix eval=cpu --allow-contamination    # launched; the ledger records the flag
    ladder launch data=my_mix eval=tulu3_dev --allow-unchecked  # launched though some tasks were not read

Jobs of a sweep that share their data and eval suite are checked once; a result cached by `ladder
data decontaminate` is reused (the launch itself writes no cache entry). A task or source that
cannot be read on this machine (a hub dataset or lm-eval task not downloaded, HF_DATASETS_OFFLINE)
was not checked: the launch is refused unless --allow-unchecked is given, which the ledger records
(jobs.allow_unchecked), as it records --allow-contamination. A match is refused first.
"""

from __future__ import annotations

import json
import sys

from training.common.errors import DataError


def check_jobs(
    jobs: list, allow: bool, allow_unchecked: bool = False, dry_run: bool = False
) -> None:
    """Raise DataError for the first job whose data matches its eval suite, unless allowed, or whose
    suite could not all be read, unless allowed; mark every job with both flags (the ledger's
    jobs.allow_contamination and jobs.allow_unchecked). A dry run, which launches nothing, says
    that an unchecked suite would be refused and goes on to show the rest of the plan."""
    from omegaconf import OmegaConf

    from evals.tasks.contamination_report import summary_lines, unchecked_line
    from evals.tasks.decontaminate import decontaminate

    seen: dict[str, dict] = {}
    for j in jobs:
        j.allow_contamination = allow
        j.allow_unchecked = allow_unchecked
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
        if report["matching_rows"]:
            lines = summary_lines(report)
            what = (
                f"the data of job {j.run_name} (data={j.cfg.data.name}) overlaps the prompts of its "
                f"eval suite eval={j.cfg.eval.name}: " + "; ".join(lines)
            )
            if not allow:
                raise DataError(
                    what
                    + f". `ladder data decontaminate {' '.join(j.overrides)} --write DIR` writes "
                    "copies without those rows; --allow-contamination launches anyway (recorded in "
                    "the ledger)"
                )
            if first:
                print(
                    f"ladder launch: warning: {what} (launched with --allow-contamination)",
                    file=sys.stderr,
                    flush=True,
                )
        missing = unchecked_line(report)
        if not missing:
            continue
        what = f"job {j.run_name} (data={j.cfg.data.name}, eval={j.cfg.eval.name}): {missing}"
        if not allow_unchecked and dry_run:
            if first:
                print(
                    f"ladder launch --dry-run: warning: {what}; a launch would be refused without "
                    "--allow-unchecked",
                    file=sys.stderr,
                    flush=True,
                )
            continue
        if not allow_unchecked:
            raise DataError(
                what + "; download them (or run where they can be read) and `ladder data "
                "decontaminate` again, or --allow-unchecked launches anyway (recorded in the ledger)"
            )
        if first:
            print(
                f"ladder launch: warning: {what} (launched with --allow-unchecked)",
                file=sys.stderr,
                flush=True,
            )
