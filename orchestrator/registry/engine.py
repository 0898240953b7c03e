"""Opening the registry: SQLite file (mode 0600, rollback journal, busy timeout) or ``ORCH_DB_URL``.

SQLite runs with ``journal_mode=DELETE`` (a rollback journal, not WAL: the registry may sit on NFS,
where WAL's shared memory does not work) and a busy timeout so that ``orch status --watch`` and a
``submit --wait`` can share it. Every transaction is ``BEGIN IMMEDIATE``: it takes the write lock
when it starts, so two commands never interleave a read and a write (one waits for the other), and
DDL is transactional too: the schema comes from Alembic (``db/``), upgraded on open in one
transaction, so a process killed while creating or upgrading the registry leaves it as it was.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

from sqlalchemy import URL, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError
from sqlalchemy.pool import QueuePool

from jobs import faults
from orchestrator.errors import UserError
from orchestrator.home import MIGRATIONS_DIR, OrchHome

if TYPE_CHECKING:
    from alembic.config import Config

BUSY_TIMEOUT_SECONDS = 60
DB_URL_VARIABLE = "ORCH_DB_URL"
ACCEPTED_URLS = "sqlite:////absolute/path/registry.sqlite or postgresql+psycopg://user@host/dbname"


def registry_url(home: OrchHome) -> URL:
    """The registry's URL: ``ORCH_DB_URL`` if set, else ``<home>/registry.sqlite``."""
    given = os.environ.get(DB_URL_VARIABLE)
    if not given:
        return make_url(f"sqlite:///{home.registry_file}")
    return parse_registry_url(given, DB_URL_VARIABLE)


def parse_registry_url(given: str, where: str) -> URL:
    """A registry's URL from text (``where``: the variable or option it came from). A plain
    ``postgresql://`` gets the psycopg driver, the one orch installs."""
    try:
        url = make_url(given)
    except (ArgumentError, ValueError):
        raise UserError(
            f"{where}: not a database URL ({len(given)} characters, not shown: it may hold a "
            f"password); accepted: {ACCEPTED_URLS}"
        ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise UserError(
            f"{where}: unsupported database {url.get_backend_name()!r} in {_shown(url)}; "
            f"accepted: {ACCEPTED_URLS}"
        )
    if url.get_backend_name() == "sqlite" and (url.database in (None, "", ":memory:") or url.query):
        raise UserError(
            f"{where}: {_shown(url)} names no plain file (an in-memory registry forgets "
            f"everything; no query options); accepted: {ACCEPTED_URLS}"
        )
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


def open_registry(home: OrchHome) -> Engine:
    """An engine on the registry at the newest schema; creates the SQLite file (0600) if missing."""
    url = registry_url(home)
    file = sqlite_file(url)
    engine = create_if_missing(url, DB_URL_VARIABLE, in_home=file == home.registry_file)
    if file is not None and not _has_schema(engine, url) and not _is_empty_database(file):
        engine.dispose()
        raise _foreign_database(file)
    _upgrade_to_head(engine, url)
    return engine


def create_if_missing(url: URL, where: str, in_home: bool = False) -> Engine:
    """An engine on ``url``; an SQLite file is created first (mode 0600) if it does not exist."""
    file = sqlite_file(url)
    if file is not None:
        _create_private_file(file, in_home, where)
    return _engine(url)


def open_registry_if_exists(home: OrchHome) -> Optional[Engine]:
    """For commands that only read: never creates a file, a folder or a schema that is not there."""
    return open_url_if_registry(registry_url(home))


def open_url_if_registry(url: URL) -> Optional[Engine]:
    """An engine on the registry at ``url`` (at the newest schema), or None where none exists."""
    file = sqlite_file(url)
    if file is not None:
        if not file.exists():
            return None
        if not file.is_file():
            raise UserError(
                f"registry {file} is not a regular file; accepted: an SQLite file written by orch (or "
                "a path where none exists yet)"
            )
        if file.stat().st_size == 0:
            return None  # created by a submit that died before its first transaction committed
    engine = _engine(url)
    if not _has_schema(engine, url):
        engine.dispose()
        if file is not None and not _is_empty_database(file):
            raise _foreign_database(file)
        return None
    _upgrade_to_head(engine, url)  # an older orch's registry: its schema is brought up to date
    return engine


def open_registry_read_only(home: OrchHome) -> Optional[Engine]:
    """For ``orch serve``: an engine that cannot write. SQLite opens the file ``mode=ro`` (the
    driver refuses every write; no lock but a reader's); PostgreSQL runs every transaction
    ``READ ONLY``. Never creates or upgrades anything: a registry at an older schema is refused
    with the command that upgrades it. None where no registry exists yet."""
    url = registry_url(home)
    file = sqlite_file(url)
    if file is not None and (not file.is_file() or file.stat().st_size == 0):
        return None
    engine = _read_only_engine(url, file)
    if not _has_schema(engine, url):
        engine.dispose()
        if file is not None and not _is_empty_database(file):
            raise _foreign_database(file)
        return None
    with reachable(url), engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if versions != [head_revision()]:
        engine.dispose()
        raise UserError(
            f"registry {registry_location(url)} is at schema {versions} and this orch reads "
            f"{head_revision()!r} only, without writing; accepted: run any other orch command "
            "once (e.g. orch status), which upgrades it"
        )
    return engine


def _read_only_engine(url: URL, file: Optional[Path]) -> Engine:
    if file is None:  # a reader takes no lock: one snapshot per transaction keeps a page consistent
        return _created(url, _postgresql_engine_without_lock).execution_options(
            postgresql_readonly=True, isolation_level="REPEATABLE READ"
        )
    uri = f"{file.as_uri()}?mode=ro"
    engine = create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False),
        poolclass=QueuePool,  # a file's pool (the URL alone would say an in-memory database's)
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        dbapi_connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        dbapi_connection.execute("PRAGMA query_only=ON")

    return engine


