"""Terminal output shared by the verbs that print tables: rich, never truncated.

    from launch.console import make_console, num, safe_text
    console.print(f"team {safe_text(row['team'])}")        # text read from the ledger or registry
    print(f"set by {safe_text(row['set_by'], markup=False)}")   # the same, printed without rich

Text read back from the ledger or the registry is printed through safe_text (training/common/store.py).
make_console is training/common/console.py's: in a pipe a table prints whole at its natural width.
"""

from __future__ import annotations

# The helper lives beside the stores (training/common/store.py), so evals/ can use it too (evals never
# import launch).
from training.common.store import safe_text  # noqa: F401
from training.common.store_url import invisible_chars  # noqa: F401


def make_console():
    """training/common/console.py's console (imported here, not at the top: rich costs an import
    that `ladder --help` and a config error need not pay)."""
    from training.common.console import make_console

    return make_console()


def num(x: float | None, digits: int = 1) -> str:
    """1234.56 -> '1,234.6', 0.0244 -> '0.024' (a tiny run's hours still show), None -> '-'."""
    if x is None:
        return "-"
    if 0 < abs(x) < 1:
        digits = max(digits, 3)
    return f"{x:,.{digits}f}"


def si(x: float) -> str:
    """405_853_388_800 -> '405.85 B', 1_917_888 -> '1.92 M': counts of parameters and tokens."""
    for value, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= value:
            return f"{x / value:,.2f} {unit}"
    return f"{x:,.0f}"
