"""Best model kept and early stopping: the trainer in this process (one ZeRO-3 rank, the tiny model
really training), with dev scores scripted per step so the best step and the stop are known.

Scripted dev f1 per evaluation (every 2 steps): best at step 4, then 3 evaluations without an
improvement (6, 8, 10) end the run at step 10 of 16 with train.early_stopping_patience=3. Test f1 is
100 + the number of test evaluations so far (test is scored when dev improves, and for LAST)."""
import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from deepprompt.config import load_config
from deepprompt.engine import checkpoint
from deepprompt.engine.trainer import BEST_ARTIFACT, Trainer
from tests.tiny import FIXTURES, REPO, save_tiny

DEV_F1 = {2: 10.0, 4: 30.0, 6: 20.0, 8: 25.0, 10: 28.0, 12: 50.0, 14: 60.0, 16: 70.0}


class Killed(Exception):
    """Stands for the process dying mid-run."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny("bert", tmp_path_factory.mktemp("bert"))


@pytest.fixture(autouse=True)
def _close_rank_logs():
    yield  # each Trainer adds output_dir/logs/rank0.log to the package logger
    logger = logging.getLogger("deepprompt")
    for h in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        logger.removeHandler(h)
        h.close()


def trainer(model_dir, out, *extra) -> Trainer:
    run = load_config(None, [
        f"model.path={model_dir}", f"task.data_dir={FIXTURES / 'wnut16'}", "prompt.length=4", "task.max_seq_length=32",
        "train.max_steps=16", "train.batch_size=8", "train.micro_batch_size=8", "train.lr=3e-2", "train.eval_every=2",
        "train.save_every=2", "train.keep_checkpoints=1", "train.early_stopping_patience=3", "train.log_every=1",
        "train.verify_frozen=false", f"output_dir={out}", *extra])
    t = Trainer(run, str(REPO / "ds_configs" / "zero3.json"))

    tests = []

    def scripted(split: str) -> dict:
        if split == "test":
            tests.append(1)
            return {"wnut16": {"f1": 100.0 + len(tests)}}
        step = t.tr.eval_every * (len(t.progress.history) + 1)  # the evaluation's step
        if step == die_at.get(t):
            raise Killed
        return {"wnut16": {"f1": DEV_F1[step]}}

    t.eval_split = scripted
    return t


die_at: dict = {}


def run_to_end(t: Trainer) -> dict:
    t.loop()
    return t.finish()


def steps_logged(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_stops_early_keeps_the_best_artifact_and_its_checkpoint(model_dir, tmp_path):
    out = tmp_path / "run"
    r = run_to_end(trainer(model_dir, out))
    assert r["stopped_early"]["step"] == 10 and r["steps"] == 10 and r["max_steps"] == 16
    assert r["stopped_early"]["reason"] == ("dev f1 did not improve for 3 evaluations "
                                           "(train.early_stopping_patience=3); best 30.00 at step 4")
    assert [line["step"] for line in steps_logged(out)] == list(range(1, 11))
    assert [e["step"] for e in r["eval_history"]] == [2, 4, 6, 8, 10]  # no extra evaluation at the end
    best = r["tasks"]["wnut16"]["best_dev"]
    assert (best["step"], best["dev_f1"], best["test_f1"]) == (4, 30.0, 102.0)  # tested at steps 2 and 4
    assert r["tasks"]["wnut16"]["last"] == {"dev_f1": 28.0, "test_f1": 103.0}
    assert json.loads((out / "results.json").read_text())["stopped_early"] == r["stopped_early"]

    # keep_checkpoints=1 keeps the newest (step 10, the end) AND the best step's checkpoint
    root = checkpoint.checkpoint_root(out)
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000004", "step_00000010"]
    assert checkpoint.find_latest(out).name == "step_00000010"

    # artifact_best holds the model of step 4 (its checkpoint's values), the artifact the last step's
    assert r["artifact_best"] == str(out / BEST_ARTIFACT)
    best_art = load_file(str(out / BEST_ARTIFACT / "prompts.safetensors"))
    last_art = load_file(str(out / "artifact" / "prompts.safetensors"))
    at_4 = load_file(str(root / "step_00000004" / checkpoint.TENSORS))
    assert best_art.keys() == last_art.keys() and best_art
    assert all(torch.equal(best_art[k], at_4[f"param/{k}"]) for k in best_art)
    assert not all(torch.equal(best_art[k], last_art[k]) for k in best_art)  # it trained on after step 4
    desc = json.loads((out / BEST_ARTIFACT / "prompts.json").read_text())
    assert desc["extra"]["best_dev_step"] == 4 and desc["extra"]["metrics"] == {"dev_f1": 30.0, "test_f1": 102.0}


def test_a_resumed_run_continues_the_patience_count(model_dir, tmp_path):
    ref = run_to_end(trainer(model_dir, tmp_path / "ref"))
    out = tmp_path / "run"
    first = trainer(model_dir, out)
    die_at[first] = 8  # dies in the evaluation of step 8: the last checkpoint is step 6, one evaluation
    with pytest.raises(Killed):  # without improvement counted
        first.loop()
    first.stop.restore()
    assert checkpoint.read_state(checkpoint.find_latest(out))["progress"]["evals_without_improvement"] == 1
    r = run_to_end(trainer(model_dir, out))
    assert r["resumed_from"] == 6
    # counted from 0 again it would stop at step 12, not 10
    assert r["stopped_early"] == ref["stopped_early"] and r["steps"] == 10
    assert [x["loss"] for x in steps_logged(out)] == [x["loss"] for x in steps_logged(tmp_path / "ref")]


def test_patience_off_trains_to_max_steps(model_dir, tmp_path):
    r = run_to_end(trainer(model_dir, tmp_path / "run", "train.early_stopping_patience=0"))
    assert r["stopped_early"] is None and r["steps"] == 16
    assert r["tasks"]["wnut16"]["best_dev"]["step"] == 16


@pytest.mark.multirank
def test_two_ranks_stop_at_the_same_evaluation(model_dir, tmp_path):
    """Through the DeepSpeed launcher: an lr too small to move any fp32 value leaves every dev score
    equal to the first, so patience 2 ends the run at step 6 — on both ranks alike, or ZeRO-3 would hang."""
    import os
    import subprocess
    import sys

    from tests.tiny import free_port, launch_env

    out = tmp_path / "run"
    cmd = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "launcher/train.py", "--ds_config", "ds_configs/zero3.json",
           f"model.path={model_dir}", f"task.data_dir={FIXTURES / 'wnut16'}", "prompt.length=4", "task.max_seq_length=32",
           "train.max_steps=20", "train.batch_size=8", "train.micro_batch_size=4", "train.lr=1e-12",
           "train.eval_every=2", "train.eval_batch_size=8", "train.early_stopping_patience=2", f"output_dir={out}"]
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["stopped_early"]["step"] == 6 and r["steps"] == 6 and r["world_size"] == 2
    for rank in (0, 1):
        assert "early stopping at step 6 of 20" in (out / "logs" / f"rank{rank}.log").read_text()
    assert (out / BEST_ARTIFACT / "prompts.safetensors").is_file()


@pytest.mark.parametrize("text", ['{"extra": [4]}', "[4]", '{"extra": {"best_dev_st', ""])
def test_a_best_artifact_whose_description_is_damaged_is_not_named(tmp_path, caplog, text):
    """results.json names artifact_best only where its prompts.json says it holds the best step; one
    cut short or of another shape is that it does not (a warning), not a TypeError after training."""
    from deepprompt.engine.run_log import Progress

    t = object.__new__(Trainer)  # only what _best_artifact reads
    t.out_dir, t.rank, t.progress = tmp_path, 0, Progress()
    t.progress.best["step"] = 4
    (tmp_path / BEST_ARTIFACT).mkdir()
    (tmp_path / BEST_ARTIFACT / "prompts.json").write_text(text)
    with caplog.at_level("WARNING", logger="deepprompt"):
        assert t._best_artifact() is None
    assert "holds step None, not the best dev step 4" in caplog.text