def _foreign_database(file: Path) -> UserError:
    return UserError(
        f"{file} is an SQLite database but not an orch registry (no alembic_version table); accepted: "
        "a registry written by orch, or a path where none exists yet"
    )


def _is_empty_database(file: Path) -> bool:
    with contextlib.closing(sqlite3.connect(f"{file.as_uri()}?mode=ro", uri=True)) as connection:
        return connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def sqlite_file(url: URL) -> Optional[Path]:
    """The registry's file, for an SQLite URL; None for a database server."""
    return (
        Path(url.database).expanduser().absolute()
        if url.get_backend_name() == "sqlite" and url.database
        else None
    )


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _create_private_file(path: Path, in_home: bool, where: str) -> None:
    """The registry file, mode 0600; the folder around it only if it is the orch home."""
    if not path.parent.is_dir():
        if not in_home:
            raise UserError(
                f"{where}: folder {path.parent} does not exist; accepted: an SQLite file in "
                "an existing folder"
            )
        path.parent.mkdir(parents=True, exist_ok=True)  # the orch home itself
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if not path.is_file():
            raise UserError(
                f"registry {path} is not a regular file; accepted: an SQLite file written by orch"
            ) from None
        return
    os.close(descriptor)
    os.chmod(path, 0o600)  # whatever the umask


def _engine(url: URL) -> Engine:
    engine = _created(url, _sqlite_engine if url.get_backend_name() == "sqlite" else _postgresql_engine)
    event.listen(engine, "before_cursor_execute", _statement_kill_point)
    event.listen(engine, "commit", _commit_kill_point)
    return engine


def _created(url: URL, make: Callable[[URL], Engine]) -> Engine:
    """``make(url)``, with a missing dialect or driver said as bad input."""
    try:
        return make(url)
    except NoSuchModuleError:
        raise UserError(
            f"{DB_URL_VARIABLE}: no SQLAlchemy dialect for {_shown(url)}; accepted: {ACCEPTED_URLS}"
        ) from None
    except ImportError as error:
        raise UserError(
            f"{DB_URL_VARIABLE}: the driver for {_shown(url)} is not installed ({error.name}); "
            f"accepted: install it (pip install psycopg[binary]) or {ACCEPTED_URLS}"
        ) from None


def _sqlite_engine(url: URL) -> Engine:
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver begins nothing itself: see _begin
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=DELETE")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# The key of the advisory lock every PostgreSQL transaction of orch takes first (any 64-bit number
# that no other program on the database uses for its own advisory locks).
REGISTRY_LOCK_KEY = 0x6F726368_72656769  # "orchregi"


def _postgresql_engine(url: URL) -> Engine:
    """PostgreSQL, with SQLite's discipline: every transaction takes one advisory lock as it
    begins (``pg_advisory_xact_lock``, released at commit or rollback), so the transactions of all
    orch processes, whoever runs them, follow one another as they do on SQLite with ``BEGIN
    IMMEDIATE``; a read-then-write (claim the next attempts, count the slots) never interleaves with
    another's write. Waiting for it longer than the busy timeout fails as a locked SQLite file
    does (``lock_timeout``)."""
    engine = _postgresql_engine_without_lock(url)

    @event.listens_for(engine, "begin")
    def _serialized(connection) -> None:
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({REGISTRY_LOCK_KEY})")

    return engine


def _postgresql_engine_without_lock(url: URL) -> Engine:
    return create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"options": f"-c lock_timeout={BUSY_TIMEOUT_SECONDS * 1000}"},
    )


def _statement_kill_point(*_arguments: object) -> None:
    faults.reached("sql")


