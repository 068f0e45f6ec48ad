"""``deepprompt sweep`` end to end on a tiny random model: real runs (subprocesses), k folds, the
median pruner stopping a clearly bad trial, an interrupted worker handing its trial back, two
workers sharing one study, confirmation on a fresh seed, the report and the winner's run config."""
import json
import signal
import statistics
import subprocess
import sys
import time

import pytest

from tests.tiny import FIXTURES, REPO, launch_env, save_tiny_bert


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    """The fixture's training sentences as train, dev and test alike: what a tiny random model can
    learn in 20 steps at a sensible learning rate, so that a sensible trial and a hopeless one differ
    clearly in dev F1 (on the real held-out fixture split both stay near 0)."""
    d = tmp_path_factory.mktemp("learnable")
    for split in ("train", "dev", "test"):
        (d / split).write_text((FIXTURES / "wnut16" / "train").read_text())
    return d


def base(model, steps=20, data=FIXTURES / "wnut16"):
    return [f"model.path={model}", f"task.data_dir={data}", "prompt.length=4", "task.max_seq_length=32",
            f"train.max_steps={steps}", "train.batch_size=8", "train.micro_batch_size=4", "train.eval_every=10",
            "train.eval_batch_size=8", "train.save_every=0"]


def test_sweep_over_folds_prunes_a_bad_trial_and_reports(tiny, learnable, tmp_path, monkeypatch):
    import optuna

    from deepprompt.config import load_config
    from deepprompt.sweep.study import STRIDE, Sweep, SweepConfig

    for k, v in launch_env().items():
        monkeypatch.setenv(k, v)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    cfg = SweepConfig(dir=str(tmp_path / "s"), overrides=base(tiny, data=learnable), space=["train.lr=choice(0.1,1e-7)"],
                      seeds=[42], folds=2, trials=3, prune_startup=2)
    sweep = Sweep(cfg)
    # a sensible rate, the same configuration again (its finished runs are reused, not re-run), then a
    # rate that cannot learn anything in 20 steps
    for lr in (0.1, 0.1, 1e-7):
        sweep.study.enqueue_trial({"train.lr": lr})
    sweep.work()
    good0, good1, bad = sweep.study.get_trials()
    assert [t.state for t in (good0, good1, bad)] == [optuna.trial.TrialState.COMPLETE] * 2 + [
        optuna.trial.TrialState.PRUNED], [t.intermediate_values for t in (good0, good1, bad)]
    # the bad trial stopped inside its first run (fold 0): the second fold never started
    assert bad.user_attrs["pruned_at"]["run"] == 0 and len(bad.user_attrs.get("runs", [])) == 0
    assert max(bad.intermediate_values) < STRIDE and not (tmp_path / "s" / "runs" / bad.user_attrs["config_id"] /
                                                          "fold1-seed42").exists()
    for t in (good0, good1):
        # one run per fold; the value is the mean LAST dev score of the runs' own results.json
        runs = t.user_attrs["runs"]
        assert [r["fold"] for r in runs] == [0, 1]
        results = [json.loads((tmp_path / "s" / "runs" / t.user_attrs["config_id"] / f"fold{f}-seed42" /
                               "results.json").read_text()) for f in (0, 1)]
        assert t.value == pytest.approx(statistics.fmean(r["tasks"]["wnut16"]["last"]["dev_f1"] for r in results))
        configs = [json.loads((tmp_path / "s" / "runs" / t.user_attrs["config_id"] / f"fold{f}-seed42" /
                               "run_config.json").read_text()) for f in (0, 1)]
        assert [(c["task"]["folds"], c["task"]["fold"], c["train"]["lr"]) for c in configs] == [
            (2, 0, t.params["train.lr"]), (2, 1, t.params["train.lr"])]
        # every dev evaluation of both runs was reported, the second run's after the first's
        assert sorted(t.intermediate_values) == [10, 20, STRIDE + 10, STRIDE + 20]
    assert good1.user_attrs["config_id"] == good0.user_attrs["config_id"] and good1.value == good0.value
    log = tmp_path / "s" / "runs" / good0.user_attrs["config_id"] / "fold0-seed42" / "launch.log"
    assert log.read_text().count("$ ") == 1  # launched once, by trial 0
    report = tmp_path / "s" / "report"
    md = (report / "report.md").read_text()
    assert "Protocol" in md and "of run 0 by the median (best so far" in md
    table = md.split("## Trials (dev only)")[1].split("##")[0]
    assert "test" not in table  # no trial's test score is shown where the choice is made
    data = json.loads((report / "report.json").read_text())
    winner = max((good0, good1), key=lambda t: (t.value, -t.number))
    assert data["search_winner"] == data["final"] == winner.number and data["counts"]["pruned"] == 1
    assert next(r for r in data["trials"] if r["number"] == bad.number)["value"] is None  # not a score
    assert load_config(str(report / "winner.yaml")).train.lr == winner.params["train.lr"]
    for png in ("history.png", "score_train_lr.png"):
        assert (report / png).stat().st_size > 1000


