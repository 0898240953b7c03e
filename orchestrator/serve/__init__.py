"""``orch serve``: a read-only web dashboard of the registry (docs/dashboard.md).

Server-rendered pages (Starlette, Jinja2 templates with autoescaping) over the same views the CLI
prints: :mod:`orchestrator.status`, :mod:`orchestrator.views`, :mod:`orchestrator.usage` and the
sweep views of ``orch analyze``. The registry is opened read-only
(:func:`orchestrator.registry.engine.open_registry_read_only`) and never synced; the run folders
are only read (log tails, heartbeats, figures inside a run's folder). ``app`` builds the
application, ``pages`` reads what each page shows, ``files`` reads the run folders, ``charts``
draws curves as SVG, ``server`` binds the socket and runs uvicorn.
"""
