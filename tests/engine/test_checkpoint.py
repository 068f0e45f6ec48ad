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
