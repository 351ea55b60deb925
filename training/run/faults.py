"""Fault injection for the tests of checkpointing and fault handling; inert unless asked for.

    LADDER_FAULT=kill_in_save:10   SIGKILL this process mid-way through saving step 10
    LADDER_FAULT=kill_in_upload:10 SIGKILL it once step 10's files are at trainer.checkpoint_url, before COMPLETE
    LADDER_FAULT=hang_at:3         hang forever in step 3 (the step watchdog must report it)
    LADDER_FAULT=nan_at:4          make the loss of step 4 NaN

Real faults (a preemption, a node dying during a save, a wedged collective) cannot be
summoned on demand in a test; these points reproduce their effect at a chosen step.
"""

from __future__ import annotations

import os
import signal
import time


def _fault() -> tuple[str, int] | None:
    spec = os.environ.get("LADDER_FAULT")
    if not spec:
        return None
    kind, _, step = spec.partition(":")
    return kind, int(step)


def maybe(kind: str, step: int) -> bool:
    f = _fault()
    if f is None or f != (kind, step):
        return False
    if kind in ("kill_in_save", "kill_in_upload"):
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang_at":
        while True:
            time.sleep(3600)
    return True
