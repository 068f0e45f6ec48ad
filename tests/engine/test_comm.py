"""engine/comm.py owns every collective and device decision; NCCL's rules, checked without a GPU.

gloo accepts CPU tensors in collectives and never cares which device is current; NCCL refuses the
first and uses the second for every object collective. These tests stand in a fake accelerator
(device type "meta", recording ``set_device``) and a spied ``torch.distributed``, so a rule NCCL
would enforce fails here on the CPU."""
from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from deepprompt.engine import comm
from deepprompt.errors import ConfigError
from tests.tiny import REPO

COLLECTIVES = {"all_reduce", "all_gather", "all_gather_object", "all_gather_into_tensor", "_all_gather_base",
               "broadcast", "broadcast_object_list", "barrier", "monitored_barrier", "reduce", "reduce_scatter",
               "reduce_scatter_tensor", "_reduce_scatter_base", "gather", "gather_object", "scatter",
               "scatter_object_list", "all_to_all", "all_to_all_single", "send", "recv", "isend", "irecv"}
DIST_MODULES = {"torch.distributed", "deepspeed.comm"}


def collective_calls(source: str) -> list[tuple[int, str]]:
    """(line, call) for every torch.distributed / deepspeed.comm collective called in ``source``,
    however the module was imported (``import torch.distributed as dist``, ``from torch import
    distributed``, ``from torch.distributed import all_reduce``, ``torch.distributed.x``)."""
    tree = ast.parse(source)
    aliases, direct = set(DIST_MODULES), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in DIST_MODULES:
                    aliases.add(a.asname or a.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in DIST_MODULES:
                    aliases.add(a.asname or a.name)
                elif node.module in DIST_MODULES and a.name in COLLECTIVES:
                    direct.add(a.asname or a.name)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in COLLECTIVES and ast.unparse(f.value) in aliases:
            found.append((node.lineno, ast.unparse(f)))
        elif isinstance(f, ast.Name) and f.id in direct:
            found.append((node.lineno, f.id))
    return found


def test_the_detector_sees_every_import_form():
    src = ("import torch\nimport torch.distributed as dist\nfrom torch import distributed as d2\n"
           "from torch.distributed import all_reduce as ar\nimport deepspeed.comm as dscomm\n"
           "dist.all_reduce(t)\nd2.barrier()\nar(t)\ntorch.distributed.broadcast_object_list(x)\n"
           "dscomm.all_gather_object(o, x)\ndist.get_rank()\n")
    assert [c for _, c in collective_calls(src)] == [
        "dist.all_reduce", "d2.barrier", "ar", "torch.distributed.broadcast_object_list", "dscomm.all_gather_object"]


def test_no_collective_outside_comm():
    """Every collective of the package and the launchers goes through engine/comm.py, which puts
    tensors on the accelerator and runs after the device is set."""
    offenders = []
    for path in sorted([*(REPO / "deepprompt").rglob("*.py"), *(REPO / "launcher").rglob("*.py")]):
        if path == REPO / "deepprompt" / "engine" / "comm.py":
            continue
        offenders += [f"{path.relative_to(REPO)}:{line}: {call}" for line, call in collective_calls(path.read_text())]
    assert not offenders, "collectives outside engine/comm.py:\n" + "\n".join(offenders)


# ------------------------------------------------------------------------------ a fake accelerator

class FakeAccelerator:
    """An accelerator whose device type is not "cpu" (tensors land on "meta", where values cannot
    be read) and which records ``set_device``."""

    def __init__(self, count: int, events: list):
        self.count, self.events, self.index = count, events, 0

    def device_name(self, index=None):
        return "meta"

    def current_device_name(self):
        return "meta"

    def current_device(self):
        return self.index

    def device_count(self):
        return self.count

    def set_device(self, index):
        self.events.append(("set_device", index))
        self.index = index

    def communication_backend_name(self):
        return "nccl"


class Reached(Exception):
    """Raised by the spy once it has recorded what reached a tensor collective."""


@pytest.fixture
def spied(monkeypatch):
    """(events, accelerator factory): torch.distributed's collectives and DeepSpeed's init replaced
    by recorders; tensor collectives record the tensor's device and stop."""
    events: list = []
    state = {"initialized": False}
    dist = comm.dist

    def tensor_collective(name):
        def spy(tensor, *args, **kwargs):
            events.append((name, tensor.device.type))
            raise Reached(name)
        return spy

    def gather_object(out, obj, *a, **k):
        events.append(("all_gather_object", None))
        out[:] = [obj] * len(out)

    def init_distributed(**kwargs):
        events.append(("init_process_group", None))
        state["initialized"] = True

    monkeypatch.setattr(dist, "is_initialized", lambda: state["initialized"])
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    monkeypatch.setattr(dist, "all_gather_object", gather_object)
    monkeypatch.setattr(dist, "broadcast_object_list", lambda box, src=0: events.append(("broadcast_object", None)))
    for name in ("all_reduce", "broadcast", "all_gather_into_tensor", "reduce_scatter_tensor"):
        monkeypatch.setattr(dist, name, tensor_collective(name))
    import deepspeed
    monkeypatch.setattr(deepspeed, "init_distributed", init_distributed)
    monkeypatch.setattr(comm, "_own_extension_cache", lambda _: None)
    monkeypatch.setattr("atexit.register", lambda *a: None)
    from deepprompt.engine import world
    monkeypatch.setattr(world, "_PEERS", world._PEERS)  # init gathers fake peers; keep the real ones

    def use(count: int, **env):
        acc = FakeAccelerator(count, events)
        monkeypatch.setattr(comm, "accelerator", lambda: acc)
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                  "MASTER_PORT", "OMPI_COMM_WORLD_LOCAL_RANK", "DEEPPROMPT_NODE_LOCAL_RANK"):
            monkeypatch.setenv(k, "0")  # recorded, so whatever comm sets is undone after the test
            monkeypatch.delenv(k)
        for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999", **env}.items():
            monkeypatch.setenv(k, str(v))
        return acc
    return events, use


