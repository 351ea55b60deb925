"""Team membership: who may charge a team's GPU-hours.

    ladder budget members --team llm --add alice --add bob [--remove carol]   # launch/commands/budget_cmd.py
    ladder budget members --team llm                                          # lists them

A team with members listed in the ledger's `team_members` admits a launch (`ladder launch`,
`ladder promote`, `ladder eval ... launcher=slurm`, a direct `ladder train` on a server ledger:
every caller of launch/budget.check_and_record_many) only when its launcher is one of them; a
team with none listed is open, so old ledgers and the local `default` team work with no setup.

The launcher is matched by name (launcher_name): on PostgreSQL the database role (current_user),
which the server authenticated at login, so no environment variable changes it; on SQLite the OS
user (getpass: $LOGNAME or $USER first), which anyone can set, but whoever can write a local
ledger file can edit any row of it anyway. Changing membership is a write to `team_members`,
the same kind of right as changing an allocation: a server's owner grants launchers' roles only
SELECT on it, and their `--add` is refused by the server.
"""

from __future__ import annotations

import re
import time

from launch.accounting.ledger import Ledger, check_name, identity, os_user
from launch.console import safe_text
from training.common.errors import BudgetError, ConfigError
from training.common.store import Db

# A member is a bare OS user or role name: "alice@login1" (jobs.launched_by's form) would never match.
# (Control characters and length: launch/ledger.check_name, for every name entering the ledger.)
MEMBER_NAME = re.compile(r"[^\s@]+")


def launcher_name(db: Db) -> str:
    """The name a launch's membership is checked against (see the module's docstring)."""
    if db.dialect == "postgresql":
        return db.one("SELECT current_user AS u")["u"]
    return os_user()


def matched_as(db: Db) -> str:
    return "the database role (current_user)" if db.dialect == "postgresql" else "the OS user"


def members(db: Db, team: str) -> list[dict]:
    return db.all("SELECT * FROM team_members WHERE team = ? ORDER BY member", (team,))


def all_members(ledger: Ledger) -> dict[str, list[str]]:
    """team -> its members, for the teams that list any."""
    out: dict[str, list[str]] = {}
    for r in ledger.query("SELECT team, member FROM team_members ORDER BY team, member"):
        out.setdefault(r["team"], []).append(r["member"])
    return out


def member_changes(ledger: Ledger, team: str) -> list[dict]:
    return ledger.query("SELECT * FROM team_member_changes WHERE team = ? ORDER BY id", (team,))


def change_members(
    db: Db, team: str, add=(), remove=(), changed_by: str | None = None, now: float | None = None
) -> dict[str, list[str]]:
    """Add and remove members of a team, recording each change; all or nothing (ConfigError).
    Returns {"added", "already", "removed"}."""
    check_name("team", team)
    for m in [*add, *remove]:
        check_name("member", m)
    bad = [m for m in [*add, *remove] if not MEMBER_NAME.fullmatch(m)]
    if bad:
        raise ConfigError(
            f"member {bad[0]!r}: name the user alone (no '@host', no spaces): the OS user on a "
            "SQLite ledger, the database role on PostgreSQL; nothing was changed"
        )
    both = sorted(set(add) & set(remove))
    if both:
        raise ConfigError(f"{both[0]!r} is both added and removed; nothing was changed")
    now = time.time() if now is None else now
    changed_by = changed_by or identity(db)
    db.lock(
        f"budget:{team}"
    )  # the lock a launch holds while it checks membership (launch/accounting/budget.py)
    have = {r["member"] for r in members(db, team)}
    missing = sorted(set(remove) - have)
    if missing:
        raise ConfigError(f"{missing[0]!r} is not a member of team {team!r}; nothing was changed")
    added = sorted(set(add) - have)
    for m in added:
        db.insert(
            "team_members",
            {"team": team, "member": m, "added_by": changed_by, "added_at": now},
            returning_id=False,
        )
    for m in sorted(set(remove)):
        db.execute("DELETE FROM team_members WHERE team = ? AND member = ?", (team, m))
    for action, names in (("add", added), ("remove", sorted(set(remove)))):
        for m in names:
            db.insert(
                "team_member_changes",
                {
                    "team": team,
                    "member": m,
                    "action": action,
                    "changed_by": changed_by,
                    "changed_at": now,
                },
            )
    return {"added": added, "already": sorted(set(add) & have), "removed": sorted(set(remove))}


def require_member(ledger: Ledger, db: Db, team: str, launching: bool = True) -> None:
    """BudgetError unless the team is open or this process's launcher is one of its members.
    Called under the team's lock, in the transaction that records the jobs (launching=False: a
    dry run's read-only check)."""
    listed = [r["member"] for r in members(db, team)]
    name = launcher_name(db)
    if not listed or name in listed:
        return
    shown = [safe_text(m, markup=False) for m in listed]  # rows other tools may have written
    raise BudgetError(
        f"team {team!r} admits launches by its members only ({', '.join(shown)}), and you are {name!r} "
        f"(the ledger {ledger.where} matches {matched_as(db)}). "
        + ("Nothing was launched. " if launching else "")
        + f"A member or the ledger's owner adds you: ladder budget members --team {safe_text(team, markup=False)} "
        f"--add {safe_text(name, markup=False)}"
    )
