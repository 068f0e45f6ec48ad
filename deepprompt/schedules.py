"""How long a run trains and how its learning rate moves.

Length: ``train.max_steps``, or ``train.epochs`` turned into steps once the training data is read
(``steps_for_epochs``). Shape: ``train.lr_scheduler`` names one of transformers' ``get_scheduler``
schedules (linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup, ...),
used as ONE ``LambdaLR`` on our optimizer.

The warm-up is ours: transformers runs (0-based) step s of its warm-up at s/warmup of the peak,
so the first optimizer step trains at lr 0 (a step, and its Adam moment update, spent for nothing).
Here step s of the warm-up takes transformers' factor of step s+1 ((s+1)/warmup for the linear
ramp), and from the end of the warm-up on every step takes exactly transformers' factor. For
``linear`` that is the warm-up + linear decay this package always had, value for value.

The multiplier is a pure function of the step: a checkpoint stores only the scheduler's position
(``LambdaLR.state_dict``), and a resumed run rebuilds the same function from the same config.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from deepprompt.errors import ConfigError

# transformers' names that do not step on the step count alone, with why (refused by name)
UNSUPPORTED = {
    "reduce_lr_on_plateau": "it steps on a dev metric, not on the step count",
    "greedy": "it steps on the training loss, not on the step count",
}


def names() -> list[str]:
    """The schedules ``train.lr_scheduler`` accepts: transformers' ``SchedulerType`` names that step
    on the step count alone."""
    from transformers import SchedulerType

    return [t.value for t in SchedulerType if t.value not in UNSUPPORTED]


def steps_for_epochs(epochs: float, examples: int, global_batch: int) -> int:
    """Optimizer steps for ``epochs`` passes over ``examples`` training examples at ``global_batch``
    examples per step (a partial last batch counts as a step). Independent of the world size."""
    return max(1, math.ceil(epochs * examples / global_batch))


def warmup_steps(warmup_ratio: float, total: int) -> int:
    return int(warmup_ratio * total)


def _kwargs(given: dict[str, float] | None) -> dict:
    """The config reads every value as a float; transformers wants counts (num_cycles, timescale,
    num_decay_steps) as ints: a whole number goes as an int."""
    return {k: int(v) if float(v).is_integer() else v for k, v in (given or {}).items()}


def transformers_factor(name: str, lr: float, warmup: int, total: int,
                        kwargs: dict[str, float] | None = None) -> Callable[[int], float]:
    """transformers' multiplier of the peak lr at (0-based) step s. Built on a stand-in optimizer
    with the same peak lr: some shapes take absolute rates (polynomial's ``lr_end``,
    cosine_with_min_lr's ``min_lr``) and divide them by the optimizer's lr."""
    from transformers import get_scheduler

    if name in UNSUPPORTED:
        raise ConfigError(f"train.lr_scheduler: {name!r} is not supported: {UNSUPPORTED[name]}")
    known = names()
    if name not in known:
        raise ConfigError(f"train.lr_scheduler: unknown schedule {name!r} (known: {', '.join(known)})")
    stand_in = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    try:
        sched = get_scheduler(name, stand_in, num_warmup_steps=warmup, num_training_steps=total,
                              scheduler_specific_kwargs=_kwargs(kwargs))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"train.lr_scheduler_kwargs: schedule {name!r} refuses {kwargs or {}}: {e}") from None
    return sched.lr_lambdas[0]


def build(optimizer: torch.optim.Optimizer, name: str, lr: float, warmup_ratio: float, total: int,
          kwargs: dict[str, float] | None = None) -> LambdaLR:
    """The run's scheduler over ``total`` optimizer steps (see the module docstring for the warm-up)."""
    warmup = warmup_steps(warmup_ratio, total)
    shape = transformers_factor(name, lr, warmup, total, kwargs)

    def factor(step: int) -> float:  # a plain function: LambdaLR.state_dict then saves no closure state
        return shape(step + 1) if step < warmup else shape(step)

    return LambdaLR(optimizer, factor)
