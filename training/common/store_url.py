"""Where a store (the ledger, the registry) lives: `ledger.url` and `registry.url`, parsed once.

    .venv/bin/python -m pytest -q tests/test_store.py -k url
    parse_store_url("sqlite:///runs/ladder.db", "ledger.url")          # an embedded SQLite file
    parse_store_url("postgresql://ladder@db.internal/ladder", "ledger.url")   # a team's server
    url_problems("ledger.url", value)      # why a configured value is refused (training/config/compose.py)

A store is either a PostgreSQL URL (postgresql:// or postgres://) or a SQLite file: sqlite:///path
or a plain path ending in .db, .sqlite or .sqlite3. Anything else is refused, not taken for a
file name: a libpq "host=... dbname=..." string would otherwise become a new, empty local ledger
(with its own default allocation) named after the string, in whatever directory the command ran.

A URL never carries a password, in any spelling libpq reads (user:PASSWORD@host, ?password= in
any case or percent-encoding, password= in a key=value string). A URL is copied into run configs,
logs, W&B and the ledger's own rows, so a password in it would leak everywhere; it is refused,
and the message shows nothing of the value. The password comes from libpq's own places instead:
~/.pgpass (PGPASSFILE names another file) or the PGPASSWORD environment variable.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from training.common.errors import ConfigError

POSTGRES_SCHEMES = ("postgresql", "postgres")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# password= (or sslpassword=, the key file's) at the start, after a space (a key=value string) or
# as a query parameter; matched on the percent-decoded text, so ?pass%77ord= is found too
_PASSWORD_KEY = re.compile(r"(?:^|[\s?&;])(?:ssl)?password\s*=", re.I)
FORMS = (
    "a SQLite path (sqlite:///path/to/ladder.db, or a path ending in .db, .sqlite or .sqlite3) or a "
    "PostgreSQL URL (postgresql://user@host:5432/dbname)"
)


# Control (ESC, BEL, CR), format (bidi overrides, zero-width), surrogate (undecodable bytes) and
# line/paragraph separator characters: they act on the terminal or hide text instead of showing.
INVISIBLE = ("Cc", "Cf", "Cs", "Zl", "Zp")


def invisible_chars(text: str) -> list[str]:
    """The characters of `text` that training/store.safe_text shows escaped: a store URL or a name
    entering the ledger (launch/ledger.check_name) with any is refused."""
    return [c for c in text if unicodedata.category(c) in INVISIBLE]


@dataclass(frozen=True)
class StoreUrl:
    backend: str  # "sqlite" | "postgresql"
    url: str  # as given (never holds a password)
    path: Path | None = None  # the SQLite file

    @property
    def where(self) -> str:
        """What messages name: the file, or the server URL."""
        return str(self.path) if self.path is not None else self.url


def has_password(value: str) -> bool:
    """Whether a store URL or connection string carries a password in any form libpq reads."""
    text = str(value).strip()
    if "://" in text:  # the userinfo of scheme://user:password@host/...
        netloc = re.split(r"[/?#]", text.partition("://")[2], maxsplit=1)[0]
        if ":" in netloc.rpartition("@")[0]:
            return True
    return bool(_PASSWORD_KEY.search(unquote_plus(text)))


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
    # the key compared percent-decoded: ?pass%77ord=S is libpq's password too
    query = (
        "&".join(
            (
                "password=***"
                if _PASSWORD_KEY.match("&" + unquote_plus(q.split("=", 1)[0]) + "=")
                else q
            )
            for q in parts.query.split("&")
        )
        if parts.query
        else ""
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_problems(key: str, value) -> list[str]:
    """Why `value` cannot be the store URL `key` (ledger.url, registry.url); [] when it can. No
    message shows a value that may hold a secret: one with a password, or one that is neither
    form (a libpq key=value string may). None (registry.url unset) is fine: registry.db beside the runs."""
    if value is None:
        return []
    text = str(value)
    if has_password(text):
        return [
            f"{key} carries a password; use a pgpass file or PGPASSFILE (or the PGPASSWORD variable) "
            "instead: the URL is copied into run configs, logs, W&B and the ledger (its value is not shown)"
        ]
    if invisible_chars(text):  # surrogates (undecodable argv bytes) included
        return [
            f"{key} holds control characters or bytes that are not UTF-8 (its value is not shown); use {FORMS}"
        ]
    scheme = text.partition("://")[0].lower() if "://" in text else None
    if scheme in POSTGRES_SCHEMES:
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as e:
            return [f"{key}={text!r}: not a valid URL ({e})"]
        if not parts.hostname and "host=" not in parts.query:
            return [f"{key}={text!r}: name the server, e.g. postgresql://user@db-host:5432/ladder"]
        if not parts.path.strip("/"):
            return [
                f"{key}={text!r}: name the database, e.g. postgresql://user@{parts.hostname}/ladder"
            ]
        return []
    if scheme == "sqlite":
        path = text.partition("://")[2]
        if not path.startswith("/"):
            return [
                f"{key}: write a SQLite URL as sqlite:///relative/path.db or sqlite:////absolute/path.db"
            ]
        path = path[1:]
    elif scheme is not None:
        return [
            f"{key} is a URL of a kind Ladder cannot store in (its value is not shown); use {FORMS}"
        ]
    else:
        path = text
    # "=" is what a libpq key=value string holds and no ledger path needs; the suffix tells a file from
    # a word that was meant as something else
    if "=" in path or not path.lower().endswith(SQLITE_SUFFIXES):
        return [
            f"{key} is neither a PostgreSQL URL nor the path of a SQLite file (its value is not shown); use "
            f'{FORMS}. A libpq "host=... dbname=..." string is not accepted: write it as a URL, with the '
            "password in a pgpass file"
        ]
    return []


def config_url_problems(cfg, reported: list[str] | tuple = ()) -> list[str]:
    """url_problems of a composed config's ledger.url and registry.url (training/config/compose.py checks
    every verb's config with it, before anything is written), less a key that a message in
    `reported` already names (training/config/secret_guard.py's, for a URL with a password)."""
    problems = []
    for section in ("ledger", "registry"):
        key = f"{section}.url"
        if not any(key in p for p in reported):
            problems += url_problems(key, (cfg.get(section) or {}).get("url"))
    return problems


def parse_store_url(url: str, key: str) -> StoreUrl:
    """sqlite:///relative/path, sqlite:////absolute/path (as in SQLAlchemy), a path ending in .db,
    .sqlite or .sqlite3, or postgresql://[user@]host[:port]/dbname[?param=value] (url_problems)."""
    url = str(url)
    problems = url_problems(key, url)
    if problems:
        raise ConfigError(problems[0])
    if "://" not in url:
        return StoreUrl("sqlite", url, Path(url))
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "sqlite":
        return StoreUrl("sqlite", url, Path(rest[1:]))
    return StoreUrl("postgresql", url)
