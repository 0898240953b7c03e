"""A real single-node Slurm cluster on localhost for tests: munged, MariaDB, slurmdbd, slurmctld, slurmd.

Everything lives in one fresh state directory (configs, sockets, spool, logs, database) and listens
on its own ports, so it does not touch a system Slurm or munge. Debian's packages are installed
when missing (root, as on CI). The node mirrors a TCML node: partitions test/day/week/month and
four fake GTX 1080 Ti GPUs (character devices, so slurmd counts them and jobs get
``CUDA_VISIBLE_DEVICES``).

    python tests/cluster/minicluster.py start STATE_DIR [--max-array-size N]   # prints SLURM_CONF=…
    python tests/cluster/minicluster.py stop STATE_DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server")
BINARIES = (
    "munged",
    "mungekey",
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "sbatch",
    "sacct",
    "mariadbd",
    "mariadb-install-db",
)
PORTS = {"slurmctld": 16817, "slurmd": 16818, "slurmdbd": 16819, "mariadb": 16820}
CLUSTER_NAME = "mini"
GPU_TYPE = "1080ti"
GPUS_PER_NODE = 4
NODE_MEMORY_MB = 8000
START_TIMEOUT_SECONDS = 60
# name, MaxTime: the partitions of TCML
PARTITIONS = (("test", "00:15:00"), ("day", "1-00:00:00"), ("week", "7-00:00:00"), ("month", "30-00:00:00"))
DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "mariadb", "munged")  # stop order


@dataclass(frozen=True)
class MiniCluster:
    state_dir: Path

    @property
    def slurm_conf(self) -> Path:
        return self.state_dir / "etc" / "slurm.conf"

    @property
    def environment(self) -> dict[str, str]:
        """What a client (sbatch, sacct, a job) needs to reach this cluster."""
        return {"SLURM_CONF": str(self.slurm_conf)}

    def pid_file(self, daemon: str) -> Path:
        return self.state_dir / "run" / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.state_dir / "log" / f"{daemon}.log"


def install_missing() -> None:
    if all(shutil.which(binary) for binary in BINARIES):
        return
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], check=True, env=environment
    )


def start(state_dir: Path, max_array_size: int = 1001) -> MiniCluster:
    """Start a fresh cluster in ``state_dir`` (which must not exist or be empty); returns when the node is
    idle."""
    install_missing()
    cluster = MiniCluster(state_dir.absolute())
    for sub in ("etc", "run", "log", "spool/ctld", "spool/d", "dev", "mysql"):
        (cluster.state_dir / sub).mkdir(parents=True, exist_ok=True)
    _ensure_hostname_resolves()
    try:
        _start_munge(cluster)
        _start_mariadb(cluster)
        _write_configs(cluster, max_array_size)
        # finds slurmdbd.conf beside $SLURM_CONF
        _start_daemon(cluster, "slurmdbd", ["slurmdbd"], PORTS["slurmdbd"])
        _start_daemon(
            cluster, "slurmctld", ["slurmctld", "-f", str(cluster.slurm_conf), "-i"], PORTS["slurmctld"]
        )
        _start_daemon(cluster, "slurmd", ["slurmd", "-f", str(cluster.slurm_conf)], PORTS["slurmd"])
        _wait_for_idle_node(cluster)
    except BaseException:
        stop(cluster.state_dir)
        raise
    return cluster


def stop(state_dir: Path) -> None:
    """Stop every daemon of the cluster in ``state_dir`` by the PID in its pid file."""
    cluster = MiniCluster(state_dir.absolute())
    for daemon in DAEMONS:
        pid = _read_pid(cluster.pid_file(daemon))
        if pid is None:
            continue
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
        cluster.pid_file(daemon).unlink(missing_ok=True)


def kill_slurmd(cluster: MiniCluster) -> None:
    """SIGKILL the node's slurmd, as a crashed node daemon: its jobs' processes live on (no
    cgroups here); slurmctld declares the node DOWN after SlurmdTimeout and its jobs NODE_FAIL."""
    pid = _read_pid(cluster.pid_file("slurmd"))
    assert pid is not None, "slurmd is not running"
    _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def restart_slurmd(cluster: MiniCluster) -> None:
    """Start the node's slurmd again; returns once slurmctld has the node back in service."""
    _start_daemon(cluster, "slurmd", ["slurmd", "-f", str(cluster.slurm_conf)], PORTS["slurmd"])

    def node_in_service() -> bool:
        states = slurm_run(cluster, "sinfo", "--noheader", "--format=%T").stdout.split()
        return bool(states) and not any("down" in state or state.endswith("*") for state in states)

    _wait_for(node_in_service, "the node back in service", cluster, "slurmd")


