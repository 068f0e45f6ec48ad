"""The one home of every collective and every device decision.

NCCL enforces rules that gloo (every CPU test) never checks (../docs/gpu.md):

- a tensor collective takes only tensors on the accelerator: a CPU tensor fails with "No backend
  type associated with device type cpu";
- object collectives pickle into a tensor on the CURRENT device, so each rank must select its
  device before the first one, or every local rank talks through GPU 0;
- DeepSpeed binds the process group to ``cuda:LOCAL_RANK`` and sets the device only in
  ``deepspeed.initialize``, long after our start-up collectives.

So ``init_distributed`` selects this rank's device FIRST, then joins the process group, then runs
the first object collective; every tensor collective below moves its tensor to ``device()``.
Nothing else in the package calls a ``torch.distributed`` collective (a test walks the AST), so a
GPU run can only fail for reasons a CPU run could show too.

Without a process group (a one-process tool, a unit test) every function here degrades to the
one-rank answer, so callers never branch on "am I distributed".
"""
from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

from deepprompt.errors import ConfigError

DEFAULT_DIST_TIMEOUT_S = 300.0


# ------------------------------------------------------------------------------ devices

def accelerator():
    """DeepSpeed's accelerator of this process (cuda, cpu, ...): the one seam tests replace."""
    from deepspeed.accelerator import get_accelerator

    return get_accelerator()


def on_cpu() -> bool:
    return accelerator().device_name() == "cpu"


def device() -> torch.device:
    """This rank's device: where batches, tensor collectives and the model live."""
    acc = accelerator()
    return torch.device("cpu") if acc.device_name() == "cpu" else torch.device(acc.current_device_name())


def device_index(local_rank: int, local_size: int, visible: int, where: str = "") -> int:
    """Which of the devices this process sees belongs to local rank ``local_rank`` of ``local_size``.

    Every GPU of the node visible to every rank (deepspeed, torchrun, mpirun): device ``local_rank``.
    Exactly one visible (``srun --gpus-per-task=1``, CUDA_VISIBLE_DEVICES set per rank): device 0,
    whatever the local rank. Anything else cannot give each rank its own GPU (NCCL refuses two ranks
    on one device): one line saying so, on every rank of the node alike (all know ``local_size``).
    """
    if visible == 1:
        return 0
    if visible >= local_size and local_rank < visible:
        return local_rank
    raise ConfigError(
        f"{where or 'this node'}: {local_size} rank(s) run on this node but this process sees {visible} GPU(s) "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); start at most {visible} rank(s) "
        f"per node (hostfile slots / --num_gpus / --ntasks-per-node), or give each rank one GPU of its own")


def select_device(local_rank: int, local_size: int) -> int | None:
    """Set this rank's accelerator device before any collective; returns its index (None on CPU).

    DeepSpeed reads LOCAL_RANK as the device index everywhere (the process group's device_id,
    ``deepspeed.initialize``, ``zero.Init``); when a launcher gives each rank one GPU of its own, the
    index is 0 while the node-local rank is not, so LOCAL_RANK is set to the index (the node-local
    rank stays in DEEPPROMPT_NODE_LOCAL_RANK for the logs). Open MPI's copy is kept equal, because
    DeepSpeed asserts the two agree."""
    acc = accelerator()
    os.environ["DEEPPROMPT_NODE_LOCAL_RANK"] = str(local_rank)
    if acc.device_name() == "cpu":
        return None
    index = device_index(local_rank, local_size, acc.device_count(),
                         f"rank {os.environ.get('RANK', '0')}@{socket.gethostname()}")
    if index != local_rank:
        os.environ["LOCAL_RANK"] = str(index)
        if "OMPI_COMM_WORLD_LOCAL_RANK" in os.environ:
            os.environ["OMPI_COMM_WORLD_LOCAL_RANK"] = str(index)
    acc.set_device(index)
    return index


def synchronize() -> None:
    """Wait for this rank's device to finish its queued work (timing boundaries only)."""
    if not on_cpu():
        accelerator().synchronize()


def peak_memory_mb() -> float | None:
    """Peak accelerator memory this rank allocated so far (MiB); None on CPU."""
    if on_cpu():
        return None
    return accelerator().max_memory_allocated() / 2**20


def device_memory_bytes(ranks_per_node: int) -> int:
    """Memory one rank may fill: its GPU's, or on CPU its share of the host's."""
    acc = accelerator()
    if acc.device_name() == "cpu":
        return acc.total_memory() // max(1, ranks_per_node)
    return acc.total_memory(acc.current_device())


def device_info() -> dict:
    """What results.json says about the hardware: accelerator, backend, device name, devices per node."""
    acc = accelerator()
    cpu = acc.device_name() == "cpu"
    name = None
    if not cpu and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.cuda.current_device())
    elif cpu:
        name = _cpu_name()
    return {"accelerator": acc.device_name(), "backend": dist.get_backend() if dist.is_initialized() else None,
            "name": name, "devices_per_node": None if cpu else acc.device_count()}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


# ------------------------------------------------------------------------------ the process group

