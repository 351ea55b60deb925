"""Arguments several `ladder` verbs share, written once so their help reads the same everywhere.

from launch.cli_args import add_ledger_overrides
add_ledger_overrides(parser)              # the trailing Hydra overrides that locate the ledger
"""

from __future__ import annotations


def add_ledger_overrides(parser, what: str = "the ledger") -> None:
    """The trailing Hydra overrides of a verb that reads or writes the ledger (and registry)."""
    parser.add_argument(
        "overrides",
        nargs="*",
        help=f"Hydra overrides that locate {what} (trainer.run_root=..., "
        "ledger.url=..., registry.url=...)",
    )
