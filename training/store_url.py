"""Where a store (the ledger, the registry) lives: `ledger.url` and `registry.url`, parsed once.

    .venv/bin/python -m pytest -q tests/test_store.py -k url
    parse_store_url("sqlite:///runs/ladder.db", "ledger.url")          # an embedded SQLite file
    parse_store_url("postgresql://ladder@db.internal/ladder", "ledger.url")   # a team's server

A PostgreSQL URL never carries a password. A URL is copied into run configs, logs, W&B and the
ledger's own rows, so a password in it would leak everywhere; it is refused, and the message
shows the URL with the password masked. The password comes from libpq's own places instead:
the PGPASSWORD environment variable, or ~/.pgpass (PGPASSFILE names another file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from training.errors import ConfigError

POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class StoreUrl:
    backend: str  # "sqlite" | "postgresql"
    url: str  # as given (never holds a password)
    path: Path | None = None  # the SQLite file

    @property
    def where(self) -> str:
        """What messages name: the file, or the server URL."""
        return str(self.path) if self.path is not None else self.url


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages about a refused URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else netloc
    query = "&".join(("password=***" if q.split("=", 1)[0].lower() == "password" else q)
                     for q in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def parse_store_url(url: str, key: str) -> StoreUrl:
    """sqlite:///relative/path, sqlite:////absolute/path (as in SQLAlchemy), a plain path, or
    postgresql://[user@]host[:port]/dbname[?param=value]."""
    url = str(url)
    if "://" not in url:
        return StoreUrl("sqlite", url, Path(url))
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        rest = url.partition("://")[2]
        if not rest.startswith("/"):
            raise ConfigError(f"{key}={url!r}: write a SQLite URL as sqlite:///relative/path.db or "
                              "sqlite:////absolute/path.db")
        return StoreUrl("sqlite", url, Path(rest[1:]))
    if scheme not in POSTGRES_SCHEMES:
        raise ConfigError(f"{key}={mask_url(url)!r}: use a SQLite path (sqlite:///path/to/file.db) or a "
                          "PostgreSQL URL (postgresql://user@host:5432/dbname)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ConfigError(f"{key}={mask_url(url)!r}: not a valid URL ({e})") from None
    in_query = any(k.lower() == "password" for k in parse_qs(parts.query))
    if parts.password is not None or in_query:
        raise ConfigError(
            f"{key}={mask_url(url)!r} holds a password. The URL is written into run configs, logs, W&B and "
            "the ledger, so Ladder does not accept one there: remove it from the URL and give it the way "
            "libpq reads it, in ~/.pgpass (host:port:dbname:user:password, mode 0600; PGPASSFILE names "
            "another file) or the PGPASSWORD environment variable")
    if not parts.hostname and "host=" not in parts.query:
        raise ConfigError(f"{key}={url!r}: name the server, e.g. postgresql://user@db-host:5432/ladder")
    if not parts.path.strip("/"):
        raise ConfigError(f"{key}={url!r}: name the database, e.g. postgresql://user@{parts.hostname}/ladder")
    return StoreUrl("postgresql", url)