def test_init_sets_the_device_before_the_group_and_the_first_object_collective(spied):
    events, use = spied
    use(count=2, RANK=1, WORLD_SIZE=2, LOCAL_RANK=1, LOCAL_SIZE=2)
    comm.init_distributed()
    assert [e for e, _ in events][:3] == ["set_device", "init_process_group", "all_gather_object"]
    assert events[0] == ("set_device", 1)  # its own GPU, not cuda:0


def test_one_gpu_per_rank_maps_every_local_rank_to_device_0(spied, monkeypatch):
    """srun --gpus-per-task=1 / CUDA_VISIBLE_DEVICES per rank: local rank 3 sees one GPU, index 0;
    DeepSpeed reads LOCAL_RANK as the device index, so it becomes 0 (Open MPI's copy too)."""
    import os

    events, use = spied
    use(count=1, RANK=3, WORLD_SIZE=4, LOCAL_RANK=3, LOCAL_SIZE=4, OMPI_COMM_WORLD_LOCAL_RANK=3)
    comm.init_distributed()
    assert events[0] == ("set_device", 0)
    assert os.environ["LOCAL_RANK"] == "0" and os.environ["OMPI_COMM_WORLD_LOCAL_RANK"] == "0"
    assert os.environ["DEEPPROMPT_NODE_LOCAL_RANK"] == "3"
    from deepprompt.engine import world
    assert world.me().local_rank == 3  # the logs still say which rank of the node it is


def test_fewer_gpus_than_local_ranks_is_one_line_on_every_rank(spied):
    events, use = spied
    use(count=2, RANK=0, WORLD_SIZE=4, LOCAL_RANK=0, LOCAL_SIZE=4)
    with pytest.raises(ConfigError, match=r"4 rank\(s\) run on this node but this process sees 2 GPU") as e:
        comm.init_distributed()
    assert "\n" not in str(e.value)
    assert ("init_process_group", None) not in events  # refused before anyone waits in the rendezvous


@pytest.mark.parametrize("local_rank, local_size, visible, expected", [
    (0, 8, 8, 0), (7, 8, 8, 7), (3, 4, 1, 0), (0, 1, 4, 0), (1, 2, 4, 1)])
def test_device_index(local_rank, local_size, visible, expected):
    assert comm.device_index(local_rank, local_size, visible) == expected


def test_tensor_collectives_run_on_the_accelerator(spied):
    """A CPU tensor handed to comm reaches the collective on the accelerator's device."""
    events, use = spied
    use(count=1, RANK=0, WORLD_SIZE=2, LOCAL_RANK=0, LOCAL_SIZE=1)
    comm.init_distributed()
    for call in (lambda: comm.all_reduce(torch.ones(3)), lambda: comm.all_reduce_ints([1, 2]),
                 lambda: comm.all_reduce_to_host(torch.zeros(5, dtype=torch.float64)),
                 lambda: comm.all_reduce(torch.ones(2), op="max", async_op=True)):
        with pytest.raises(Reached):
            call()
    assert [d for name, d in events if name == "all_reduce"] == ["meta"] * 4


def test_optimizer_state_numel_reduces_on_the_accelerator(spied):
    """results.json's optimizer-state count: the last collective of a run (it used to build its
    tensor on the CPU, which NCCL refuses after the last checkpoint was written)."""
    from deepprompt.engine import ds_setup

    events, use = spied
    use(count=1, RANK=0, WORLD_SIZE=2, LOCAL_RANK=0, LOCAL_SIZE=1)
    comm.init_distributed()
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.AdamW([p])
    p.grad = torch.ones(4)
    opt.step()
    with pytest.raises(Reached):
        ds_setup.optimizer_state_numel(SimpleNamespace(optimizer=opt))
    assert events[-1] == ("all_reduce", "meta")


def test_without_a_process_group_comm_gives_the_one_rank_answer(monkeypatch):
    monkeypatch.setattr(comm.dist, "is_initialized", lambda: False)
    assert comm.rank() == 0 and comm.world_size() == 1
    assert comm.all_gather_object("x") == ["x"] and comm.broadcast_object(5) == 5
    assert comm.all_reduce_ints([2, 3]) == [2, 3]
    comm.barrier()


def test_host_copy_of_a_cpu_tensor_reads_its_values():
    assert comm.HostCopy(torch.tensor([1.5, 2.0])).values() == [1.5, 2.0]


def test_launchers_and_package_never_select_a_device_themselves():
    """Device choice lives in comm: no ``torch.cuda.set_device`` / ``.set_device(`` elsewhere."""
    offenders = [f"{p.relative_to(REPO)}" for p in (REPO / "deepprompt").rglob("*.py")
                 if p.name != "comm.py" and "set_device(" in p.read_text()]
    assert not offenders
