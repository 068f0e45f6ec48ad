"""Checkpoints in this process (one ZeRO-3 rank): a round trip restores every trainable value and
Adam moment exactly; a save killed half-way never becomes ``latest``."""
import json
import re

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

    from deepprompt.errors import ConfigError

    run = load_config(None, [])
    old = {k: v for k, v in checkpoint.signature(run).items() if not k.startswith(("mixer.", "tasks", "prompt.init"))}
    assert "mixer.policy" in checkpoint.signature(run) and "mixer.policy" not in old  # the old one lacks the key
    assert checkpoint.check_compatible(old, run, tmp_path) is None  # the new keys at their defaults: no change
    # a missing key counts as its default, not as "anything": a run that sets it otherwise is refused
    with pytest.raises(ConfigError, match=r"mixer.policy \('proportional' -> 'equal'\)"):
        checkpoint.check_compatible(old, load_config(None, ["mixer.policy=equal"]), tmp_path)


# ----------------------------------------------------------------------------- bad files never lose work

def _fake(root, step):
    """A checkpoint that reads (state.json + a whole safetensors file), as ``save`` lays it out."""
    from safetensors.torch import save_file

    path = root / f"step_{step:08d}"
    path.mkdir(parents=True)
    (path / checkpoint.STATE).write_text(json.dumps({"step": step, "signature": {}}))
    save_file({"param/x": torch.full((4,), float(step))}, str(path / checkpoint.TENSORS))
    return path


def _three(tmp_path, latest=b"step_00000009\n"):
    root = tmp_path / checkpoint.CKPT_DIR
    paths = [_fake(root, s) for s in (3, 6, 9)]
    if latest is not None:
        (root / checkpoint.LATEST).write_bytes(latest)
    return root, paths


@pytest.mark.parametrize("latest, problem", [
    (b"\xff\xfestep_00000009\n", r"latest:1: not UTF-8 text \(byte 0xff at byte offset 0\)"),
    (b"", r"latest: empty"),
    (b"step_00000042\n", r"latest: names 'step_00000042', which is no checkpoint in "),
    (b"../../elsewhere\n", r"latest: names '../../elsewhere', which is no checkpoint in "),
    ("dir", r"latest: is a directory, expected a file"),
    (None, r"latest: missing"),
])
def test_a_bad_latest_resumes_from_the_newest_checkpoint_that_reads(tmp_path, latest, problem):
    root, paths = _three(tmp_path, latest=None if latest == "dir" else latest)
    if latest == "dir":
        (root / checkpoint.LATEST).mkdir()
    found = checkpoint.find_resumable(tmp_path)
    assert found.path == paths[-1] and not found.unusable
    assert len(found.problems) == 1 and re.search(problem, found.problems[0]), found.problems


def test_an_unreadable_latest_names_the_reason(tmp_path, monkeypatch):
    from pathlib import Path

    root, paths = _three(tmp_path)
    real = Path.read_bytes

    def denied(self):  # (the tests run as root: chmod would not stop them)
        if self.name == checkpoint.LATEST:
            raise PermissionError(13, "Permission denied")
        return real(self)
    monkeypatch.setattr(Path, "read_bytes", denied)
    found = checkpoint.find_resumable(tmp_path)
    assert found.path == paths[-1] and found.problems == [f"{root / 'latest'}: cannot read it (Permission denied)"]


@pytest.mark.parametrize("damage, problem", [
    ("truncate tensors", r"trainable.safetensors: not a readable safetensors file \(incomplete metadata"),
    ("corrupt state", r"state.json:1: not valid JSON"),
    ("state not UTF-8", r"state.json:1: not UTF-8 text"),
    ("no state", r"state.json: file not found"),
])
def test_a_checkpoint_that_does_not_read_falls_back_to_the_next_older(tmp_path, damage, problem):
    root, paths = _three(tmp_path)
    bad = paths[-1]
    if damage == "truncate tensors":
        f = bad / checkpoint.TENSORS
        f.write_bytes(f.read_bytes()[:-8])
    elif damage == "corrupt state":
        (bad / checkpoint.STATE).write_text('{"step": 9, ')
    elif damage == "state not UTF-8":
        (bad / checkpoint.STATE).write_bytes(b"\xff")
    else:
        (bad / checkpoint.STATE).unlink()
    found = checkpoint.find_resumable(tmp_path)
    assert found.path == paths[1] and list(found.unusable) == [bad]
    assert len(found.problems) == 1 and re.search(problem, found.problems[0]) and "\n" not in found.problems[0]


def _resume_point(tmp_path, *overrides):
    from deepprompt.config import load_config
    from deepprompt.engine import comm

    comm.init_distributed()
    return checkpoint.resume_point(load_config(None, [f"output_dir={tmp_path}", *overrides]))


