"""Opening the registry: SQLite file (mode 0600, rollback journal, busy timeout) or ``ORCH_DB_URL``.

SQLite runs with ``journal_mode=DELETE`` (a rollback journal, not WAL: the registry may sit on NFS,
where WAL's shared memory does not work) and a busy timeout so that ``orch status --watch`` and a
``submit --wait`` can share it. The schema comes from Alembic (``db/``) and is upgraded on open.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, create_engine, event, make_url

from orchestrator.home import MIGRATIONS_DIR, OrchHome

BUSY_TIMEOUT_SECONDS = 60
DB_URL_VARIABLE = "ORCH_DB_URL"


def registry_url(home: OrchHome) -> str:
    return os.environ.get(DB_URL_VARIABLE) or f"sqlite:///{home.registry_file}"


def registry_exists(home: OrchHome) -> bool:
    return bool(os.environ.get(DB_URL_VARIABLE)) or home.registry_file.exists()


def open_registry(home: OrchHome) -> Engine:
    """An engine on the registry at the newest schema; creates the SQLite file (0600) if missing."""
    url = make_url(registry_url(home))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        _create_private_file(Path(url.database))
    engine = _engine(url)
    _upgrade_to_head(engine)
    return engine


def open_registry_if_exists(home: OrchHome) -> Optional[Engine]:
    """For read-only commands (``plan``): never creates a registry that is not there."""
    return open_registry(home) if registry_exists(home) else None


def _create_private_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)
    os.chmod(path, 0o600)  # whatever the umask


def _engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=DELETE")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade_to_head(engine: Engine) -> None:
    config = _alembic_config()
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as connection:
        if MigrationContext.configure(connection).get_current_revision() == head:
            return  # nothing to do: no write, the file stays byte-identical
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _make_revision(message: str, home: OrchHome) -> None:
    """Developer helper: autogenerate a migration against the registry at ``home``."""
    engine = open_registry(home)
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "revision" or sys.argv[3] != "--home":
        raise SystemExit("usage: python -m orchestrator.registry.engine revision MESSAGE --home DIR")
    _make_revision(sys.argv[2], OrchHome.resolve(sys.argv[4]))