def test_interrupted_sweep_continues_with_two_workers_sharing_the_study(tiny, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    d = tmp_path / "s"
    cmd = [sys.executable, "-m", "deepprompt", "sweep", "--dir", str(d), "--space", "train.lr=loguniform(1e-2,5e-2)",
           "--space", "prompt.length=choice(2,4)", "--trials", "4", "--sampler", "random", "--no-prune",
           "--confirm-seeds", "7", *base(tiny, steps=40)]
    env = launch_env()
    a = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:  # stop worker A while its second trial's run is training (past step 1)
        runs = sorted((d / "runs").glob("*/all-seed42")) if (d / "runs").is_dir() else []
        finished = [r for r in runs if (r / "results.json").is_file()]
        training = [r for r in runs if r not in finished and (r / "train_log.jsonl").is_file()
                    and len((r / "train_log.jsonl").read_text().splitlines()) >= 2]
        if len(finished) == 1 and len(training) == 1:
            break
        time.sleep(0.2)
    else:
        a.kill()
        pytest.fail(f"worker A never reached its second trial's training: {runs}")
    a.send_signal(signal.SIGTERM)
    _, err_a = a.communicate(timeout=120)
    assert a.returncode == 75 and "handed back" in err_a, err_a[-2000:]

    workers = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outs]

    study = optuna.load_study(study_name="sweep", storage=JournalStorage(JournalFileBackend(str(d / "study.journal"))))
    trials = study.get_trials()
    handed = [t for t in trials if t.user_attrs.get("handed_back")]
    assert len(handed) == 1 and handed[0].state == optuna.trial.TrialState.FAIL
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == handed[0].number)
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == handed[0].params
    # the retry continued the interrupted run from the checkpoint it saved on SIGTERM
    res = json.loads((d / "runs" / retry.user_attrs["config_id"] / "all-seed42" / "results.json").read_text())
    assert res["resumed_from"] and res["resumed_from"] > 0
    done = [t for t in trials if not t.user_attrs.get("handed_back")]
    assert len(done) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    pids = {str(w.pid) for w in workers}
    after = {t.user_attrs["worker"].split(":")[1] for t in done if t.number > handed[0].number}
    assert after == pids  # both workers ran trials of the one study
    best = max(done, key=lambda t: (t.value, -t.number))
    confirm = json.loads(next((d / "confirm").glob("*/all-seed7/results.json")).read_text())
    assert confirm["seed"] == 7 and confirm["tasks"]["wnut16"]
    report = json.loads((d / "report" / "report.json").read_text())
    assert report["final"] == best.number and len(report["confirmed"][0]["runs"]) == 1


@pytest.mark.multirank
def test_a_trial_runs_on_two_ranks(tiny, tmp_path):
    d = tmp_path / "s"
    out = subprocess.run([sys.executable, "-m", "deepprompt", "sweep", "--dir", str(d), "--ranks", "2",
                          "--space", "train.lr=uniform(0.01,0.03)", "--trials", "1", *base(tiny, steps=10)],
                         cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (res,) = [json.loads(p.read_text()) for p in (d / "runs").glob("*/all-seed42/results.json")]
    assert res["world_size"] == 2 and (d / "report" / "winner.yaml").is_file()
