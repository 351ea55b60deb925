"""The console every `ladder` verb prints its tables and lines through: whole values in a pipe.

    from training.common.console import make_console     # launch/ re-exports it as launch.console
    console = make_console(); console.print(table)       # a Table is never wrapped or cut in a pipe
    ladder plan rung=405b recipe=grpo | less -S           # every cell whole, one row per line
    COLUMNS=200 ladder compare runs/a runs/b > out.txt    # text and rules 200 wide; tables whole

On a terminal it is rich's ordinary console (its width, colours, tables fitted to the window).
When stdout is not a terminal (a pipe, a file, a log, a test), a width chosen for a window that
is not there only breaks values (`synthetic.j` / `son`, `optimiz…`), so:
- a table prints at its natural width, however wide: no column is wrapped, folded or cut;
- text is not wrapped (each line as written) unless COLUMNS is set, in which case it wraps at
  COLUMNS, as rich does on a terminal;
- no colour codes.
Everywhere, a section rule whose title does not fit on the line (a long command) is drawn bare,
with the title whole on the line below, instead of cut with an ellipsis.

Built here, beside the stores, so evals/ can use it too (evals never import launch).
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache

from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

# The width of rules in a pipe when COLUMNS is unset (rich's own default for a non-terminal is 80).
PIPE_WIDTH = 100
# Measuring a table against this says how wide it wants to be: no table is that wide.
_UNBOUNDED = 1 << 16


class CliConsole(Console):
    """rich's Console, with tables whole in a pipe and rule titles never cut (see the module)."""

    def __init__(self, *args, whole_tables: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.whole_tables = whole_tables

    def print(self, *objects, **kwargs) -> None:
        tables = [o for o in objects if isinstance(o, Table)]
        if not (self.whole_tables and tables) or kwargs.get("width") is not None:
            return super().print(*objects, **kwargs)
        need = max(natural_width(self, t) for t in tables)
        if need <= self.width:
            return super().print(*objects, **kwargs)
        # Widen the console for this one print: rich renders a table no wider than its console and
        # crops each line to it, so a narrower console is what wraps or cuts a cell.
        kept = self._width
        self._width = need
        try:
            super().print(*objects, **kwargs)
        finally:
            self._width = kept

    def rule(self, title="", **kwargs) -> None:
        text = self.render_str(title) if isinstance(title, str) else title
        # rich keeps two cells of line and a space each side of the title and cuts the rest
        if not text.plain or cell_len(text.plain) + 4 <= self.width:
            return super().rule(title, **kwargs)
        super().rule(**kwargs)
        self.print(text)


def natural_width(console: Console, table: Table) -> int:
    """The width at which every cell of `table` prints whole on one line."""
    return Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum


@lru_cache  # one warning per value, however many consoles a command makes
def columns_from_env(raw: str | None) -> int | None:
    """COLUMNS as a width, or None when it is unset; a value that is not a positive whole number is
    ignored with one line on stderr (rich would ignore it silently)."""
    if raw is None or raw == "":
        return None
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    print(f"ladder: ignoring COLUMNS={raw!r}: not a positive whole number", file=sys.stderr)
    return None


def make_console() -> CliConsole:
    """The console for a command's output on stdout (see the module for what a pipe gets)."""
    # emoji=False: a team called ":fire:" is shown as written, not as a picture
    console = CliConsole(emoji=False)
    if console.is_terminal:
        return console
    columns = columns_from_env(os.environ.get("COLUMNS"))
    return CliConsole(
        emoji=False,
        no_color=True,
        highlight=False,
        width=columns or PIPE_WIDTH,
        soft_wrap=columns is None,  # text as written: no wrapping, no cropping
        whole_tables=True,
    )
