"""Which examples each rank reads. Deterministic from (seed, epoch), so every rank agrees without
communication and a resumed run can continue from (epoch, position)."""
from __future__ import annotations

import torch

from deepprompt.errors import ConfigError


class ShardedSampler:
    """An endless stream of micro-batches of example indices for one rank.

    Each epoch is a fresh permutation (seeded by seed + epoch) dealt round-robin to the ranks; the
    tail that would leave ranks with unequal counts, or a partial micro-batch, waits for the next
    epoch's permutation (no example is lost for good, none is read twice in an epoch).
    """

    def __init__(self, n: int, world: int, rank: int, micro_batch: int, seed: int, task: str = "task"):
        per_rank = n // world
        if per_rank < micro_batch:
            raise ConfigError(f"task {task}: {n} training examples give {per_rank} per rank, fewer than "
                              f"the micro batch {micro_batch} x {world} ranks needs")
        self.n, self.world, self.rank, self.micro, self.seed = n, world, rank, micro_batch, seed
        self.epoch, self.position = 0, 0
        self._order: list[int] | None = None

    def _epoch_order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        mine = perm[self.rank::self.world][: self.n // self.world]
        return mine[: len(mine) - len(mine) % self.micro]

    def next(self) -> list[int]:
        if self._order is None:
            self._order = self._epoch_order()
        if self.position >= len(self._order):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._epoch_order()
        batch = self._order[self.position: self.position + self.micro]
        self.position += self.micro
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self._order = state["epoch"], state["position"], None


def eval_shard(n: int, world: int, rank: int, batch: int) -> list[list[int]]:
    """This rank's evaluation batches. Every rank gets the SAME number of batches (ZeRO-3 needs
    every rank to run the same forwards); slots past the end are -1 (padding, dropped later)."""
    mine = list(range(rank, n, world))
    n_batches = max(1, -(-((n + world - 1) // world) // batch))
    mine += [-1] * (n_batches * batch - len(mine))
    return [mine[i * batch:(i + 1) * batch] for i in range(n_batches)]
