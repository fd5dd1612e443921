"""A one-node SLURM cluster on 127.0.0.1 for the tests (Debian's slurm-wlm and munge).

Accounting is off, so `sacct` cannot report finished jobs; the cluster keeps
finished jobs visible to `squeue` for ``MinJobAge`` seconds instead, and the
workflow's SLURM profile is run with the executor's squeue status command.

The configuration goes to the default path, /etc/slurm/slurm.conf (an existing
file is put back on stop): snakemake's SLURM job-step executor strips SLURM_*
variables, SLURM_CONF included, before its nested srun, so a cluster described
by SLURM_CONF alone is invisible inside the jobs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing_binaries() -> list[str]:
    return [name for name in (*DAEMONS, "sbatch", "squeue", "scontrol") if shutil.which(name) is None]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalSlurm:
    def __init__(self, folder: Path, cpus: int = 8, memory_mb: int = 32000):
        # config_overrides: the node offers what the rules request (8 threads, 16 GB for training),
        # whatever this machine has; jobs then share its real cores.
        self.folder = folder
        self.conf = Path("/etc/slurm/slurm.conf")
        self.backup = folder / "slurm.conf.before"
        self.host = socket.gethostname().split(".")[0]
        self.cpus, self.memory_mb = cpus, memory_mb
        self.processes: list[subprocess.Popen] = []
        self.started_munge = False

    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        if self.conf.exists():
            shutil.copy2(self.conf, self.backup)
        self.conf.write_text(f"""\
ClusterName=unettest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={self.folder / "state"}
SlurmdSpoolDir={self.folder / "spool"}
SlurmctldPidFile={self.folder / "slurmctld.pid"}
SlurmdPidFile={self.folder / "slurmd.pid"}
SlurmctldLogFile={self.folder / "slurmctld.log"}
SlurmdLogFile={self.folder / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
SlurmdParameters=config_overrides
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        self._write_config()
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        if subprocess.run(["munge", "-n"], check=False, capture_output=True).returncode != 0:  # no munged answering yet
            subprocess.run(["munged", "--force"], check=True)
            self.started_munge = True
        for daemon in ("slurmctld", "slurmd"):
            self.processes.append(
                subprocess.Popen(
                    [daemon, "-D", "-f", str(self.conf)],
                    env=self.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], check=False, env=self.env, capture_output=True, text=True
            ).stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return self
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(0.5)
        logs = "\n".join(
            (self.folder / f"{d}.log").read_text()[-2000:]
            for d in ("slurmctld", "slurmd")
            if (self.folder / f"{d}.log").exists()
        )
        self.stop()
        raise RuntimeError(f"the local SLURM cluster did not come up:\n{logs}")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes = []
        if self.backup.exists():
            shutil.move(self.backup, self.conf)
        else:
            self.conf.unlink(missing_ok=True)
        pid_file = Path("/run/munge/munged.pid")
        if self.started_munge and pid_file.exists():
            subprocess.run(["kill", pid_file.read_text().strip()], check=False)
            self.started_munge = False