def slurm_run(cluster: MiniCluster, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command), capture_output=True, text=True, env={**os.environ, **cluster.environment}
    )


# -- daemons ----------------------------------------------------------------------------------------


def _start_munge(cluster: MiniCluster) -> None:
    key = cluster.state_dir / "etc" / "munge.key"
    subprocess.run(
        ["mungekey", "--create", "--keyfile", str(key), "--force"], check=True, capture_output=True
    )
    key.chmod(0o400)
    command = [
        "munged",
        "--force",
        f"--key-file={key}",
        f"--socket={cluster.state_dir / 'run' / 'munge.socket'}",
        f"--pid-file={cluster.pid_file('munged')}",
        f"--log-file={cluster.log_file('munged')}",
        f"--seed-file={cluster.state_dir / 'run' / 'munge.seed'}",
    ]
    subprocess.run(command, check=True, capture_output=True)
    _wait_for(
        lambda: (cluster.state_dir / "run" / "munge.socket").exists(), "munged socket", cluster, "munged"
    )


def _start_mariadb(cluster: MiniCluster) -> None:
    datadir = cluster.state_dir / "mysql"
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={datadir}",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
    )
    command = [
        "mariadbd",
        "--no-defaults",
        "--user=root",
        f"--datadir={datadir}",
        f"--socket={cluster.state_dir / 'run' / 'mysql.sock'}",
        f"--pid-file={cluster.pid_file('mariadb')}",
        f"--log-error={cluster.log_file('mariadb')}",
        "--bind-address=127.0.0.1",
        f"--port={PORTS['mariadb']}",
        "--skip-name-resolve",
        "--innodb-buffer-pool-size=32M",
    ]
    _spawn(cluster, "mariadb", command)
    _wait_for(lambda: _port_open(PORTS["mariadb"]), "MariaDB port", cluster, "mariadb")
    statements = (
        "CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
        "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';"
        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    )
    socket_path = cluster.state_dir / "run" / "mysql.sock"
    subprocess.run(
        ["mariadb", "--no-defaults", "-uroot", f"--socket={socket_path}", "-e", statements],
        check=True,
        capture_output=True,
    )


def _start_daemon(cluster: MiniCluster, name: str, command: list[str], port: int) -> None:
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **cluster.environment})
    _wait_for(lambda: _port_open(port), f"{name} port {port}", cluster, name)


def _spawn(cluster: MiniCluster, name: str, command: list[str]) -> None:
    with open(cluster.log_file(name) if name != "mariadb" else os.devnull, "ab") as log:
        subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_for_idle_node(cluster: MiniCluster) -> None:
    def node_idle() -> bool:
        states = slurm_run(cluster, "sinfo", "--noheader", "--format=%T").stdout.split()
        return bool(states) and all(state == "idle" for state in states)

    _wait_for(node_idle, "an idle node", cluster, "slurmd")


# -- configuration ----------------------------------------------------------------------------------


def _write_configs(cluster: MiniCluster, max_array_size: int) -> None:
    etc = cluster.state_dir / "etc"
    devices = []
    for index in range(GPUS_PER_NODE):
        device = cluster.state_dir / "dev" / f"nvidia{index}"
        if not device.exists():
            # a character device, like the real ones
            os.mknod(device, 0o666 | 0o020000, os.makedev(195, index))
        devices.append(str(device))
    (etc / "gres.conf").write_text(
        f"AutoDetect=off\nNodeName={_hostname()} Name=gpu Type={GPU_TYPE} "
        f"File={cluster.state_dir / 'dev'}/nvidia[0-{GPUS_PER_NODE - 1}]\n"
    )
    (etc / "slurm.conf").write_text(_slurm_conf(cluster, max_array_size))
    dbd_conf = etc / "slurmdbd.conf"
    dbd_conf.write_text(_slurmdbd_conf(cluster))
    dbd_conf.chmod(0o600)  # slurmdbd refuses a readable config: it holds the database password


