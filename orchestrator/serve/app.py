"""The dashboard's web application: routes, templates, and what every response carries.

Every page is rendered on the server from a page dataclass (``orchestrator.serve.pages``) by a
Jinja2 template with autoescaping on: a sweep name, a swept value, a reason or a log line is
text, never markup. Every response carries a Content-Security-Policy that allows scripts,
styles and images from this server only (no inline script: the live page's script is a static
file), and the Host header must name this server (a web page elsewhere cannot reach the
dashboard through DNS rebinding).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import jinja2
from sqlalchemy.exc import DatabaseError
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.errors import UserError
from orchestrator.home import OrchHome
from orchestrator.serve.files import SERVED_TYPES
from orchestrator.serve.pages.active import active_page, active_rows
from orchestrator.serve.pages.common import NotFound
from orchestrator.serve.pages.compare import compare_page
from orchestrator.serve.pages.run import run_file, run_page
from orchestrator.serve.pages.sweep import SweepQuery, sweep_page
from orchestrator.serve.pages.sweeps import sweeps_page
from orchestrator.serve.reader import RegistryReader

PACKAGE_DIR = Path(__file__).parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# A figure opened on its own is shown in the browser's own image document, which styles itself
# inline; it is sandboxed instead (no script can run in it either way).
FILE_CONTENT_SECURITY_POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
)


@dataclass(frozen=True)
class ServeSettings:
    """What the application serves: the registry of ``home`` (or ``ORCH_DB_URL``), to requests
    whose Host header is one of ``allowed_hosts`` (``*``: any)."""

    home: OrchHome
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` and a Content-Security-Policy on every HTTP
    response, error pages included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers[name] = value
                image = headers.get("content-type", "").startswith("image/")
                headers["Content-Security-Policy"] = (
                    FILE_CONTENT_SECURITY_POLICY if image else CONTENT_SECURITY_POLICY
                )
            await send(message)

        await self.app(scope, receive, send_with_headers)


def template_environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["hours"] = lambda value: "-" if value is None else f"{value:.3f}"
    environment.filters["share"] = lambda value: "-" if value is None else f"{100 * value:.0f}%"
    return environment


@dataclass(frozen=True)
class Pages:
    """The request handlers (run in Starlette's thread pool: each reads the registry in one short
    session, then the run folders)."""

    reader: RegistryReader
    templates: jinja2.Environment

    def render(self, template: str, page: Any, status_code: int = 200) -> HTMLResponse:
        return HTMLResponse(self.templates.get_template(template).render(page=page), status_code=status_code)

    def sweeps(self, request: Request) -> Response:
        return self.render("sweeps.html", sweeps_page(self.reader))

    def sweep(self, request: Request) -> Response:
        parameters = request.query_params
        query = SweepQuery.of(
            parameters.getlist("where"),
            parameters.get("state", ""),
            parameters.get("sort", ""),
            parameters.get("order", "asc"),
        )
        page = sweep_page(self.reader, request.path_params["name"], query)
        return self.render("sweep.html", page, 400 if page.error else 200)

    def run(self, request: Request) -> Response:
        return self.render("run.html", run_page(self.reader, request.path_params["run_id"]))

    def run_file(self, request: Request) -> Response:
        path = run_file(self.reader, request.path_params["run_id"], request.path_params["relative"])
        return FileResponse(path, media_type=SERVED_TYPES[path.suffix.lower()])

    def compare(self, request: Request) -> Response:
        parameters = request.query_params
        page = compare_page(self.reader, parameters.getlist("sweep"), parameters.getlist("group_by"))
        return self.render("compare.html", page, 400 if page.error else 200)

    def active(self, request: Request) -> Response:
        return self.render("active.html", active_page(self.reader))

    def active_json(self, request: Request) -> Response:
        return JSONResponse({"runs": [row.as_json() for row in active_rows(self.reader)]})

    def favicon(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    def error(self, status_code: int, message: str) -> HTMLResponse:
        return self.render("error.html", ErrorPage(status_code, message), status_code)


@dataclass(frozen=True)
class ErrorPage:
    status_code: int
    message: str


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def exception_handlers(pages: Pages) -> dict[Any, ExceptionHandler]:
    """What the user sees of each kind of failure: a page saying what is wrong, never a traceback."""

    async def not_found(request: Request, error: Exception) -> Response:
        return pages.error(404, str(error))

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return pages.error(error.status_code, error.detail)

    async def registry_unavailable(request: Request, error: Exception) -> Response:
        from orchestrator.registry.engine import registry_problem

        message = (
            registry_problem(error, pages.reader.location) if isinstance(error, DatabaseError) else str(error)
        )
        return pages.error(503, message)

    async def internal_error(request: Request, error: Exception) -> Response:
        return pages.error(
            500, f"internal error ({type(error).__name__}): a bug in orch serve; its log says more"
        )

    return {
        NotFound: not_found,
        HTTPException: http_error,
        UserError: registry_unavailable,
        DatabaseError: registry_unavailable,
        Exception: internal_error,
    }


def build_app(settings: ServeSettings) -> ASGIApp:
    """The dashboard over ``settings.home``'s registry, wrapped in :class:`SecurityHeaders`."""
    reader = RegistryReader(settings.home)
    pages = Pages(reader, template_environment())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        reader.close()

    application = Starlette(
        routes=[
            Route("/", pages.sweeps),
            Route("/sweeps/{name:path}", pages.sweep),
            Route("/runs/{run_id}", pages.run),
            Route("/runs/{run_id}/files/{relative:path}", pages.run_file),
            Route("/compare", pages.compare),
            Route("/active", pages.active),
            Route("/api/active", pages.active_json),
            Route("/favicon.ico", pages.favicon),  # what a browser asks for a figure opened on its own
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))],
        exception_handlers=exception_handlers(pages),
        lifespan=lifespan,
    )
    return SecurityHeaders(application)
