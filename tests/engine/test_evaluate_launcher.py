"""launcher/evaluate.py on a saved artifact reproduces the metrics of the model that was saved, on
1 rank and on 2 ranks through the real DeepSpeed launcher."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deepprompt.artifacts import save_artifact
from deepprompt.engine.evaluate import evaluate
from tests.tiny import REPO, build_zero3, save_tiny_bert, train_steps, free_port, launch_env

VENV_BIN = os.path.dirname(sys.executable)
SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A prefix trained 40 steps under ZeRO-3 in this process, its metrics, and its artifact."""
    root = tmp_path_factory.mktemp("eval")
    path = save_tiny_bert(root / "bert")
    cfg, built, task = build_zero3(path, "train.eval_batch_size=8", "train.lr=1e-1", "train.warmup_ratio=0",
                                   "train.max_steps=1000", f"output_dir={root / 'run'}")
    train_steps(built, task, 40)
    metrics = {split: evaluate(built.engine, task, split, 8) for split in SPLITS}
    art = save_artifact(built.engine, cfg, [task], str(path), root / "run" / "artifact", extra={"metrics": metrics})
    return root, path, art, metrics


def _check(results_path, metrics, world):
    r = json.loads(results_path.read_text())
    assert r["world_size"] == world and r["task"] == "wnut16" and r["method"] == "prefix"
    assert r["metrics"] == metrics


def test_evaluate_one_rank(trained):
    root, _, art, metrics = trained
    assert metrics["train"]["f1"] > 0  # something learned, so the comparison means something
    out = root / "eval1"
    proc = subprocess.run([sys.executable, "launcher/evaluate.py", "--artifact", str(art), "--ds_config",
                           "ds_configs/zero3.json", "--splits", ",".join(SPLITS), f"output_dir={out}"],
                          cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check(out / "eval_results.json", metrics, 1)
    assert "wnut16 dev | f1" in proc.stderr


def test_evaluate_refuses_another_backbone(trained, tmp_path):
    _, _, art, _ = trained
    other = save_tiny_bert(tmp_path / "other", num_layers=3)
    proc = subprocess.run([sys.executable, "launcher/evaluate.py", "--artifact", str(art), f"model.path={other}",
                           f"output_dir={tmp_path}"], cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.startswith("deepprompt: error:")]
    assert len(lines) == 1 and "was made on" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.multirank
def test_evaluate_two_ranks_through_the_launcher(trained):
    root, _, art, metrics = trained
    out = root / "eval2"
    cmd = [os.path.join(VENV_BIN, "deepspeed"), "--hostfile", "hostfile.example", "--no_ssh_check",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "launcher/evaluate.py", "--artifact", str(art), "--ds_config", "ds_configs/zero3.json",
           "--splits", ",".join(SPLITS), f"output_dir={out}"]
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check(out / "eval_results.json", metrics, 2)


def test_evaluate_defaults_to_every_split_but_train(trained):
    root, _, art, metrics = trained
    out = root / "eval_default"
    proc = subprocess.run([sys.executable, "launcher/evaluate.py", "--artifact", str(art), f"output_dir={out}"],
                          cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = json.loads((out / "eval_results.json").read_text())["metrics"]
    assert scored == {k: v for k, v in metrics.items() if k != "train"} and set(scored) == {"dev", "test"}


def test_an_output_dir_under_a_file_is_one_line_before_anything_loads(tmp_path, monkeypatch):
    """It was checked only when eval_results.json was written, after the whole evaluation."""
    from deepprompt.artifacts import save_artifact as save
    from deepprompt.engine import inference, setup
    from deepprompt.errors import ConfigError
    from tests.artifact_utils import plain_model, run_config

    path = save_tiny_bert(tmp_path / "bert")
    run = run_config(path)
    model, task = plain_model(run)
    art = save(model, run, [task], str(path), tmp_path / "artifact")
    (tmp_path / "notes").write_text("mine")

    def loads(*a, **k):
        raise AssertionError("data and weights were loaded before output_dir was checked")

    monkeypatch.setattr(setup, "for_evaluation", loads)
    with pytest.raises(ConfigError, match=rf"^output_dir: {tmp_path / 'notes'}: is a file, not a directory"):
        inference.evaluate_artifact(str(art), "ds_configs/zero3.json", [f"output_dir={tmp_path / 'notes'}"])


def test_a_multi_task_artifact_is_evaluated_on_the_chosen_tasks_own_section(tmp_path):
    """The run's ``task`` section of a multi-task run is only the shared defaults: evaluating with it
    read the default data and length, not those the head trained on."""
    from types import SimpleNamespace

    from deepprompt.config import load_config
    from deepprompt.engine.inference import run_config_from_artifact
    from deepprompt.errors import ConfigError

    run = load_config(None, ["tasks=[{name: wnut16, max_seq_length: 48, data_dir: /data/w}, "
                             "{name: conll03, max_seq_length: 96, data_dir: /data/c}]",
                             "mixer.policy=weights", "mixer.weights={wnut16: 2, conll03: 1}"])
    art = SimpleNamespace(description={"run": run.to_dict()}, path=tmp_path / "artifact")
    for overrides, says in [([], "choose one with task.name=<name>"),
                            (["task.name=squad"], "task.name=squad is not one of them")]:
        with pytest.raises(ConfigError) as e:
            run_config_from_artifact(art, overrides)
        assert str(e.value) == f"task.name: artifact {tmp_path / 'artifact'} was trained on 2 tasks (wnut16, conll03): {says}"
    one = run_config_from_artifact(art, ["task.name=conll03", "task.data_dir=/elsewhere"])
    assert (one.task.name, one.task.max_seq_length, one.task.data_dir) == ("conll03", 96, "/elsewhere")
    assert one.tasks is None and one.mixer.policy == "proportional"
    assert run_config_from_artifact(art, ["task.name=wnut16"]).task.max_seq_length == 48
    with pytest.raises(ConfigError, match=r"^tasks.conll03.data_dir: the chosen task is rebuilt as the run's one "
                                          r"task: write task.data_dir=\.\.\. \(with task.name=<name>\)$"):
        run_config_from_artifact(art, ["task.name=conll03", "tasks.conll03.data_dir=/x"])
