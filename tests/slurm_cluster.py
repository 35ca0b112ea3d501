"""Start and stop a real one-node SLURM cluster (munged, slurmctld, slurmd) for the tests.

Runs as root only. Slurm's config lives at its default path /etc/slurm/slurm.conf
because jobs started by snakemake-executor-plugin-slurm drop SLURM_CONF before their
nested `srun`; a file there that this module did not write is never touched (the
caller is told why and skips). GPUs are declared as a generic resource backed by
plain files, so `--gpus=N` jobs are scheduled and counted without a real GPU.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SLURM_DIR = Path("/etc/slurm")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")
MARKER = "# written by tests/slurm_cluster.py; removed when its cluster stops"
PARTITION = "debug"
# profiles/slurm sends the model rules to a partition named gpu (same node here).
GPU_PARTITION = "gpu"
BINARIES = ("munged", "mungekey", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
# slurmctld and slurmd listen on these; a daemon already there would answer our clients.
PORTS = (6817, 6818)


@dataclass
class SlurmCluster:
    """A running one-node cluster; `stop()` ends exactly the processes it started."""

    state_dir: Path
    node: str
    cpus: int
    memory_mb: int
    gpus: int
    start_seconds: float
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        """Cancel leftover jobs, stop slurmd, slurmctld and our munged, remove our config."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            for partition in (PARTITION, GPU_PARTITION):
                subprocess.run(["scancel", f"--partition={partition}"], capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written.clear()

    def log(self, daemon: str) -> str:
        """The log of `daemon` (slurmctld or slurmd), for failure messages."""
        path = self.state_dir / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else f"(no {path})"


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    if os.geteuid() != 0:
        return "starting SLURM daemons needs root (run the tests as root, as CI does)"
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        return f"SLURM/munge binaries missing ({', '.join(missing)}); run .ci/install_slurm.sh as root"
    for name in ("slurm.conf", "gres.conf"):
        path = SLURM_DIR / name
        if path.exists() and MARKER not in path.read_text(errors="replace"):
            return f"{path} exists and was not written by this harness; refusing to overwrite it"
    for port in PORTS:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return f"port {port} is in use (another SLURM daemon?); stop it to run this test"
    return None


def _munge_works() -> bool:
    """True when a munged answers on the default socket (ours or the system's)."""
    result = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, timeout=10)
    return result.returncode == 0


def _start_munge(cluster: SlurmCluster) -> None:
    """Reuse a running munged; otherwise create the key if needed and start one as user munge."""
    if _munge_works():
        return
    if not MUNGE_KEY.exists():
        subprocess.run(["mungekey", "--create"], check=True, user="munge", group="munge", timeout=30)
    MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
    cluster.processes["munged"] = subprocess.Popen(
        ["munged", "--foreground", f"--log-file={cluster.state_dir / 'munged.log'}"],
        user="munge",
        group="munge",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    _wait(_munge_works, 15, "munged did not start", cluster)


def _slurm_conf(cluster: SlurmCluster) -> str:
    """slurm.conf for one node that is both controller and compute node."""
    state = cluster.state_dir
    return f"""{MARKER}
ClusterName=dpaattest
SlurmctldHost={cluster.node}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue and scontrol this long: the tests read them after a
# run, and the executor's squeue status check needs at least 3x its first poll interval.
MinJobAge=3600
ReturnToService=2
# Schedule on the CPUs/memory declared below, not the detected hardware, so rules
# asking for more threads than this small machine has can still be placed.
SlurmdParameters=config_overrides
StateSaveLocation={state}/slurmctld
SlurmdSpoolDir={state}/slurmd
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
GresTypes=gpu
NodeName={cluster.node} NodeAddr=127.0.0.1 CPUs={cluster.cpus} RealMemory={cluster.memory_mb} Gres=gpu:{cluster.gpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={cluster.node} Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes={cluster.node} Default=NO MaxTime=INFINITE State=UP
"""


def _gres_conf(cluster: SlurmCluster) -> str:
    """gres.conf declaring `gpus` fake GPU devices (plain files) on the node.

    no_gpu_env: SLURM must set no CUDA_VISIBLE_DEVICES for them, since a job told of a GPU
    that torch cannot use stops at once (dpaat.runtime.select_device). Slurm 22.05 sets none
    for these plain-file devices even without the flag (checked); the flag keeps it so.
    """
    files = ",".join(str(cluster.state_dir / f"gpu{i}") for i in range(cluster.gpus))
    return f"{MARKER}\nAutoDetect=off\nNodeName={cluster.node} Name=gpu File={files} Flags=no_gpu_env\n"


def _write_config(cluster: SlurmCluster) -> None:
    """Write slurm.conf and gres.conf (recorded for removal) and the state folders."""
    for sub in ("slurmctld", "slurmd"):
        (cluster.state_dir / sub).mkdir(parents=True, exist_ok=True)
    for i in range(cluster.gpus):
        (cluster.state_dir / f"gpu{i}").touch()
    SLURM_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in (("slurm.conf", _slurm_conf(cluster)), ("gres.conf", _gres_conf(cluster))):
        path = SLURM_DIR / name
        path.write_text(text)
        cluster.written.append(path)


def _node_state() -> str:
    """The node's state as sinfo reports it ('' while the controller is not answering).

    sinfo prints the node once per partition it is in (debug and gpu), hence the set.
    """
    result = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=10)
    return ",".join(sorted(set(result.stdout.split()))) if result.returncode == 0 else ""


def _wait(ready: Callable[[], bool], timeout: float, what: str, cluster: SlurmCluster) -> None:
    """Poll `ready()` until true; on timeout stop the cluster and raise with the daemon logs."""
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [name for name, proc in cluster.processes.items() if proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {d}.log ---\n{cluster.log(d)[-3000:]}" for d in ("slurmctld", "slurmd"))
            cluster.stop()
            raise RuntimeError(f"{what} (exited: {dead or 'none'}; state dir {cluster.state_dir})\n{logs}")
        time.sleep(0.5)


def start_cluster(
    state_dir: Path, cpus: int = 16, memory_mb: int | None = None, gpus: int = 2, timeout: float = 60.0
) -> SlurmCluster:
    """Start munged (unless one runs), slurmctld and slurmd; return once the node is idle."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(f"cannot start a SLURM cluster: {reason}")
    if memory_mb is None:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    began = time.monotonic()
    cluster = SlurmCluster(
        state_dir=Path(state_dir),
        node=socket.gethostname().split(".")[0],
        cpus=cpus,
        memory_mb=memory_mb,
        gpus=gpus,
        start_seconds=0.0,
    )
    cluster.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        _start_munge(cluster)
        _write_config(cluster)
        conf = str(SLURM_DIR / "slurm.conf")
        for daemon in ("slurmctld", "slurmd"):
            cluster.processes[daemon] = subprocess.Popen(
                [daemon, "-D", "-f", conf],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                cwd=cluster.state_dir,
            )
        _wait(lambda: _node_state() == "idle", timeout, "the SLURM node did not become idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    cluster.start_seconds = time.monotonic() - began
    return cluster
