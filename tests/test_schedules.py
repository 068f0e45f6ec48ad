"""Learning-rate schedules from transformers' get_scheduler, with our warm-up convention; the default
``linear`` is the schedule this package always had, value for value; a scheduler restored from its
JSON state continues exactly; the run length by epochs."""
import json
import math

import pytest
import torch

from deepprompt import schedules
from deepprompt.config import load_config
from deepprompt.errors import ConfigError


def before(warmup: int, total: int):
    """The hand-written LambdaLR multiplier of ds_setup before transformers' schedules replaced it."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def optimizer(lr=1e-2):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=lr)


def lrs(sched, steps: int) -> list[float]:
    """The lr of optimizer steps 1..steps, as the trainer sees them (one scheduler step per optimizer step)."""
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return out


@pytest.mark.parametrize("warmup_ratio, total", [(0.06, 600), (0.2, 20), (0.0, 16), (0.5, 3), (0.06, 1)])
def test_linear_is_the_old_schedule_exactly(warmup_ratio, total):
    sched = schedules.build(optimizer(3e-2), "linear", 3e-2, warmup_ratio, total)
    old = before(int(warmup_ratio * total), total)
    assert lrs(sched, total) == [3e-2 * old(s) for s in range(total)]  # bit for bit, not approximately


def test_the_first_warmup_step_trains():
    """transformers' own warm-up would run step 1 at lr 0; ours at peak/warmup, reaching the peak at step `warmup`."""
    got = lrs(schedules.build(optimizer(1.0), "cosine", 1.0, 0.25, 16), 16)
    assert got[:4] == [0.25, 0.5, 0.75, 1.0] and got[4] == 1.0


@pytest.mark.parametrize("name, kwargs", [
    ("cosine", None), ("cosine_with_restarts", {"num_cycles": 3}), ("polynomial", {"lr_end": 1e-4, "power": 2.0}),
    ("constant_with_warmup", None), ("inverse_sqrt", None), ("cosine_with_min_lr", {"min_lr_rate": 0.1}),
    ("warmup_stable_decay", {"num_decay_steps": 5}),
])
def test_after_the_warmup_every_step_is_transformers(name, kwargs):
    from transformers import get_scheduler

    total, lr = 40, 1e-2
    warmup = schedules.warmup_steps(0.1, total)
    ref = get_scheduler(name, optimizer(lr), num_warmup_steps=warmup, num_training_steps=total,
                        scheduler_specific_kwargs=schedules._kwargs(kwargs))
    want = lrs(ref, total)
    got = lrs(schedules.build(optimizer(lr), name, lr, 0.1, total, kwargs), total)
    assert got[warmup:] == want[warmup:]
    assert got[:warmup] == want[1:warmup + 1]  # the warm-up one step ahead


def test_cosine_shape_and_constant_ignores_the_warmup():
    got = lrs(schedules.build(optimizer(1.0), "cosine", 1.0, 0.0, 10), 10)
    assert got == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 10)) for s in range(10)])
    assert lrs(schedules.build(optimizer(1.0), "constant", 1.0, 0.3, 10), 10) == [1.0] * 10


@pytest.mark.parametrize("name, kwargs", [("linear", None), ("cosine_with_restarts", {"num_cycles": 2})])
def test_resume_from_the_json_state_continues_exactly(name, kwargs):
    """What checkpoint.save/load do: state_dict through JSON into a scheduler rebuilt from the config."""
    first = schedules.build(optimizer(), name, 1e-2, 0.1, 30, kwargs)
    lrs(first, 11)
    saved = json.loads(json.dumps(first.state_dict()))
    resumed = schedules.build(optimizer(), name, 1e-2, 0.1, 30, kwargs)
    resumed.load_state_dict(saved)
    for group, lr in zip(resumed.optimizer.param_groups, resumed.get_last_lr()):
        group["lr"] = lr  # as checkpoint.load does
    assert lrs(resumed, 19) == lrs(first, 19)


@pytest.mark.parametrize("override, message", [
    ("train.lr_scheduler=cosin", "train.lr_scheduler: unknown schedule 'cosin' (known: linear, cosine,"),
    ("train.lr_scheduler=reduce_lr_on_plateau", "it steps on a dev metric, not on the step count"),
    ("train.lr_scheduler=warmup_stable_decay", "train.lr_scheduler_kwargs: schedule 'warmup_stable_decay' refuses {}"),
    ("train.lr_scheduler_kwargs={num_cycle: 2}", "train.lr_scheduler_kwargs: schedule 'linear' refuses {'num_cycle': 2.0}"),
])
def test_a_bad_schedule_is_one_line_at_load(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_epochs_to_steps():
    assert schedules.steps_for_epochs(1, 100, 32) == 4  # the partial last batch is a step
    assert schedules.steps_for_epochs(3, 96, 32) == 9
    assert schedules.steps_for_epochs(0.5, 100, 8) == 7
    assert schedules.steps_for_epochs(0.001, 10, 32) == 1


@pytest.mark.parametrize("overrides, message", [
    (["train.epochs=3"], "train.epochs: set either train.max_steps or train.epochs, not both (max_steps is 600; "
                         "train by epochs with train.max_steps=null train.epochs=3)"),
    (["train.max_steps=null"], "train.max_steps: null, and train.epochs is not set either: set one of them"),
    (["train.max_steps=null", "train.epochs=0"], "train.epochs: must be > 0, got 0"),
    (["train.early_stopping_patience=2", "train.eval_every=0"], "train.early_stopping_patience: counts evaluations"),
])
def test_length_and_patience_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)


def test_by_epochs_max_steps_is_null():
    cfg = load_config(None, ["train.max_steps=null", "train.epochs=2.5"])
    assert cfg.train.max_steps is None and cfg.train.epochs == 2.5
