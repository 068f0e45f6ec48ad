"""The multi-task mixer: rates per policy, draws that depend only on (seed, step) and so agree on
every rank and after a restart, per-task shards, and state that round-trips through JSON."""
import json
from collections import Counter

import pytest

from deepprompt.config import MixerConfig
from deepprompt.data.mixer import TaskMixer, mixing_rates
from deepprompt.data.sampler import ShardedSampler

NAMES = ["ner", "qa", "cls"]
SIZES = [4000, 1000, 250]


@pytest.mark.parametrize("cfg, expected", [
    (MixerConfig("proportional"), [4000 / 5250, 1000 / 5250, 250 / 5250]),
    (MixerConfig("proportional", cap=1000), [1000 / 2250, 1000 / 2250, 250 / 2250]),
    # sqrt(4000) : sqrt(1000) : sqrt(250) = 2 : 1 : 0.5
    (MixerConfig("temperature", temperature=2.0), [2 / 3.5, 1 / 3.5, 0.5 / 3.5]),
    # cap 1000 first: sqrt(1000) : sqrt(1000) : sqrt(250) = 2 : 2 : 1
    (MixerConfig("temperature", temperature=2.0, cap=1000), [0.4, 0.4, 0.2]),
    (MixerConfig("equal"), [1 / 3] * 3),
    (MixerConfig("weights", weights={"ner": 1.0, "qa": 3.0, "cls": 0.0}), [0.25, 0.75, 0.0]),
])
def test_rates_by_policy(cfg, expected):
    assert mixing_rates(SIZES, NAMES, cfg) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("cfg, sizes, expected", [
    # a small T raises the sizes to a large power: 4000^100 overflows a float, the ratios do not
    (MixerConfig("temperature", temperature=0.01), [4000, 1000], [1.0, 0.0]),
    (MixerConfig("temperature", temperature=0.5), [2 ** 600, 2 ** 599], [0.8, 0.2]),
    # weights whose sum overflows to inf gave every task rate 0 and drew the last task every step
    (MixerConfig("weights", weights={"a": 1e308, "b": 1e308}), [10, 10], [0.5, 0.5]),
])
def test_rates_do_not_overflow(cfg, sizes, expected):
    assert mixing_rates(sizes, ["a", "b"], cfg) == pytest.approx(expected, abs=1e-12)
    draws = Counter(TaskMixer(["a", "b"], sizes, cfg, 1, 1, 0, 1).task_at(s) for s in range(400))
    assert all(draws[i] > 0 for i, r in enumerate(expected) if r > 0.1)


@pytest.mark.parametrize("cfg", [
    MixerConfig("proportional"), MixerConfig("proportional", cap=1000), MixerConfig("temperature", temperature=3.0),
    MixerConfig("equal"), MixerConfig("weights", weights={"ner": 1.0, "qa": 3.0, "cls": 0.0}),
])
def test_empirical_frequencies_match_the_policy(cfg):
    mixer = TaskMixer(NAMES, SIZES, cfg, seed=42, world=1, rank=0, micro_batch=1)
    n = 20_000
    counts = Counter(mixer.task_at(step) for step in range(1, n + 1))
    for i, rate in enumerate(mixer.rates):
        # 4 standard deviations of a binomial proportion at n = 20000 is at most 0.0142
        assert abs(counts[i] / n - rate) < 0.0142, (cfg.policy, NAMES[i], counts[i] / n, rate)
    if cfg.policy == "weights":
        assert counts[2] == 0  # a zero weight is never drawn


def _run(mixer: TaskMixer, steps, micro_steps: int = 2):
    """(task, [micro-batches]) per step, as the trainer reads them."""
    out = []
    for step in steps:
        t = mixer.start_step(step)
        out.append((t, [mixer.next_micro_batch() for _ in range(micro_steps)]))
    return out


def test_every_rank_draws_the_same_tasks_and_reads_its_own_shard():
    world, micro = 3, 2
    cfg = MixerConfig("equal")
    runs = [_run(TaskMixer(NAMES, [30, 20, 12], cfg, 7, world, r, micro), range(1, 61)) for r in range(world)]
    tasks = [[t for t, _ in run] for run in runs]
    assert tasks[0] == tasks[1] == tasks[2] and len(set(tasks[0])) == 3
    # in every micro-step the ranks read disjoint slices of the same task
    for step in range(60):
        for m in range(2):
            slices = [set(runs[r][step][1][m]) for r in range(world)]
            assert all(len(s) == micro for s in slices) and len(set().union(*slices)) == world * micro


def test_a_task_reads_its_data_like_a_plain_sampler_advancing_only_when_drawn():
    cfg = MixerConfig("proportional")
    mixer = TaskMixer(NAMES, [30, 20, 12], cfg, 5, world=2, rank=1, micro_batch=2)
    run = _run(mixer, range(1, 41))
    plain = [ShardedSampler(n, 2, 1, 2, 5 + 7919 * i) for i, n in enumerate([30, 20, 12])]
    for t, batches in run:
        assert batches == [plain[t].next() for _ in batches]


def test_a_single_task_reads_exactly_what_the_single_task_sampler_did():
    mixer = TaskMixer(["wnut16"], [40], MixerConfig(), seed=42, world=2, rank=0, micro_batch=4)
    plain = ShardedSampler(40, 2, 0, 4, 42)
    assert [b for _, bs in _run(mixer, range(1, 21)) for b in bs] == [plain.next() for _ in range(40)]


def test_a_restart_draws_and_reads_the_rest_exactly_and_state_round_trips():
    cfg = MixerConfig("temperature", temperature=2.0)
    args = (NAMES, [30, 20, 12], cfg, 11, 2, 0, 2)
    whole = TaskMixer(*args)
    expected = _run(whole, range(1, 81))
    first = TaskMixer(*args)
    head = _run(first, range(1, 38))
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores (state.json)
    assert set(state["tasks"]) == set(NAMES)
    resumed = TaskMixer(*args)
    resumed.load_state_dict(state)
    tail = _run(resumed, range(38, 81))
    assert head + tail == expected
    assert resumed.mixture()["steps"] == whole.mixture()["steps"]
    assert sum(resumed.mixture()["steps"].values()) == 80


def test_the_seed_changes_the_draws_and_mixer_seed_overrides_the_run_seed():
    a = [TaskMixer(NAMES, SIZES, MixerConfig("equal"), 1, 1, 0, 1).task_at(s) for s in range(200)]
    b = [TaskMixer(NAMES, SIZES, MixerConfig("equal"), 2, 1, 0, 1).task_at(s) for s in range(200)]
    c = [TaskMixer(NAMES, SIZES, MixerConfig("equal", seed=1), 2, 1, 0, 1).task_at(s) for s in range(200)]
    assert a != b and a == c


def test_a_pre_mixer_single_task_checkpoint_still_loads():
    mixer = TaskMixer(["wnut16"], [40], MixerConfig(), seed=42, world=1, rank=0, micro_batch=4)
    mixer.load_state_dict({"sampler": {"epoch": 2, "position": 8}}, step=25)
    assert mixer.samplers[0].state_dict() == {"epoch": 2, "position": 8} and mixer.steps_drawn == [25]


def test_resuming_with_other_tasks_is_refused():
    from deepprompt.errors import ConfigError

    mixer = TaskMixer(NAMES, SIZES, MixerConfig(), 1, 1, 0, 1)
    other = TaskMixer(["ner", "qa"], SIZES[:2], MixerConfig(), 1, 1, 0, 1)
    with pytest.raises(ConfigError, match="the checkpoint's tasks"):
        other.load_state_dict(mixer.state_dict())
