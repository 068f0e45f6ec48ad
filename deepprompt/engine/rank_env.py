"""Who am I in the job? Rank discovery from whatever started this process.

Every launcher describes the job in its own environment variables. Each *source* below reads one
launcher's variables; ``discover`` asks the registered sources in priority order and the first that
recognises the environment answers. The result is exported as the variables torch.distributed
reads (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_SIZE, MASTER_ADDR, MASTER_PORT).

| source    | started by                                   | reads                                      |
|-----------|----------------------------------------------|--------------------------------------------|
| launcher  | deepspeed (pdsh, --no_ssh, mpich), torchrun  | RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*     |
| openmpi   | mpirun (Open MPI), deepspeed --launcher openmpi | OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE} |
| mpich     | mpiexec (MPICH/Hydra, Intel MPI)             | PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS |
| slurm     | srun, deepspeed --launcher slurm             | SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, SLURM_STEP_NODELIST |
| single    | plain ``python``                             | nothing: one rank on 127.0.0.1             |

The master address and port, when the launcher does not give them: MPI sources broadcast rank 0's
address and a free port with mpi4py (all ranks on one node: 127.0.0.1 without mpi4py); SLURM takes
the first host of the step's node list and a port derived from the job id.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
from dataclasses import dataclass
from typing import ClassVar, Mapping

from deepprompt.errors import ConfigError
from deepprompt.registry import Registry

SOURCES: Registry = Registry("rank environment source")
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class RankEnv:
    source: str
    rank: int
    world_size: int
    local_rank: int
    local_size: int
    master_addr: str
    master_port: int

    def variables(self) -> dict[str, str]:
        return {"RANK": str(self.rank), "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": str(self.local_rank),
                "LOCAL_SIZE": str(self.local_size), "MASTER_ADDR": self.master_addr,
                "MASTER_PORT": str(self.master_port)}


class EnvSource:
    """One launcher's view of the job. ``priority``: lower is asked first (a job started by the
    DeepSpeed launcher inside a SLURM allocation has both kinds of variables; RANK wins)."""

    priority: ClassVar[int]
    name: ClassVar[str]

    def matches(self, env: Mapping[str, str]) -> bool:
        raise NotImplementedError

    def read(self, env: Mapping[str, str]) -> RankEnv:
        raise NotImplementedError


def register(name: str, priority: int):
    def deco(cls):
        cls.name, cls.priority = name, priority
        return SOURCES.register(name)(cls)
    return deco


def _int(env: Mapping[str, str], key: str, source: str) -> int:
    try:
        return int(env[key])
    except (KeyError, ValueError):
        raise ConfigError(f"{source} launch: environment variable {key}={env.get(key)!r} is not an integer") from None


def _check(r: RankEnv) -> RankEnv:
    if not (0 <= r.rank < r.world_size and 0 <= r.local_rank < max(r.local_size, 1)):
        raise ConfigError(f"{r.source} launch: inconsistent rank variables: rank {r.rank}, world size "
                          f"{r.world_size}, local rank {r.local_rank} of {r.local_size}")
    return r


# ------------------------------------------------------------------------------ sources

@register("launcher", 0)
class LauncherEnv(EnvSource):
    """deepspeed (every runner that starts ``deepspeed.launcher.launch`` per node), torchrun, and
    DeepSpeed's MPICH helper, which maps PMI_RANK to RANK."""

    def matches(self, env):
        return "RANK" in env and "WORLD_SIZE" in env

    def read(self, env):
        world = _int(env, "WORLD_SIZE", self.name)
        local = env.get("LOCAL_SIZE") or env.get("LOCAL_WORLD_SIZE")
        return RankEnv(self.name, _int(env, "RANK", self.name), world, int(env.get("LOCAL_RANK", 0)),
                       int(local) if local else world, env.get("MASTER_ADDR") or "127.0.0.1",
                       int(env.get("MASTER_PORT") or DEFAULT_PORT))


class _MPIEnv(EnvSource):
    keys: ClassVar[tuple[str, str, str, str]]  # rank, size, local rank, local size

    def matches(self, env):
        return self.keys[0] in env and self.keys[1] in env

    def read(self, env):
        k_rank, k_size, k_lrank, k_lsize = self.keys
        rank, world = _int(env, k_rank, self.name), _int(env, k_size, self.name)
        local_rank = int(env.get(k_lrank, 0)) if k_lrank in env else None
        local_size = int(env.get(k_lsize, 0)) if k_lsize in env else None
        addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
        if addr is None or port is None or local_rank is None:
            addr, port, local_rank, local_size = _mpi_fill(self.name, rank, world, local_size, addr, port,
                                                           local_rank, env)
        return RankEnv(self.name, rank, world, local_rank, local_size, addr, int(port))


@register("openmpi", 1)
class OpenMPIEnv(_MPIEnv):
    keys = ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
            "OMPI_COMM_WORLD_LOCAL_SIZE")


@register("mpich", 2)
class MPICHEnv(_MPIEnv):
    keys = ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")


