"""A real PostgreSQL server for the `postgres` tests, from Debian's packages (postgresql-15):
its own data directory and a private port, password logins over TCP, stopped by its PID.

    .venv/bin/python tests/cluster/postgres.py     # start one, print its URL, stop it on Enter
    server = PostgresServer.start(); url = server.create_database("t1"); server.stop()

Run as root (as in CI containers) the server runs as the `postgres` user, because PostgreSQL
refuses to run as root. The role `ladder` logs in with a password that is kept in a pgpass
file (PGPASSFILE), never in a URL, as a user's would be.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROLE = "ladder"


def postgres_bin() -> Path | None:
    """Debian's server binaries (the newest installed version), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parent.parent.name)
    )
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    base: Path  # data/, the socket directory and the pgpass file
    port: int
    password: str
    user: str | None  # the OS user the server runs as (None: this one)
    # synchronous commits: a commit survives `stop_now` (-m immediate); off, the fast default loses
    # the last ones, as a crash with synchronous_commit=off would
    durable: bool = False

    @property
    def pgpass(self) -> Path:
        return self.base / "pgpass"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{dbname}"

    @classmethod
    def start(cls, password: str | None = None, durable: bool = False) -> PostgresServer:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError(
                "no PostgreSQL server installed (/usr/lib/postgresql/*/bin); "
                "tests/system_packages.sh installs Debian's postgresql as root"
            )
        user = "postgres" if os.getuid() == 0 else None
        base = Path(tempfile.mkdtemp(prefix="ladder-pg-"))
        password = password or os.urandom(12).hex()
        (base / "pwfile").write_text(password + "\n")
        if user is not None:  # the server's user must own its directory
            ent = pwd.getpwnam(user)
            for p in (base, base / "pwfile"):
                os.chown(p, ent.pw_uid, ent.pw_gid)
        run = dict(
            user=user,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=base,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
        init = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(base / "data"),
                "-U",
                ROLE,
                "--pwfile",
                str(base / "pwfile"),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            **run,
        )
        (base / "pwfile").unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stderr[-2000:]}")
        server = cls(base, free_port(), password, user, durable)
        try:
            server.start_again()
        except RuntimeError:
            server.stop()
            raise
        server.pgpass.write_text(f"127.0.0.1:{server.port}:*:{ROLE}:{password}\n")
        server.pgpass.chmod(0o600)  # libpq ignores a pgpass file others can read
        return server

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(postgres_bin() / "pg_ctl"), "-D", str(self.base / "data"), *args],
            user=self.user,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.base,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )

    def start_again(self) -> None:
        """Start the server on its data directory and port (after stop_now, or the first time)."""
        opts = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit={'on' if self.durable else 'off'} -c full_page_writes=off "
            "-c max_connections=200"
        )
        log = self.base / "server.log"
        up = self._pg_ctl("-l", str(log), "-o", opts, "-w", "-t", "60", "start")
        if up.returncode != 0:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{up.stderr[-2000:]}\n{text[-2000:]}")

    def stop_now(self) -> None:
        """An outage: immediate shutdown (pg_ctl -m immediate, as a crash), the data kept."""
        down = self._pg_ctl("-m", "immediate", "-w", "stop")
        if down.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed:\n{down.stderr[-2000:]}")

    def pid(self) -> int | None:
        try:
            return int((self.base / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            self.url(), autocommit=True, password=self.password
        ) as conn:  # the test harness's own login
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of this server's postmaster, by the PID in its own pid file."""
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGINT)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)


if __name__ == "__main__":
    s = PostgresServer.start()
    print(f"{s.url()}  (PGPASSFILE={s.pgpass}, pid {s.pid()})")
    try:
        input("Enter stops it: ")
    finally:
        s.stop()
