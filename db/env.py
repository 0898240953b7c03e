"""Alembic environment of the run registry. The orchestrator runs migrations itself on open
(orchestrator/registry/engine.py) and hands over its connection in ``config.attributes``."""

from alembic import context

from orchestrator.registry.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
