"""Checkpoints in this process (one ZeRO-3 rank): a round trip restores every trainable value and
Adam moment exactly; a save killed half-way never becomes ``latest``."""
import pytest
import torch

from deepprompt.engine import checkpoint
from tests.tiny import build_zero3, save_tiny, train_steps


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    run, built, task = build_zero3(save_tiny("bert", tmp_path_factory.mktemp("bert")),
                                   f"output_dir={tmp_path_factory.mktemp('out')}")
    train_steps(built, task, 3)
    return run, built


def _snapshot(built):
    return {f"{k}/{n}": checkpoint._get_full(built.engine, p, k)
            for n, p in checkpoint._trainable(built.model) for k in (None, *checkpoint.MOMENTS)}


def test_round_trip_is_exact(setup):
    run, built = setup
    before = _snapshot(built)
    path = checkpoint.save(built.engine, built.model, run, 3, {"note": "x"}, keep=2)
    assert checkpoint.find_latest(run.output_dir) == path
    for _, p in checkpoint._trainable(built.model):  # scribble over everything
        for k in (None, *checkpoint.MOMENTS):
            checkpoint._set_full(built.engine, p, k, torch.full(tuple(p.ds_shape), 7.0))
    state = checkpoint.load(built.engine, built.model, path)
    after = _snapshot(built)
    assert state["step"] == 3 and state["note"] == "x" and state["optimizer_steps"] == 3
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_save_killed_half_way_never_becomes_latest(setup, monkeypatch):
    run, built = setup
    good = checkpoint.save(built.engine, built.model, run, 5, {}, keep=2)

    def crash(tensors, filename):
        open(filename, "wb").write(b"partial")
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(built.engine, built.model, run, 6, {}, keep=2)
    assert checkpoint.find_latest(run.output_dir) == good
    monkeypatch.undo()
    checkpoint.save(built.engine, built.model, run, 7, {}, keep=2)
    root = checkpoint.checkpoint_root(run.output_dir)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000005", "step_00000007"]


def test_a_multi_task_signature_refuses_a_changed_mixture_but_allows_moved_data(tmp_path):
    from deepprompt.config import load_config
    from deepprompt.errors import ConfigError

    base = ["tasks=[{name: wnut16, data_dir: /a}, {name: rte, data_dir: /b}]", "mixer.policy=equal"]
    saved = checkpoint.signature(load_config(None, base))
    assert "tasks[1].name" in saved and "tasks[1].data_dir" not in saved and saved["mixer.policy"] == "equal"
    checkpoint.check_compatible(saved, load_config(None, [*base, "tasks.rte.data_dir=/c"]), tmp_path)
    for change, key in ((["mixer.policy=proportional"], "mixer.policy ('equal' -> 'proportional')"),
                        (["tasks.1.max_seq_length=64"], "tasks[1].max_seq_length (128 -> 64)"),
                        (["tasks=[{name: wnut16, data_dir: /a}]", "mixer.policy=equal"], "tasks[1].name ('rte' -> None)")):
        with pytest.raises(ConfigError) as e:
            checkpoint.check_compatible(saved, load_config(None, [*base, *change]), tmp_path)
        assert key in str(e.value) and "\n" not in str(e.value)


def test_a_checkpoint_from_before_a_config_key_existed_still_resumes(tmp_path):
    from deepprompt.config import load_config

    run = load_config(None, [])
    old = {k: v for k, v in checkpoint.signature(run).items() if not k.startswith(("mixer.", "tasks", "prompt.init"))}
    checkpoint.check_compatible(old, run, tmp_path)  # the new keys at their defaults: no change
