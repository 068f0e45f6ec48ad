"""Benchmark-only: count the bytes every collective of this process moves, then run a script.

    deepspeed ... benchmarks/_comm_count.py launcher/train.py --ds_config ... key=value ...

Wraps the ``torch.distributed`` collectives (every name DeepSpeed and deepprompt reach them by)
BEFORE DeepSpeed binds them, and writes ``$COMM_COUNT_DIR/rank<r>.json`` at exit: per
(operation, group scope) the number of calls and the payload bytes, the size of the whole tensor
the collective produces or reduces (all_gather: the gathered output; reduce_scatter: the input;
all_reduce, broadcast: the tensor). The scope says which ranks took part: ``world``, ``node``
(all on one node: rank // LOCAL_SIZE equal) or ``cross`` (a sub-group spanning nodes)."""
from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import runpy
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d

COUNTS: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
TRACE: list[tuple] | None = [] if os.environ.get("COMM_COUNT_TRACE") else None
"""COMM_COUNT_TRACE=1: also every call (op, scope, bytes, inside a backward pass), in order."""


def _nbytes(x) -> int:
    if torch.is_tensor(x):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(t) for t in x)
    return 0


# which argument holds the payload, per operation
PAYLOAD = {"all_gather_into_tensor": "output_tensor", "_all_gather_base": "output_tensor",
           "reduce_scatter_tensor": "input", "_reduce_scatter_base": "input", "all_reduce": "tensor",
           "all_gather": "tensor_list", "broadcast": "tensor", "reduce_scatter": "input_list",
           "all_reduce_coalesced": "tensors", "all_to_all_single": "input", "reduce": "tensor"}


def _scope(group) -> str:
    world = dist.get_world_size()
    ranks = list(range(world)) if group is None else dist.get_process_group_ranks(group)
    if len(ranks) == world:
        return "world"
    per_node = int(os.environ.get("LOCAL_SIZE", world))
    return "node" if len({r // per_node for r in ranks}) == 1 else "cross"


_DEPTH = [0]  # a collective implemented by another one (all_gather_object -> all_gather) counts once


def _wrap(name: str, fn):
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def counted(*args, **kwargs):
        if _DEPTH[0] == 0:
            bound = sig.bind_partial(*args, **kwargs)
            entry = COUNTS[(name, _scope(bound.arguments.get("group")))]
            entry[0] += 1
            entry[1] += _nbytes(bound.arguments.get(PAYLOAD[name]))
            if TRACE is not None:
                TRACE.append((name, _scope(bound.arguments.get("group")), _nbytes(bound.arguments.get(PAYLOAD[name])),
                              torch._C._current_graph_task_id() != -1))
        _DEPTH[0] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _DEPTH[0] -= 1
    counted.__wrapped_collective__ = True
    return counted


def install() -> None:
    for name in PAYLOAD:
        for module in (dist, c10d):
            fn = getattr(module, name, None)
            if fn is not None and not getattr(fn, "__wrapped_collective__", False):
                setattr(module, name, _wrap(name, fn))
    atexit.register(_write)


def _write() -> None:
    out = os.environ.get("COMM_COUNT_DIR")
    if not out:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    rows = [{"op": op, "scope": scope, "calls": c, "bytes": b} for (op, scope), (c, b) in sorted(COUNTS.items())]
    Path(out, f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(rows, indent=1))
    if TRACE is not None:
        Path(out, f"trace{os.environ.get('RANK', '0')}.json").write_text(json.dumps(TRACE))


if __name__ == "__main__":
    install()
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    sys.argv = args
    sys.path.insert(0, str(Path(args[0]).resolve().parent.parent))
    runpy.run_path(args[0], run_name="__main__")
