"""The ranks of this job as seen from any one of them: host, pid and local rank of every rank,
gathered once right after the process group is up. Used for the world-layout log line and, when a
collective fails, to name the ranks that are gone."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

_PEERS: list["Peer"] | None = None


@dataclass(frozen=True)
class Peer:
    rank: int
    host: str
    pid: int
    local_rank: int

    def __str__(self) -> str:
        return f"rank {self.rank}@{self.host}"


def me() -> Peer:
    # the node-local rank (LOCAL_RANK may have become a device index: comm.select_device)
    local = os.environ.get("DEEPPROMPT_NODE_LOCAL_RANK", os.environ.get("LOCAL_RANK", 0))
    return Peer(int(os.environ.get("RANK", 0)), socket.gethostname(), os.getpid(), int(local))


def gather() -> list[Peer]:
    """Collective: every rank's ``Peer``, indexed by rank (kept for ``peers()``)."""
    from deepprompt.engine import comm

    global _PEERS
    _PEERS = comm.all_gather_object(me())
    return _PEERS


def peers() -> list[Peer] | None:
    return _PEERS


def nodes(peers_: list[Peer]) -> dict[str, list[int]]:
    """host -> its ranks, hosts in the order of their lowest rank."""
    out: dict[str, list[int]] = {}
    for p in peers_:
        out.setdefault(p.host, []).append(p.rank)
    return out


def layout(peers_: list[Peer]) -> str:
    """``2 node(s) x 1 rank(s): hostA [0], hostB [1]`` (or ``1-2 rank(s)`` when uneven)."""
    by_host = nodes(peers_)
    sizes = sorted({len(r) for r in by_host.values()})
    per = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    hosts = ", ".join(f"{h} [{_ranges(r)}]" for h, r in by_host.items())
    return f"{len(by_host)} node(s) x {per} rank(s): {hosts}"


def _ranges(ranks: list[int]) -> str:
    ranks, parts, i = sorted(ranks), [], 0
    while i < len(ranks):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] == ranks[j] + 1:
            j += 1
        parts.append(str(ranks[i]) if i == j else f"{ranks[i]}-{ranks[j]}")
        i = j + 1
    return ",".join(parts)


def process_state(pid: int) -> str | None:
    """'running', 'exited' (gone or a zombie), 'stopped', or None when it cannot be told."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "exited"
    except OSError:
        return None
    return {"Z": "exited", "X": "exited", "T": "stopped", "t": "stopped"}.get(state, "running")


def missing_peers() -> list[str]:
    """Ranks on THIS host whose process has exited or is stopped, e.g. ``rank 1@node-a (pid 42,
    exited)``. Ranks on other hosts cannot be checked from here; their own node's launcher says."""
    mine = socket.gethostname()
    out = []
    for p in _PEERS or []:
        if p.host != mine or p.pid == os.getpid():
            continue
        state = process_state(p.pid)
        if state in ("exited", "stopped"):
            out.append(f"{p} (pid {p.pid}, {state})")
    return out