@register("slurm", 3)
class SlurmEnv(EnvSource):
    """One task of an ``srun`` step. A batch script itself also has SLURM_PROCID=0 but no
    SLURM_STEP_NUM_TASKS: ``python train.py`` there is a plain one-rank run."""

    def matches(self, env):
        return "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env

    def read(self, env):
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not env.get("MASTER_ADDR") and not nodes:
            raise ConfigError("slurm launch: SLURM_STEP_NODELIST is not set and neither is MASTER_ADDR")
        addr = env.get("MASTER_ADDR") or first_host(nodes)
        port = env.get("MASTER_PORT") or _port_from_id(f"slurm-{env.get('SLURM_JOB_ID')}-{env.get('SLURM_STEP_ID')}")
        per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or ""
        node_id = int(env.get("SLURM_NODEID", 0))
        return RankEnv(self.name, _int(env, "SLURM_PROCID", self.name), _int(env, "SLURM_STEP_NUM_TASKS", self.name),
                       int(env.get("SLURM_LOCALID", 0)), tasks_on_node(per_node, node_id) or 1, addr, int(port))


@register("single", 99)
class SingleProcess(EnvSource):
    """Plain ``python launcher/train.py``: a one-rank group on this machine."""

    def matches(self, env):
        return True

    def read(self, env):
        return RankEnv(self.name, 0, 1, 0, 1, env.get("MASTER_ADDR") or "127.0.0.1",
                       int(env.get("MASTER_PORT") or free_port()))


# ------------------------------------------------------------------------------ discovery

def discover(env: Mapping[str, str] | None = None) -> RankEnv:
    """The first registered source (by priority) that recognises ``env`` describes this rank."""
    env = os.environ if env is None else env
    for _, cls in sorted(SOURCES.items(), key=lambda item: item[1].priority):
        source = cls()
        if source.matches(env):
            return _check(source.read(env))
    raise AssertionError("the 'single' source matches every environment")  # pragma: no cover


def export(r: RankEnv, env: dict | None = None) -> None:
    (os.environ if env is None else env).update(r.variables())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _port_from_id(job: str) -> int:
    """A port every rank of one job derives alike (no communication needed), in 20000-39999."""
    return 20000 + int(hashlib.sha256(job.encode()).hexdigest(), 16) % 20000


def _mpi_fill(source: str, rank: int, world: int, local_size, addr, port, local_rank, env):
    """Master address/port and local rank for an MPI launch that did not export them."""
    try:
        from mpi4py import MPI
    except ImportError:
        MPI = None
    if MPI is None:
        if local_size == world and local_rank is not None:  # every rank on this node
            return addr or "127.0.0.1", port or _port_from_id(f"{source}-{_mpi_job_id(env)}"), local_rank, local_size
        raise ConfigError(f"{source} launch: ranks span several nodes but MASTER_ADDR/MASTER_PORT are not set and "
                          f"mpi4py is not installed: pip install mpi4py, or export both (mpirun -x MASTER_ADDR "
                          f"-x MASTER_PORT)")
    comm = MPI.COMM_WORLD
    if comm.Get_size() != world:
        raise ConfigError(f"{source} launch: MPI says {comm.Get_size()} ranks but the environment says {world}")
    # rank 0 chooses; a single-node job stays on loopback
    hosts = comm.allgather(socket.gethostname())
    chosen = None
    if rank == 0:
        one_node = len(set(hosts)) == 1
        chosen = (addr or ("127.0.0.1" if one_node else host_address()), port or free_port())
    addr, port = comm.bcast(chosen, root=0)
    me = hosts[rank]
    if local_rank is None:
        local_rank = hosts[:rank].count(me)
    if local_size is None:
        local_size = hosts.count(me)
    return addr, port, local_rank, local_size


def _mpi_job_id(env: Mapping[str, str]) -> str:
    for key in ("OMPI_MCA_ess_base_jobid", "OMPI_MCA_orte_ess_jobid", "PMI_JOBID", "PMIX_NAMESPACE"):
        if key in env:
            return env[key]
    return str(os.getppid())  # on one node every rank is a child of the same mpirun/hydra proxy


def host_address() -> str:
    """This host's address as other nodes reach it: the interface named by GLOO_SOCKET_IFNAME or
    NCCL_SOCKET_IFNAME when set, else the first address ``hostname -I`` lists."""
    for key in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        ifname = os.environ.get(key, "").split(",")[0]
        if ifname and not ifname.startswith(("^", "=")):
            addr = interface_address(ifname)
            if addr:
                return addr
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return socket.gethostbyname(socket.gethostname())


def interface_address(ifname: str) -> str | None:
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname[:15].encode()))  # SIOCGIFADDR
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


# ------------------------------------------------------------------------------ SLURM host lists

def expand_hostlist(nodelist: str) -> list[str]:
    """SLURM's compact host list, e.g. ``rack[1-2]-node[01-02]`` -> rack1-node01 rack1-node02
    rack2-node01 rack2-node02, in SLURM's order: ``scontrol show hostnames`` when it is on the PATH
    (SLURM's own answer), else the maintained ``python-hostlist`` parser (several bracket groups per
    name, zero padding, ranges with steps)."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()
    except (OSError, subprocess.SubprocessError):
        pass
    import hostlist

    try:
        return hostlist.expand_hostlist(nodelist)
    except hostlist.BadHostlist as e:
        raise ConfigError(f"slurm launch: cannot read the node list {nodelist!r}: {e}") from None


def first_host(nodelist: str) -> str:
    return expand_hostlist(nodelist)[0]


def tasks_on_node(tasks_per_node: str, node_id: int) -> int | None:
    """SLURM's ``2(x3),1`` -> tasks on node ``node_id`` (here 2, 2, 2, 1)."""
    counts = []
    for part in filter(None, tasks_per_node.split(",")):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            return None
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node_id] if node_id < len(counts) else None