def test_resume_sets_an_unreadable_checkpoint_aside_and_warns(tmp_path, caplog, monkeypatch):
    root, paths = _three(tmp_path, latest=b"")
    (paths[-1] / checkpoint.TENSORS).write_bytes(b"")  # step 9: an empty tensor file
    monkeypatch.setattr(checkpoint, "check_compatible", lambda *a: None)  # (the fakes carry no signature)
    with caplog.at_level("WARNING", logger="deepprompt"):
        assert _resume_point(tmp_path) == paths[1]
    warning = caplog.records[0].getMessage()
    assert warning.startswith(f"resume: {root / 'latest'}: empty; {paths[-1] / checkpoint.TENSORS}: not a readable")
    assert warning.endswith(f"; resuming from {paths[1]}")
    # nothing deleted: step 9 is kept under a name that finding, saving and pruning never touch
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000003", "step_00000006",
                                                      "step_00000009.unreadable"]


def test_resume_refuses_when_no_checkpoint_reads_instead_of_starting_over(tmp_path):
    from deepprompt.errors import ConfigError

    root, paths = _three(tmp_path)
    for p in paths:
        (p / checkpoint.STATE).write_text("{")
    with pytest.raises(ConfigError) as e:
        _resume_point(tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"cannot resume: no checkpoint in {root} reads ({paths[2] / checkpoint.STATE}:1: not valid")
    assert msg.endswith("or start fresh with train.resume=never (which deletes them)") and "\n" not in msg
    assert all(p.is_dir() for p in paths)  # untouched


def test_pruning_removes_only_checkpoints_older_than_the_one_written(tmp_path):
    root, paths = _three(tmp_path)
    aside = _fake(root, 12).rename(root / "step_00000012.unreadable")
    checkpoint.prune(root, 2, paths[1])  # just wrote step 6 (e.g. after falling back from a newer one)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000003", "step_00000006", "step_00000009",
                                                      aside.name]
    checkpoint.prune(root, 1, paths[1])
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000006", "step_00000009", aside.name]


def test_a_checkpoint_from_before_the_task_family_keys_moved_still_resumes(tmp_path):
    """Before, every task section carried the QA/custom keys at their defaults (config.LEGACY_TASK_DEFAULTS)."""
    from deepprompt.config import load_config
    from deepprompt.config.sections import LEGACY_TASK_DEFAULTS
    from deepprompt.errors import ConfigError

    run = load_config(None, [])
    old = {**checkpoint.signature(run), **{f"task.{k}": v for k, v in LEGACY_TASK_DEFAULTS.items()}}
    assert "task.doc_stride" not in checkpoint.signature(run)
    assert checkpoint.check_compatible(old, run, tmp_path) is None
    old["task.doc_stride"] = 16  # a value of its own was part of that run: not the same run
    with pytest.raises(ConfigError, match=r"task.doc_stride \(16 -> None\)"):
        checkpoint.check_compatible(old, run, tmp_path)


# ----------------------------------------------------------------------------- without ZeRO: quick

def _plain(seed: int = 0, out: int = 3):
    """A torch model and a stand-in for its engine (no ZeRO: the optimizer holds the tensors), one
    Adam step taken so the moments exist."""
    from types import SimpleNamespace

    torch.manual_seed(seed)
    model = torch.nn.Linear(2, out)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    return model, SimpleNamespace(optimizer=opt, lr_scheduler=None)


def _saved(tmp_path, step=3, state=None, keep=2):
    from deepprompt.config import load_config

    run = load_config(None, [f"output_dir={tmp_path}"])
    model, engine = _plain()
    full = {"mixer": {}, "progress": {}, **(state or {})}
    return run, checkpoint.save(engine, model, run, step, full, keep=keep)


def _rewrite_tensors(path, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / checkpoint.TENSORS))
    change(tensors)
    save_file(tensors, str(path / checkpoint.TENSORS))