def _commit_kill_point(*_arguments: object) -> None:
    faults.reached("commit")


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _has_schema(engine: Engine, url: URL) -> bool:
    with reachable(url):
        with engine.connect() as connection:
            return inspect(connection).has_table("alembic_version")


def _upgrade_to_head(engine: Engine, url: URL) -> None:
    """Bring the schema to the newest revision in one transaction (DDL included). A registry at
    the newest revision already, every command's case, is told by one query: Alembic (a third of
    orch's start-up) is loaded only to upgrade."""
    with reachable(url):
        with engine.connect() as connection:
            if _has_version_table(connection) and connection.execute(
                text("SELECT version_num FROM alembic_version")
            ).scalars().all() == [head_revision()]:
                return  # nothing to do: no write, the file stays byte-identical
        with engine.connect() as connection, foreign_keys_checked_at_the_end(connection), connection.begin():
            upgrade_in(connection)
            check_foreign_keys(connection)


def upgrade_in(connection: Connection) -> None:
    """Alembic's upgrade to the newest revision, inside the transaction ``connection`` holds."""
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


@contextlib.contextmanager
def foreign_keys_checked_at_the_end(connection: Connection) -> Iterator[None]:
    """SQLite's way to change a table that others reference (a migration that recreates it:
    create the new table, copy, drop the old one, rename): foreign keys off around the
    transaction (the pragma is a no-op inside one, so it goes to the driver's connection, which
    begins nothing itself), checked with :func:`check_foreign_keys` before the commit."""
    driver = connection.connection.driver_connection if connection.dialect.name == "sqlite" else None
    if driver is None:
        yield
        return
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys=ON")
        # a transaction still open made it a no-op
        if driver.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
            connection.invalidate()  # never back to the pool without foreign keys


def check_foreign_keys(connection: Connection) -> None:
    """Refuse (roll back) an upgrade that leaves a row referencing one that does not exist."""
    if connection.dialect.name != "sqlite":
        return
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        table, row_id, parent, _ = violations[0]
        raise UserError(
            f"registry upgrade refused and rolled back: it would leave {len(violations)} references to "
            "missing rows "
            f"(e.g. {table} row {row_id} -> {parent}); accepted: a registry whose rows reference "
            "existing ones (PRAGMA foreign_key_check)"
        )


def _has_version_table(connection: Connection) -> bool:
    return inspect(connection).has_table("alembic_version")


@functools.lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision in db/versions: the one no other revision names as its predecessor
    (the history is linear; tests check this equals Alembic's own answer)."""
    revisions, predecessors = set(), set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = script.read_text()
        revisions.update(re.findall(r'^revision = "([^"]+)"', source, flags=re.MULTILINE))
        predecessors.update(re.findall(r'^down_revision = "([^"]+)"', source, flags=re.MULTILINE))
    (head,) = revisions - predecessors
    return head


REGISTRY_ADVICE = {
    "locked": "retry once the other orch command has finished (it held the registry for over "
    f"{BUSY_TIMEOUT_SECONDS} s)",
    "lock timeout": "retry once the other orch command has finished (it held the registry for over "
    f"{BUSY_TIMEOUT_SECONDS} s)",
    "full": "free space on the registry's file system, or another --home",
    "readonly": "a registry on a writable file system that you may write, or another --home",
    "unable to open": "a --home folder that exists and that you may write",
    "not a database": "an orch registry: this file is something else or damaged (restore it from a backup)",
    "malformed": "an intact registry: restore it from a backup",
}


def registry_problem(error: DatabaseError, where: str) -> str:
    """One line for a database error: what the driver said, where, and what to do (never a password)."""
    cause = str(getattr(error, "orig", None) or error).splitlines()[0][:300]
    advice = next(
        (text for fragment, text in REGISTRY_ADVICE.items() if fragment in cause),
        f"{ACCEPTED_URLS}, reachable, holding an orch registry",
    )
    return f"registry {where}: {cause}; accepted: {advice}"


def registry_location(url: URL) -> str:
    return str(sqlite_file(url) or _shown(url))


def registry_of(home: OrchHome) -> str:
    """Where ``home``'s registry is, in words for a message (a file, or a URL without its password)."""
    return registry_location(registry_url(home))


class reachable:
    """Turns 'cannot open / not a database' into a UserError naming the registry (never its password)."""

    def __init__(self, url: URL) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _traceback: object) -> None:
        if isinstance(error, DatabaseError):
            raise UserError(registry_problem(error, registry_location(self.url))) from None


def _make_revision(message: str, home: OrchHome) -> None:
    """Developer helper: autogenerate a migration against the registry at ``home``."""
    engine = open_registry(home)
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "revision" or sys.argv[3] != "--home":
        raise SystemExit("usage: python -m orchestrator.registry.engine revision MESSAGE --home DIR")
    _make_revision(sys.argv[2], OrchHome.resolve(sys.argv[4]))