def _auth_info(cluster: MiniCluster) -> str:
    return f"socket={cluster.state_dir / 'run' / 'munge.socket'}"


def _slurm_conf(cluster: MiniCluster, max_array_size: int) -> str:
    state, host = cluster.state_dir, _hostname()
    cpus = os.cpu_count() or 1
    lines = [
        f"ClusterName={CLUSTER_NAME}",
        f"SlurmctldHost={host}",
        f"SlurmctldPort={PORTS['slurmctld']}",
        f"SlurmdPort={PORTS['slurmd']}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo={_auth_info(cluster)},cred_expire=10",
        f"StateSaveLocation={state / 'spool' / 'ctld'}",
        f"SlurmdSpoolDir={state / 'spool' / 'd'}",
        f"SlurmctldPidFile={cluster.pid_file('slurmctld')}",
        f"SlurmdPidFile={cluster.pid_file('slurmd')}",
        f"SlurmctldLogFile={cluster.log_file('slurmctld')}",
        f"SlurmdLogFile={cluster.log_file('slurmd')}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/linux",
        "JobAcctGatherFrequency=task=1",
        "JobAcctGatherParams=OverMemoryKill",
        "AccountingStorageType=accounting_storage/slurmdbd",
        f"AccountingStorageHost={host}",
        f"AccountingStoragePort={PORTS['slurmdbd']}",
        f"AccountingStoragePass={cluster.state_dir / 'run' / 'munge.socket'}",  # munge's socket, for slurmdbd
        "MailProg=/bin/true",
        "AccountingStorageTRES=gres/gpu",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=bf_interval=5,sched_interval=5",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SlurmdParameters=config_overrides",
        "EnforcePartLimits=ALL",
        # association and QOS limits (MaxSubmitJobs, ...) refuse jobs, as on a shared cluster
        "AccountingStorageEnforce=associations,limits,qos",
        f"MaxArraySize={max_array_size}",
        "GresTypes=gpu",
        "KillWait=5",
        "MinJobAge=300",
        "InactiveLimit=0",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={NODE_MEMORY_MB} "
        f"Gres=gpu:{GPU_TYPE}:{GPUS_PER_NODE} State=UNKNOWN",
    ]
    for index, (name, max_time) in enumerate(PARTITIONS):
        default = " Default=YES" if index == 0 else ""
        lines.append(f"PartitionName={name} Nodes={host} MaxTime={max_time} State=UP{default}")
    return "\n".join(lines) + "\n"


def _slurmdbd_conf(cluster: MiniCluster) -> str:
    return (
        "\n".join(
            [
                "AuthType=auth/munge",
                f"AuthInfo={_auth_info(cluster)}",
                f"DbdHost={_hostname()}",
                f"DbdPort={PORTS['slurmdbd']}",
                "SlurmUser=root",
                f"PidFile={cluster.pid_file('slurmdbd')}",
                f"LogFile={cluster.log_file('slurmdbd')}",
                "StorageType=accounting_storage/mysql",
                "StorageHost=127.0.0.1",
                f"StoragePort={PORTS['mariadb']}",
                "StorageUser=slurm",
                "StoragePass=slurm",
                "StorageLoc=slurm_acct_db",
            ]
        )
        + "\n"
    )


# -- small helpers ----------------------------------------------------------------------------------


def _hostname() -> str:
    return socket.gethostname().split(".")[0]


def _ensure_hostname_resolves() -> None:
    try:
        socket.gethostbyname(_hostname())
    except OSError:
        with open("/etc/hosts", "a") as hosts:
            hosts.write(f"127.0.0.1 {_hostname()}\n")


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(condition, what: str, cluster: MiniCluster, daemon: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            log = cluster.log_file(daemon)
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise RuntimeError(f"mini-cluster: no {what} after {START_TIMEOUT_SECONDS} s; {log}:\n{tail}")
        time.sleep(0.1)


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--max-array-size", type=int, default=1001)
    arguments = parser.parse_args()
    if arguments.action == "start":
        cluster = start(arguments.state_dir, arguments.max_array_size)
        print(f"SLURM_CONF={cluster.slurm_conf}")
    else:
        stop(arguments.state_dir)


if __name__ == "__main__":
    main()
