"""SQLite plumbing shared by the GPU-hour ledger (launch/ledger.py) and the eval registry
(evals/registry.py): a file safe under many concurrent writer processes.

    class Ledger(SqliteStore):
        SCHEMA = "CREATE TABLE ..."; SCHEMA_VERSION = 2; MIGRATIONS = {2: "ALTER TABLE ..."}
    with Ledger(path).transaction() as db: db.execute(...)

WAL mode lets readers run beside the one writer; every write transaction takes the write lock
up front (BEGIN IMMEDIATE), so two writers never deadlock upgrading read locks, and a busy
timeout makes a writer wait its turn instead of failing with "database is locked".
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from training.errors import ConfigError


def path_from_url(url: str, key: str) -> Path:
    """sqlite:///relative/path, sqlite:////absolute/path (as in SQLAlchemy) or a plain path."""
    if "://" not in url:
        return Path(url)
    scheme, _, rest = url.partition("://")
    if scheme != "sqlite" or not rest.startswith("/"):
        raise ConfigError(f"{key}={url!r}: this version supports SQLite only "
                          "(sqlite:///path/to/file.db or a plain file path)")
    return Path(rest[1:])


class SqliteStore:
    SCHEMA = ""
    SCHEMA_VERSION = 1
    # version -> the statements that bring a file at version - 1 up to it (ALTER TABLE ... ADD
    # COLUMN); new tables need none: SCHEMA creates what is missing (CREATE ... IF NOT EXISTS).
    MIGRATIONS: dict[int, str] = {}

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self.timeout = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.query("PRAGMA user_version")[0]["user_version"] < self.SCHEMA_VERSION:
            with self.transaction() as db:  # re-checked under the lock: another process may have won
                have = db.execute("PRAGMA user_version").fetchone()[0]
                if have < self.SCHEMA_VERSION:
                    if have > 0:  # an older file: migrate its tables first (SCHEMA's indexes may need the columns)
                        for version in range(have + 1, self.SCHEMA_VERSION + 1):
                            self._execute_script(db, self.MIGRATIONS.get(version, ""))
                    self._execute_script(db, self.SCHEMA)
                    db.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")

    @staticmethod
    def _execute_script(db: sqlite3.Connection, script: str) -> None:
        for stmt in script.split(";"):
            if stmt.strip():
                db.execute(stmt)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._switch_to_wal(db)
        return db

    def _switch_to_wal(self, db: sqlite3.Connection) -> None:
        """Switching to WAL needs a moment of exclusive access, and SQLite answers "database is
        locked" at once (without the busy handler) when another process holds the file: retry."""
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that holds the write lock from its first statement."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def query(self, sql: str, args: tuple = ()) -> list[dict]:
        db = self._connect()
        try:
            return [dict(r) for r in db.execute(sql, args).fetchall()]
        finally:
            db.close()
