"""Multi-task data mixing: which task each GLOBAL optimizer step trains on, and which examples of it
each rank reads.

The task of step ``s`` is a pure function of ``(seed, s)`` and the mixing rates: every rank draws
the same task without communicating (ZeRO-3 hangs unless every rank runs the same modules in the
same micro-step), and a resumed run draws exactly what an uninterrupted one would. Each task keeps
its own ``ShardedSampler`` (its own epoch and position), so each rank reads its shard of the drawn
task's data; a task's sampler advances only on the steps that draw it.

A single-task run is the same object with one task (every draw is task 0 and its sampler is seeded
exactly like the single-task sampler always was).
"""
from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Sequence

from deepprompt.config import MixerConfig
from deepprompt.data.sampler import ShardedSampler
from deepprompt.errors import ConfigError

# policy name -> f(sizes, names, cfg) -> unnormalised rates (one per task)
POLICIES: dict[str, Callable[[Sequence[int], Sequence[str], MixerConfig], list[float]]] = {}


def policy(name: str):
    def deco(fn):
        if name in POLICIES:
            raise ValueError(f"mixing policy {name!r} is registered twice")
        POLICIES[name] = fn
        return fn
    return deco


def _capped(sizes: Sequence[int], cfg: MixerConfig) -> list[int]:
    return [min(n, cfg.cap) if cfg.cap is not None else n for n in sizes]


@policy("proportional")
def _proportional(sizes, names, cfg):
    """T5's examples-proportional mixing: rate ∝ min(size, cap)."""
    return [float(n) for n in _capped(sizes, cfg)]


@policy("temperature")
def _temperature(sizes, names, cfg):
    """Temperature-scaled mixing: rate ∝ min(size, cap)^(1/T), as (n / largest)^(1/T): a small T
    raises the sizes to a large power, which overflows a float (1000^100) where the ratios do not."""
    capped = _capped(sizes, cfg)
    top = max(capped)
    return [math.exp((math.log(n) - math.log(top)) / cfg.temperature) if n > 0 else 0.0 for n in capped]


@policy("equal")
def _equal(sizes, names, cfg):
    return [1.0] * len(sizes)


@policy("weights")
def _weights(sizes, names, cfg):
    return [float(cfg.weights[n]) for n in names]


def mixing_rates(sizes: Sequence[int], names: Sequence[str], cfg: MixerConfig) -> list[float]:
    """Normalised probability of each task per optimizer step."""
    if cfg.policy not in POLICIES:
        raise ConfigError(f"mixer.policy: unknown policy {cfg.policy!r} (known: {', '.join(sorted(POLICIES))})")
    raw = POLICIES[cfg.policy](sizes, names, cfg)
    top = max(raw, default=0.0)
    if not 0 < top < math.inf or not all(0 <= r < math.inf for r in raw):
        raise ConfigError(f"mixer: policy {cfg.policy!r} gives no task a finite positive rate (sizes {list(sizes)}, "
                          f"rates {raw})")
    scaled = [r / top for r in raw]  # relative to the largest first: a sum of huge weights overflows to inf
    total = sum(scaled)
    return [r / total for r in scaled]


class TaskMixer:
    """The draws (shared by all ranks) plus one ``ShardedSampler`` per task (this rank's shard).

    ``sizes`` are the tasks' training-feature counts, ``seed`` the data seed (train.seed): task i's
    sampler is seeded ``seed + 7919 * i`` so tasks of equal size do not read in lock-step.
    """

    def __init__(self, names: Sequence[str], sizes: Sequence[int], cfg: MixerConfig, seed: int,
                 world: int, rank: int, micro_batch: int):
        if len(names) != len(sizes) or not names:
            raise ValueError("TaskMixer: one size per task name, at least one task")
        self.names = list(names)
        self.sizes = [int(n) for n in sizes]
        self.rates = mixing_rates(self.sizes, self.names, cfg)
        self.seed = cfg.seed if cfg.seed is not None else seed
        self.policy = cfg.policy
        self._cumulative = []
        acc = 0.0
        for r in self.rates:
            acc += r
            self._cumulative.append(acc)
        self.samplers = [ShardedSampler(n, world, rank, micro_batch, seed + 7919 * i, name)
                         for i, (name, n) in enumerate(zip(self.names, self.sizes))]
        self.steps_drawn = [0] * len(self.names)
        self.current: int | None = None

    def task_at(self, step: int) -> int:
        """The task index of global optimizer step ``step``: a function of (seed, step) only."""
        if len(self.names) == 1:
            return 0
        u = random.Random(f"deepprompt-mixer:{self.seed}:{step}").random()  # str seeds: sha512, stable
        return min(bisect.bisect_right(self._cumulative, u), len(self.names) - 1)

    def start_step(self, step: int) -> int:
        """Draw (and count) the task of ``step``; the following ``next_micro_batch`` calls read it."""
        self.current = self.task_at(step)
        self.steps_drawn[self.current] += 1
        return self.current

    def next_micro_batch(self) -> list[int]:
        """This rank's next micro-batch (example indices) of the current step's task."""
        if self.current is None:
            raise RuntimeError("TaskMixer.next_micro_batch before start_step")
        return self.samplers[self.current].next()

    def mixture(self) -> dict:
        """What results.json reports: the policy, the rates and the steps actually drawn per task."""
        return {"policy": self.policy, "seed": self.seed,
                "train_examples": dict(zip(self.names, self.sizes)),
                "rates": dict(zip(self.names, self.rates)),
                "steps": dict(zip(self.names, self.steps_drawn))}

    def state_dict(self) -> dict:
        return {"tasks": {n: {**s.state_dict(), "steps_drawn": d}
                          for n, s, d in zip(self.names, self.samplers, self.steps_drawn)}}

    def load_state_dict(self, state: dict, step: int = 0) -> None:
        """Restore from ``state_dict()``; also reads the ``{"sampler": ...}`` of a checkpoint written
        before multi-task mixing (one task, which drew all ``step`` steps)."""
        if "tasks" not in state:
            if len(self.names) != 1:
                raise ConfigError("cannot resume a multi-task run from a single-task checkpoint")
            state = {"tasks": {self.names[0]: {**state["sampler"], "steps_drawn": step}}}
        saved = state["tasks"]
        if set(saved) != set(self.names):
            raise ConfigError(f"cannot resume: the checkpoint's tasks ({', '.join(saved)}) are not this run's "
                              f"({', '.join(self.names)})")
        for i, name in enumerate(self.names):
            self.samplers[i].load_state_dict(saved[name])
            drawn = saved[name].get("steps_drawn")
            self.steps_drawn[i] = int(drawn) if drawn is not None else 0
