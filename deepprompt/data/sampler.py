"""Which examples each rank reads. Deterministic from (seed, epoch) and independent of the world
size: every micro-step takes the next ``world x micro`` examples of the epoch's global order and
rank r reads its slice. So every rank agrees without communication, and a run resumed on another
number of ranks (same global batch) reads the same examples at every optimizer step."""
from __future__ import annotations

import torch

from deepprompt.errors import ConfigError


class ShardedSampler:
    """An endless stream of micro-batches of example indices for one rank.

    Each epoch is a fresh permutation (seeded by seed and epoch); a tail shorter than one global
    micro-step (``world x micro``) waits for the next epoch's permutation.
    """

    def __init__(self, n: int, world: int, rank: int, micro_batch: int, seed: int, task: str = "task"):
        if n < world * micro_batch:
            raise ConfigError(f"task {task}: {n} training examples are fewer than one micro-step needs "
                              f"(micro batch {micro_batch} x {world} ranks)")
        self.n, self.world, self.rank, self.micro, self.seed = n, world, rank, micro_batch, seed
        self.epoch, self.position = 0, 0  # position: examples of this epoch consumed by ALL ranks
        self._order: list[int] | None = None

    def _epoch_order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def next(self) -> list[int]:
        step = self.world * self.micro
        if self.position + step > self.n:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self._epoch_order()
        start = self.position + self.rank * self.micro
        self.position += step
        return self._order[start:start + self.micro]

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
