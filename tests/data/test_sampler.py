import pytest

from deepprompt.data.sampler import ShardedSampler, eval_shard
from deepprompt.errors import ConfigError


def test_ranks_read_disjoint_examples_each_epoch():
    samplers = [ShardedSampler(50, 2, r, 4, seed=1) for r in range(2)]
    per_rank = [[i for _ in range(6) for i in s.next()] for s in samplers]  # 6 micro-steps x 8 = 48 <= 50
    assert not set(per_rank[0]) & set(per_rank[1])
    assert all(len(set(p)) == 24 for p in per_rank)


def test_world_size_does_not_change_what_a_step_reads():
    # global batch 8: 2 ranks x micro 4 x accum 1  ==  1 rank x micro 4 x accum 2
    two = [ShardedSampler(40, 2, r, 4, seed=5) for r in range(2)]
    one = ShardedSampler(40, 1, 0, 4, seed=5)
    for _ in range(12):  # crosses epoch boundaries
        assert sorted(two[0].next() + two[1].next()) == sorted(one.next() + one.next())
    assert two[0].state_dict() == two[1].state_dict() == one.state_dict()


def test_same_seed_same_stream_and_state_resumes_exactly():
    a, b = ShardedSampler(30, 2, 0, 4, seed=3), ShardedSampler(30, 2, 0, 4, seed=3)
    first = [a.next() for _ in range(5)]
    assert first == [b.next() for _ in range(5)]
    state = a.state_dict()
    rest = [a.next() for _ in range(7)]
    c = ShardedSampler(30, 2, 0, 4, seed=3)
    c.load_state_dict(state)
    assert [c.next() for _ in range(7)] == rest


def test_epochs_reshuffle():
    s = ShardedSampler(16, 1, 0, 4, seed=0)
    e0 = [i for _ in range(4) for i in s.next()]
    e1 = [i for _ in range(4) for i in s.next()]
    assert sorted(e0) == sorted(e1) == list(range(16)) and e0 != e1


def test_too_few_examples_is_a_config_error():
    with pytest.raises(ConfigError, match="fewer than one micro-step"):
        ShardedSampler(5, 2, 0, 4, seed=0)


def test_eval_shards_cover_everything_once_with_equal_batch_counts():
    shards = [eval_shard(11, 3, r, 2) for r in range(3)]
    assert len({len(s) for s in shards}) == 1  # same number of forwards on every rank
    real = sorted(i for s in shards for b in s for i in b if i >= 0)
    assert real == list(range(11))