@pytest.mark.parametrize("damage, problem", [
    (lambda p: _rewrite_tensors(p, lambda t: t.pop("exp_avg_sq/weight")),
     r": has no Adam exp_avg_sq of 'weight' \(a different prompt method or task\?\)"),
    (lambda p: _rewrite_tensors(p, lambda t: t.pop("param/bias")),
     r": has no trainable parameter 'bias' \(a different prompt method or task\?\)"),
    (lambda p: _rewrite_tensors(p, lambda t: t.update({"exp_avg/bias": torch.zeros(5)})),
     r": Adam exp_avg of 'bias' has shape \(5,\), the model wants \(3,\) \(another backbone.*\)"),
    (lambda p: _rewrite_tensors(p, lambda t: t.update({"param/weight": torch.zeros(4, 2)})),
     r": weight has shape \(4, 2\), the model wants \(3, 2\) \(another backbone, prompt "
     r"length or number of layers\?\)"),
    (lambda p: (p / checkpoint.STATE).write_text(json.dumps(
        {k: v for k, v in json.loads((p / checkpoint.STATE).read_text()).items() if k != "optimizer_steps"})),
     r"/state.json: has no 'optimizer_steps' \(not a checkpoint this deepprompt wrote\)"),
])
def test_load_checks_every_tensor_and_state_key_before_restoring_any(tmp_path, damage, problem):
    """A checkpoint of another model or prompt shape, or one missing a moment or a state key: one
    line naming the file, and the model untouched (nothing is restored before everything is checked)."""
    _, path = _saved(tmp_path)
    damage(path)
    model, engine = _plain(seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(checkpoint.ConfigError, match=rf"^{path}{problem}; move it out of the way to resume from "
                                                     r"an older one, or start fresh with train.resume=never$"):
        checkpoint.load(engine, model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_state_keys_the_trainer_reads_are_checked_in_one_line(tmp_path):
    """The trainer's own keys (its progress; the mixer, or an older checkpoint's sampler)."""
    needed = ("progress", ("mixer", "sampler"))
    checkpoint.missing_state(tmp_path, {"progress": {}, "sampler": {}}, needed)  # an older checkpoint
    with pytest.raises(checkpoint.ConfigError, match=r"state.json: has no 'progress', 'mixer' \(not a checkpoint "
                                                     r"this deepprompt wrote\); move it out of the way"):
        checkpoint.missing_state(tmp_path, {"step": 3}, needed)


def test_a_plain_round_trip_restores_the_moments(tmp_path):
    _, path = _saved(tmp_path)
    ref, ref_engine = _plain()
    model, engine = _plain(seed=1)
    state = checkpoint.load(engine, model, path)
    assert state["step"] == 3 and torch.equal(model.weight, ref.weight)
    for p, q in zip(model.parameters(), ref.parameters()):
        for key in checkpoint.MOMENTS:
            assert torch.equal(engine.optimizer.state[p][key], ref_engine.optimizer.state[q][key])


def test_a_state_json_whose_step_or_signature_has_another_type_does_not_read(tmp_path):
    path = _fake(tmp_path / checkpoint.CKPT_DIR, 3)
    (path / checkpoint.STATE).write_text(json.dumps({"step": "3", "signature": []}))
    assert re.search(r"state.json: not a checkpoint's state \(step '3', signature not an object\)",
                     checkpoint.unreadable(path))


def test_saving_a_step_again_killed_between_its_renames_loses_nothing(tmp_path, monkeypatch):
    """A resumed run saves its last step again: the earlier copy moves aside in one rename, then the
    new one comes in. Killed between the two, ``latest`` names a missing checkpoint; the next resume
    puts the (complete) new copy in place instead of falling back to an older step or to step 0."""
    import os

    run, first = _saved(tmp_path, 3, {"note": "first"}, keep=1)
    real = os.replace

    def killed(src, dst):
        if os.path.basename(src).startswith(checkpoint.TMP + "step_"):
            raise KeyboardInterrupt  # the process dies between moving the old copy and renaming the new
        return real(src, dst)
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _saved(tmp_path, 3, {"note": "second"}, keep=1)
    monkeypatch.undo()
    assert not first.exists()
    assert _resume_point(tmp_path) == first
    assert checkpoint.read_state(first)["note"] == "second"
    _saved(tmp_path, 4, keep=1)  # the next save clears what the killed one left
    assert sorted(p.name for p in first.parent.iterdir()) == ["latest", "step_00000004"]


def test_saving_a_step_again_replaces_it(tmp_path):
    _saved(tmp_path, 3, {"note": "first"})
    _, path = _saved(tmp_path, 3, {"note": "second"})
    assert checkpoint.read_state(path)["note"] == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest", "step_00000003"]


@pytest.mark.parametrize("resume", ["auto", "never"])
def test_a_file_where_the_checkpoints_directory_goes_is_refused_before_training(tmp_path, resume):
    (tmp_path / checkpoint.CKPT_DIR).write_text("not a directory")
    with pytest.raises(checkpoint.ConfigError, match=rf"^{tmp_path / checkpoint.CKPT_DIR}: is a file, but the run "
                                                     r"keeps its checkpoints in a directory there; move it away$"):
        _resume_point(tmp_path, f"train.resume={resume}")
    assert (tmp_path / checkpoint.CKPT_DIR).read_text() == "not a directory"
