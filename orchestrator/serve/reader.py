"""The registry as the dashboard reads it: opened read-only when first needed, one short session
per request (a long reader of SQLite's rollback journal would hold off every writer)."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Iterator, Optional

from orchestrator.home import OrchHome
from orchestrator.registry.engine import open_registry_read_only, registry_of

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session


class RegistryReader:
    """Sessions on ``home``'s registry that cannot write. Until a registry exists (no orch submit
    yet) a session is None; once one does it is opened and kept. Requests come from a pool of
    threads, each with a connection of the engine's pool while its session lasts; sessions are
    short, files are read after."""

    def __init__(self, home: OrchHome) -> None:
        self.home = home
        self._engine: Optional[Engine] = None
        self._opening = threading.Lock()

    @property
    def location(self) -> str:
        """Where the registry is, in words (a file, or a URL without its password)."""
        return registry_of(self.home)

    def engine(self) -> Optional[Engine]:
        with self._opening:
            if self._engine is None:
                self._engine = open_registry_read_only(self.home)
            return self._engine

    @contextlib.contextmanager
    def session(self) -> Iterator[Optional[Session]]:
        """A session for one request's reads (None without a registry), closed when they are done."""
        from sqlalchemy.orm import Session

        engine = self.engine()
        if engine is None:
            yield None
            return
        with Session(engine) as session:
            yield session

    def close(self) -> None:
        with self._opening:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
