"""Running the dashboard: check the home and the registry, bind the socket (so that a port in use
or a host that is not this machine's is one line of bad input, exit 2), then uvicorn serves the
application on that socket until Ctrl-C."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
from dataclasses import dataclass

from orchestrator.errors import UserError, shown
from orchestrator.home import OrchHome
from orchestrator.registry.engine import DB_URL_VARIABLE, open_registry_read_only
from orchestrator.serve.app import LOOPBACK_HOSTS, ServeSettings, build_app

BIND_ADVICE = {
    errno.EADDRINUSE: "a free port (--port), or stop what listens there",
    errno.EADDRNOTAVAIL: "an address of this machine (--host 127.0.0.1, the default)",
    errno.EACCES: "a port from 1024 up (lower ones need root)",
}


@dataclass(frozen=True)
class Listening:
    """The bound socket and the URL it answers at."""

    sock: socket.socket
    url: str
    loopback: bool


def serve(home: OrchHome, host: str, port: int) -> None:
    """Serve ``home``'s registry read-only at ``host``:``port`` until interrupted."""
    check_home(home)
    check_registry(home)
    listening = bind(host, port)
    if not listening.loopback:
        print(
            f"orch serve: warning: {host} is not a loopback address: anyone who can reach this machine "
            "on that port can read the registry (no login); prefer the default and an SSH tunnel",
            file=sys.stderr,
            flush=True,
        )
    print(f"orch serve: {listening.url} (read-only; Ctrl-C stops)", flush=True)
    run(ServeSettings(home, LOOPBACK_HOSTS if listening.loopback else ("*",)), listening.sock)


def check_home(home: OrchHome) -> None:
    """The home is a folder (a registry on a server, ``ORCH_DB_URL``, needs none)."""
    if os.environ.get(DB_URL_VARIABLE):
        return
    if not home.root.is_dir():
        found = "nothing" if not os.path.lexists(home.root) else "not a folder"
        raise UserError(
            f"--home {home.root}: {found} there; accepted: an orch home (a folder where orch submit "
            "ran), or ORCH_DB_URL"
        )


def check_registry(home: OrchHome) -> None:
    """Open the registry once as every request will (read-only): a registry that is not one, or
    one at another schema, is refused now rather than on every page."""
    engine = open_registry_read_only(home)
    if engine is not None:
        engine.dispose()


def bind(host: str, port: int) -> Listening:
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as error:
        raise UserError(f"--host {shown(host)}: not an address ({error}); accepted: e.g. 127.0.0.1") from None
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        advice = BIND_ADVICE.get(error.errno or 0, "another --host or --port")
        raise UserError(
            f"cannot listen on {shown(host)} port {port}: {error.strerror}; accepted: {advice}"
        ) from None
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
    loopback = ipaddress.ip_address(bound_host.partition("%")[0]).is_loopback
    return Listening(sock, f"http://{shown_host}:{bound_port}", loopback)


def run(settings: ServeSettings, sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        build_app(settings),
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
