"""Progress you can watch: a rich progress bar on a terminal, the plain log lines otherwise.

    ladder train rung=tiny                       # a bar: step, ETA, steps/s, headline metrics, tokens/s
    ladder train rung=tiny | tee train.log       # not a terminal: one log line every trainer.log_every steps
    ladder eval runs/tiny-sft-reverse/checkpoints/step_000200   # a bar over each built-in task's examples

The trainer hands every step's metrics to StepProgress.update, which shows the recipe's headline
metrics (SFT: loss; DPO: loss, margin, accuracy; GRPO: reward, KL, answer length, generation
share); evals/tasks/generate.py counts examples through example_progress. Whether a bar is
drawn depends on stdout alone (a SLURM log, a pipe or a background eval's log file get the log
lines, which grep and `tail -f` read better than a redrawn bar). While a bar is up, log lines
that were going to the terminal are printed above it instead of through it; lines going to a file
keep going there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from training.recipes.headline import LOSS, Headline, line


def make_console() -> Console:
    """The console bars draw on: stdout. Tests replace this with Console(force_terminal=True)."""
    return Console()


class _Rate(ProgressColumn):
    """Steps/s or examples/s: rich's own estimate over the last 30 s, so a slow first step (set-up,
    compilation) stops counting once it is 30 s old."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            f"{speed:.2f} {task.fields['unit']}/s" if speed else f"- {task.fields['unit']}/s"
        )


def _new_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=30),
        TextColumn("{task.completed:.0f}/{task.total:.0f} {task.fields[unit]}"),
        _Rate(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[extra]}"),
        console=console,
        transient=False,
        refresh_per_second=4,
    )


_active: StepProgress | None = None  # the training bar that eval progress joins (one live display)


class StepProgress:
    """The training loop's progress: update(metrics) after each step, close() at the end."""

    def __init__(
        self,
        total: int,
        start: int,
        log_every: int,
        log: logging.Logger,
        enabled: bool = True,
        console: Console | None = None,
        headline: tuple[Headline, ...] = (LOSS,),
    ):
        global _active
        self.total, self.log_every, self.log = total, log_every, log
        self.headline = headline  # the recipe's (training/recipes/headline.py)
        self.bar: Progress | None = None
        self._rerouted: list[tuple[logging.StreamHandler, object]] = []
        console = console or make_console() if enabled else None
        if console is None or not console.is_terminal:
            return
        self.bar = _new_bar(console)
        self.task = self.bar.add_task("train", total=total, completed=start, unit="steps", extra="")
        self.bar.start()
        self._reroute_logging()
        _active = self

    def update(self, m: dict) -> None:
        step = m["step"]
        if self.bar is None:
            if step % self.log_every == 0 or step == self.total:
                self.log.info(
                    "step %d/%d %s lr %.2e grad_norm %.3f tok/s/device %.0f",
                    step,
                    self.total,
                    line(self.headline, m),
                    m["lr"],
                    m["grad_norm"],
                    m["tokens_per_s"],
                )
            return
        self.bar.update(
            self.task,
            completed=step,
            extra=f"{line(self.headline, m, '  ')}  {m['tokens_per_s']:,.0f} tok/s/device",
        )

    def close(self) -> None:
        global _active
        if self.bar is None:
            return
        self.bar.stop()
        for handler, stream in self._rerouted:
            handler.setStream(stream)
        self._rerouted.clear()
        self.bar = None
        if _active is self:
            _active = None

    def _reroute_logging(self) -> None:
        """Log handlers writing to a terminal write through the bar's redirected stderr (rich's
        FileProxy, which prints above the bar); without this each log line would tear the bar."""
        import sys

        proxy = sys.stderr  # Progress.start() put a proxy here because the console is a terminal
        for handler in logging.getLogger().handlers:
            stream = getattr(handler, "stream", None)
            if (
                type(handler) is logging.StreamHandler
                and stream is not proxy
                and hasattr(stream, "isatty")
                and stream.isatty()
            ):
                self._rerouted.append((handler, handler.setStream(proxy)))


@contextmanager
def example_progress(total: int, description: str = "eval") -> Iterator[Callable[[int], None]]:
    """`with example_progress(n, "eval reverse") as advance: ... advance(batch)`: a bar over
    examples on a terminal (a second line under the training bar when one is up), else nothing."""
    if _active is not None and _active.bar is not None:
        bar = _active.bar
        task = bar.add_task(description, total=total, unit="examples", extra="")
        try:
            yield lambda n: bar.advance(task, n)
        finally:
            bar.remove_task(task)
        return
    console = make_console()
    if not console.is_terminal or total <= 0:
        yield lambda n: None
        return
    with _new_bar(console) as bar:
        task = bar.add_task(description, total=total, unit="examples", extra="")
        yield lambda n: bar.advance(task, n)
