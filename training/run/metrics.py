"""metrics.jsonl: one JSON line per optimizer step, appended and flushed as the run goes.

Fields: step, loss, lr (the rate used for that step), grad_norm, tokens (trained tokens so far),
tokens_per_s (tokens processed per second per device), mfu (null when the peak FLOP/s is
unknown), step_time_s with its data / fwd_bwd / optim parts, goodput (trained tokens over
tokens processed), peak_mem_gb, epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

from training.common.safe_files import open_append, write_atomic


class MetricsFile:
    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, row: dict) -> None:
        with open_append(
            self.path
        ) as f:  # O_NOFOLLOW: a link planted there is replaced, not written through
            f.write(json.dumps(row) + "\n")
            f.flush()

    def truncate_after(self, step: int) -> None:
        """Drop lines for steps after `step` (a resumed run redoes them); atomic rewrite."""
        if not self.path.exists():
            return
        keep = [r for r in read_metrics(self.path) if r["step"] <= step]
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in keep))


def read_metrics(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a kill: everything before it is good
    return rows