def init_distributed(timeout_s: float = DEFAULT_DIST_TIMEOUT_S) -> None:
    """Join the process group of whatever launched this process (DeepSpeed's runners, torchrun,
    mpirun, srun, or plain ``python`` for one rank; see ``rank_env``): select the device, init the
    group, then learn every rank's host (the first object collective).

    ``timeout_s`` bounds every collective: a rank that stops answering (a dead node) ends the job
    after this long instead of torch's 30 minutes."""
    import deepspeed

    from deepprompt.engine import rank_env, world

    if dist.is_initialized():
        return
    env = rank_env.discover()
    rank_env.export(env)
    select_device(env.local_rank, env.local_size)  # before the group exists: NCCL binds to it
    _own_extension_cache(deepspeed.__file__)
    deepspeed.init_distributed(dist_backend=accelerator().communication_backend_name(),
                               auto_mpi_discovery=False, timeout=timedelta(seconds=timeout_s), verbose=False)
    import atexit

    atexit.register(release_shm_buffers)
    world.gather()


def shutdown() -> None:
    """Leave the process group at the end of a run every rank finished (call it after a barrier).
    torch asks for it (NCCL warns, and may leak, at an exit without it), and without it gloo's
    threads race the interpreter's exit: "terminate called without an active exception", SIGABRT,
    seen here in about 1 of 20 two-rank runs. Not for failure paths: with a peer gone it could block."""
    if is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def backend() -> str | None:
    return dist.get_backend() if is_initialized() else None


def _own_extension_cache(deepspeed_file: str) -> None:
    """DeepSpeed JIT-builds its CPU comm op (~90 s on 2 cores) into ~/.cache/torch_extensions, and
    the build file records the install path: two checkouts or virtualenvs sharing that cache rebuild
    it for each other on every launch and wait on each other's lock. One directory per DeepSpeed
    install (unless TORCH_EXTENSIONS_DIR is set) builds it once per install."""
    import hashlib

    if "TORCH_EXTENSIONS_DIR" in os.environ:
        return
    key = hashlib.sha256(os.path.dirname(os.path.abspath(deepspeed_file)).encode()).hexdigest()[:10]
    os.environ["TORCH_EXTENSIONS_DIR"] = os.path.join(os.path.expanduser("~"), ".cache", "torch_extensions",
                                                      f"deepspeed-{key}")


def release_shm_buffers() -> None:
    """DeepSpeed's CPU shared-memory all-reduce creates one ~64 MB /dev/shm segment per rank and
    never unlinks it (deepspeed 0.19, csrc/cpu/comm/shm.cpp): every run would leak them until
    /dev/shm is full and new runs hang. Each rank removes its own at exit (the name is gone, live
    mappings stay valid)."""
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ.get('MASTER_PORT', '')}")
    for r in {os.environ.get("LOCAL_RANK"), os.environ.get("DEEPPROMPT_NODE_LOCAL_RANK"),
              os.environ.get("RANK")} - {None}:
        try:
            os.unlink(f"/dev/shm/{name}_{r}")
        except OSError:
            pass


# ------------------------------------------------------------------------------ collectives

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def all_reduce(tensor: torch.Tensor, op: str = "sum", async_op: bool = False):
    """Reduce ``tensor`` over all ranks; returns the result ON THE DEVICE (a copy when the input was
    elsewhere), or ``(result, work)`` with ``async_op`` (read the result after ``work.wait()``; on
    NCCL the wait only orders the device stream, so the host is not blocked)."""
    t = tensor.to(device())
    work = dist.all_reduce(t, op=_OPS[op], async_op=async_op) if is_initialized() else None
    return (t, work) if async_op else t


class HostCopy:
    """A device tensor on its way to the host: the copy is queued now (pinned memory, non-blocking)
    and ``values()`` waits only for the work queued before it, not for what was queued since. Read
    one step later, it never stalls the device queue (a plain ``.item()`` would wait for all of it)."""

    def __init__(self, tensor: torch.Tensor):
        self._event = None
        if tensor.device.type == "cpu":
            self._host = tensor
            return
        self._host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        self._host.copy_(tensor, non_blocking=True)
        self._event = accelerator().Event()
        self._event.record()

    def values(self) -> list:
        if self._event is not None:
            self._event.synchronize()
        return self._host.tolist()


def all_reduce_to_host(tensor: torch.Tensor, op: str = "sum") -> HostCopy:
    """``all_reduce`` on the device, then an asynchronous copy of the result to the host."""
    return HostCopy(all_reduce(tensor, op))


def all_reduce_ints(values: list[int], op: str = "sum") -> list[int]:
    """Integers reduced over all ranks (counts): one collective, read back on the host."""
    return [int(v) for v in all_reduce(torch.tensor(values, dtype=torch.long), op).tolist()]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. "my generation is not finished": every
    rank then runs one more forward, so ZeRO-3's per-forward gathers stay matched)."""
    return all_reduce_ints([int(bool(flag))], "max")[0] > 0


def all_gather_object(obj) -> list:
    """Every rank's ``obj``, indexed by rank (pickled; for small, rare messages)."""
    if not is_initialized():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (the others pass anything, e.g. None)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def from_rank0(compute, error: type[Exception] = ConfigError):
    """Rank 0's ``compute()`` on every rank (the others do not call it). An ``error`` it raises is
    sent instead and raised on every rank: raised on rank 0 alone, it would leave the others waiting
    in the broadcast until the collective timeout."""
    payload = None
    if rank() == 0:
        try:
            payload = ("ok", compute())
        except error as e:
            payload = ("error", str(e))
    kind, value = broadcast_object(payload)
    if kind == "error":
        raise error(value)
    return value


def barrier() -> None:
    """Every rank waits for every other. On NCCL the barrier runs on this rank's device (without
    ``device_ids`` torch guesses one and warns)."""
    if not is_initialized():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[accelerator().current_device()])
    else:
        dist.barrier()
