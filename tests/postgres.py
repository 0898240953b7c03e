"""A throwaway PostgreSQL server for the tests: Debian's ``postgresql`` package (installed with
apt when missing, as the Slurm tests install Slurm), a cluster in a temporary folder, on a free
localhost port, trust authentication for one role, gone when the session ends.

As root (CI), the server runs as Debian's ``postgres`` user: PostgreSQL refuses to run as root.
Durability settings are off (``fsync``, ``synchronous_commit``): the cluster lives for one test
session, and nothing the tests check depends on surviving a power cut.

By hand::

    python -m tests.postgres start DIR      # prints the URL of a fresh database
    python -m tests.postgres stop DIR
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

PG_VERSION = "15"
PG_BIN = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
ROLE = "orch"
SERVER_USER = "postgres"
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


@dataclass(frozen=True)
class PostgresServer:
    state_dir: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "registry") -> str:
        """A new empty database; its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def psql(self, statement: str, database: str = "postgres") -> str:
        completed = subprocess.run(
            [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE, "-d", database]
            + ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", statement],
            capture_output=True,
            text=True,
            check=True,
        )
        return completed.stdout


def ensure_installed() -> None:
    if (PG_BIN / "initdb").exists():
        return
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=environment, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", f"postgresql-{PG_VERSION}"],
        check=True,
        env=environment,
        capture_output=True,
    )


def start() -> PostgresServer:
    """initdb and start a cluster in a fresh folder under the system's temp dir (the server's
    user must reach it, which pytest's private tmp folders do not allow)."""
    ensure_installed()
    state_dir = Path(tempfile.mkdtemp(prefix="orch-postgres-"))
    server = PostgresServer(state_dir, _free_port())
    _hand_to_server_user(state_dir)
    _as_server_user(
        [str(PG_BIN / "initdb"), "-D", str(server.data_dir), "-U", ROLE, "--auth=trust", "-E", "UTF8"]
        + ["--no-sync", "--locale=C"]
    )
    options = " ".join(f"-c {key}={value}" for key, value in SETTINGS.items())
    _as_server_user(
        [str(PG_BIN / "pg_ctl"), "-D", str(server.data_dir), "-l", str(state_dir / "server.log"), "-w"]
        + ["-o", f"-p {server.port} -k {state_dir} {options}", "start"]
    )
    (state_dir / "port").write_text(str(server.port))
    return server


def stop(state_dir: Path) -> None:
    if (state_dir / "data" / "postmaster.pid").exists():
        _as_server_user([str(PG_BIN / "pg_ctl"), "-D", str(state_dir / "data"), "-m", "immediate", "stop"])
    shutil.rmtree(state_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _runs_as_root() -> bool:
    return os.geteuid() == 0


def _hand_to_server_user(folder: Path) -> None:
    if _runs_as_root():
        account = pwd.getpwnam(SERVER_USER)
        os.chown(folder, account.pw_uid, account.pw_gid)


def _as_server_user(command: list[str]) -> None:
    prefix = ["runuser", "-u", SERVER_USER, "--"] if _runs_as_root() else []
    completed = subprocess.run(prefix + command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}): {completed.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("state_dir", nargs="?", type=Path)
    arguments = parser.parse_args()
    if arguments.action == "start":
        server = start()
        print(f"state folder: {server.state_dir}")
        print(f"ORCH_DB_URL={server.create_database()}")
    else:
        stop(arguments.state_dir)


if __name__ == "__main__":
    main()
