"""The sweep's own settings and its score bookkeeping, without runs."""
import argparse
import json
import subprocess
import sys

import pytest

from deepprompt.config import load_config
from deepprompt.errors import ConfigError
from deepprompt.sweep import runs
from deepprompt.sweep.study import Sweep, SweepConfig
from tests.tiny import REPO


@pytest.mark.parametrize("kw, says", [
    (dict(seeds=[42, 43], confirm_seeds=[43, 44]), "--confirm-seeds: [43] also searched"),
    (dict(space=["train.seed=choice(1,2)"]), "train.seed is set by the sweep"),
    (dict(overrides=["task.fold=1"]), "overrides: task.fold is set by the sweep"),
    (dict(folds=1), "--folds: must be >= 2"),
    (dict(trials=0), "--trials: must be >= 1"),
    (dict(prune_percentile=0), "--prune-percentile: must be in (0, 100)"),
    (dict(space=[]), "--space: give at least one searched key"),
    (dict(overrides=["train.lr=-1"]), "train.lr: must be > 0"),
    (dict(confirm_overrides=["train.max_steps=0"]), "train.max_steps"),
    (dict(overrides=["train={seed: 5, lr: 0.1}"]), "overrides: train.seed is set by the sweep"),
    (dict(confirm_overrides=[" task.fold = 1"]), "--confirm-set: task.fold is set by the sweep"),
    (dict(startup_trials=-1), "--startup-trials: must be >= 0, got -1"),
    (dict(prune_startup=-1), "--prune-startup: must be >= 0, got -1"),
    (dict(prune_warmup=-5), "--prune-warmup: must be >= 0, got -5"),
    (dict(stale_after_min=0.0), "--stale-after: must be a positive number of minutes, got 0.0"),
    (dict(stale_after_min=float("nan")), "--stale-after: must be a positive number of minutes, got nan"),
])
def test_bad_settings_are_one_line(kw, says, tmp_path):
    cfg = SweepConfig(**{"dir": str(tmp_path / "s"), "space": ["train.lr=loguniform(1e-3,1e-1)"], **kw})
    with pytest.raises(ConfigError) as e:
        cfg.check()
    assert says in str(e.value) and "\n" not in str(e.value)


def test_workers_of_one_directory_must_run_the_same_sweep(tmp_path):
    base = dict(dir=str(tmp_path / "s"), space=["train.lr=loguniform(1e-3,1e-1)"], seeds=[42], trials=4)
    Sweep(SweepConfig(**base))
    Sweep(SweepConfig(**{**base, "trials": 8}))  # the budget may grow; the definition may not change
    with pytest.raises(ConfigError, match=r"this sweep was started with a different space .*use a new --dir"):
        Sweep(SweepConfig(**{**base, "space": ["train.lr=loguniform(1e-3,1e-2)"]}))
    (tmp_path / "s" / "sweep.json").write_text('{"config": null,\n "space": [')  # cut short (a full disk)
    with pytest.raises(ConfigError, match=r"^.*sweep.json:2: not valid JSON \(.*\); it is the sweep's definition"):
        Sweep(SweepConfig(**base))


def test_a_sweep_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "notes").write_text("mine")
    for d in (tmp_path / "notes", tmp_path / "notes" / "s"):
        with pytest.raises(ConfigError, match=rf"^--dir: {d}: is (a file|under .*notes, a file), not a directory to "
                                              r"write the sweep into; give another path$"):
            Sweep(SweepConfig(dir=str(d), space=["train.lr=loguniform(1e-3,1e-1)"], seeds=[42], trials=1))
    assert (tmp_path / "notes").read_text() == "mine"


def test_a_confirmation_may_be_added_to_a_sweep_under_way_but_its_runs_never_mix(tmp_path):
    from deepprompt.sweep.cli import add_arguments, to_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--dir", str(tmp_path / "s"), "--space", "train.lr=loguniform(1e-3,1e-1)", "--trials", "4"]
    Sweep(to_config(parser.parse_args(base)))  # screened first, with no confirmation
    confirm = ["--confirm-seeds", "45,46", "--confirm-top", "2", "--confirm-set", "train.max_steps=600"]
    Sweep(to_config(parser.parse_args(base + confirm)))  # added later: the trials mean the same
    stored = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert (stored["confirm_seeds"], stored["confirm_top"], stored["confirm_overrides"]) == (
        [45, 46], 2, ["train.max_steps=600"])
    again = Sweep(to_config(parser.parse_args(base)))  # a worker without the flags confirms as stored
    assert (again.cfg.confirm_seeds, again.cfg.confirm_top, again.cfg.confirm_overrides) == (
        [45, 46], 2, ["train.max_steps=600"])
    (tmp_path / "s" / "confirm" / "0123456789ab" / "fold0-seed45").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"^--confirm-set: this sweep's confirmation already ran with "
                                          r"\['train.max_steps=600'\] \(now \['train.max_steps=900'\]\)"):
        Sweep(to_config(parser.parse_args(base + ["--confirm-set", "train.max_steps=900"])))
    Sweep(to_config(parser.parse_args(base + ["--confirm-seeds", "45,46,47"])))  # more fresh seeds: new runs only
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["confirm_seeds"] == [45, 46, 47]
    with pytest.raises(ConfigError, match="this sweep was started with a different seeds"):
        Sweep(to_config(parser.parse_args(base + ["--seeds", "43"])))  # the search itself still may not change


def test_the_pruner_stops_a_trial_below_the_given_percentile(tmp_path):
    """The WNUT-16 search's own numbers: four complete trials' dev at step 100 of fold 0 (one had
    diverged to 0) and a new trial at 43.2. The median (43.25) stops it on a 0.05-point difference;
    the 25th percentile (31.6) stops only what is clearly bad."""
    import optuna
    from optuna.distributions import FloatDistribution

    lr = {"train.lr": FloatDistribution(1e-3, 1e-1, log=True)}
    for percentile, stopped in ((50, True), (25, False)):
        sweep = Sweep(SweepConfig(dir=str(tmp_path / str(percentile)), space=["train.lr=loguniform(1e-3,1e-1)"],
                                  prune_startup=4, prune_warmup=100, prune_percentile=percentile))
        for v in (45.5, 42.1, 44.4, 0.0):
            sweep.study.add_trial(optuna.trial.create_trial(params={"train.lr": 1e-2}, distributions=lr, value=v,
                                                            intermediate_values={50: v, 100: v}))
        trial = sweep.study.ask()
        trial.report(43.2, 100)
        assert bool(trial.should_prune()) is stopped
        early = sweep.study.ask()
        early.report(0.0, 50)  # before --prune-warmup: never
        assert not early.should_prune()


def test_scores_keep_last_and_best_dev_apart_and_average_tasks():
    def task(last_dev, last_test, best_dev, best_test, metric="f1"):
        return {"main_metric": metric, "last": {f"dev_{metric}": last_dev, f"test_{metric}": last_test},
                "best_dev": {f"dev_{metric}": best_dev, f"test_{metric}": best_test, "step": 200}}
    one = runs.scores({"tasks": {"wnut16": task(40.0, 41.0, 43.0, 39.0)}}, ["f1"])
    assert one == {"last": {"dev": 40.0, "test": 41.0, "dev_f1": 40.0, "test_f1": 41.0},
                   "best_dev": {"dev": 43.0, "test": 39.0, "dev_f1": 43.0, "test_f1": 39.0, "step": 200}}
    two = runs.scores({"tasks": {"a": task(40.0, 41.0, 43.0, 39.0), "b": task(60.0, 50.0, 61.0, 52.0, "acc")}})
    assert two["last"] == {"dev": 50.0, "test": 45.5} and two["best_dev"]["dev"] == 52.0
    qa = runs.scores({"tasks": {"squad": {"main_metric": "f1", "last": {"dev_f1": 16.0},
                                          "best_dev": {"dev_f1": 16.0, "step": 300}}}})
    assert qa["last"] == {"dev": 16.0}  # no test split: no test score, not a zero
    agg = runs.aggregate([one, runs.scores({"tasks": {"wnut16": task(44.0, 45.0, 45.0, 43.0)}})])
    assert agg["last"]["dev"] == (42.0, pytest.approx(2 ** 1.5)) and agg["best_dev"]["test"][0] == 41.0


@pytest.mark.parametrize("text, problem", [
    ("", r":1: not valid JSON \(Expecting value at column 1\)"),
    ('{"method": "prefix", "tasks": {"wnut16": {"main_metric": "f1", "la', r":1: not valid JSON"),
    ("[]", r": not a deepprompt run's results.json \(no \"tasks\" object\)"),
    ('{"tasks": {}}', r": not a deepprompt run's results.json"),
    ('{"tasks": {"wnut16": {"main_metric": "f1", "last": {}}}}', r": task 'wnut16' has no main_metric, last and best_dev"),
])
def test_a_damaged_results_json_is_one_line_not_a_reused_run(tmp_path, text, problem):
    """A run's results.json marks it done (reused, never rerun): one cut short by a kill, empty or of
    another shape names itself and says how to rerun, rather than a JSONDecodeError or KeyError."""
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'results.json'}{problem}.*; delete it and the run is "
                                          rf"launched again \(continuing from its checkpoints\)$"):
        runs.launch(runs.Launch(), tmp_path)  # (nothing is launched: the file is there)
    assert not (tmp_path / "launch.log").exists()


def test_a_torn_eval_log_line_that_still_parses_is_skipped(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({
        "tasks": {"t": {"main_metric": "f1", "last": {}, "best_dev": {}}},
        "eval_history": [{"step": 5, "dev_mean_main": 1.0}, 12, {"step": 10}]}))
    seen = []
    runs.launch(runs.Launch(), tmp_path, on_eval=lambda step, value: seen.append(step))
    assert seen == [5]


def test_paired_difference_matches_runs_by_fold_and_seed():
    def run(fold, seed, test):
        return {"fold": fold, "seed": seed, "scores": {"last": {"dev": 0.0, "test": test}, "best_dev": {"dev": 0.0}}}
    ref = [run(0, 45, 40.0), run(1, 45, 50.0), run(2, 45, 44.0)]
    mine = [run(2, 45, 45.0), run(0, 45, 39.0), run(1, 45, 53.0)]  # another order: matched, not zipped
    d = runs.paired_difference(mine, ref, "last", "test")
    # differences -1, +3, +1: mean 1, sd 2, se 2/sqrt(3); t(0.975, 2 df) = 4.302652...
    assert d["n"] == 3 and d["mean"] == pytest.approx(1.0) and d["se"] == pytest.approx(2 / 3 ** 0.5)
    assert d["ci95"] == pytest.approx([1 - 4.302653 * 2 / 3 ** 0.5, 1 + 4.302653 * 2 / 3 ** 0.5], rel=1e-6)
    # the pairs differ by sd 2 where the folds alone spread by 5: unpaired, that spread is the noise
    assert runs.aggregate([r["scores"] for r in ref])["last"]["test"][1] == pytest.approx(5.033, abs=1e-3)
    assert runs.paired_difference(mine[:2], ref, "last", "test") is None  # not the same pairs
    assert runs.paired_difference([run(0, 46, 1.0), *mine[1:]], ref, "last", "test") is None
    assert runs.paired_difference(mine, ref, "best_dev", "test") is None  # no such score (no test split)


def test_the_report_names_each_pruned_trials_pruner_and_a_queued_trials_note(tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution

    sweep = Sweep(SweepConfig(dir=str(tmp_path / "s"), space=["train.lr=loguniform(1e-3,1e-1)"], trials=2,
                              prune_percentile=25))
    lr = {"train.lr": FloatDistribution(1e-3, 1e-1, log=True)}
    sweep.study.add_trial(optuna.trial.create_trial(
        params={"train.lr": 0.05}, distributions=lr, state=optuna.trial.TrialState.PRUNED,
        intermediate_values={50: 12.5, 100: 38.4}, user_attrs={"pruned_at": {"run": 0, "step": 100}}))
    sweep.study.add_trial(optuna.trial.create_trial(
        params={"train.lr": 0.05}, distributions=lr, state=optuna.trial.TrialState.PRUNED,
        intermediate_values={100: 0.0, 150: 0.0}, user_attrs={"pruned_at": {"run": 0, "step": 150, "percentile": 25.0},
                                                              "note": "trial 0's configuration again, under the new pruner"}))
    md = (sweep.report() / "report.md").read_text()
    assert "25th-percentile pruner; 0 complete, 2 pruned" in md
    assert "pruned at step 100 of run 0 by the median (best so far 38.40)" in md  # pruned before the change
    assert "pruned at step 150 of run 0 by the 25th-percentile (best so far 0.00)" in md
    assert "- Trial 1: trial 0's configuration again, under the new pruner" in md


def test_the_choice_among_the_confirmed_waits_until_all_of_them_ran(tmp_path):
    """Trials 0 (search dev 45) and 1 (44) are confirmed on seed 45. While only trial 1 has run, the
    choice stays the search's (trial 0), marked provisional, and sweep_compare would refuse; once both
    ran, it is the better on the fresh seed (trial 1)."""
    import optuna
    from optuna.distributions import FloatDistribution

    from deepprompt.sweep.settings import config_id

    sweep = Sweep(SweepConfig(dir=str(tmp_path / "s"), space=["train.lr=loguniform(1e-3,1e-1)"], trials=2,
                              confirm_seeds=[45], confirm_top=2))
    lr = {"train.lr": FloatDistribution(1e-3, 1e-1, log=True)}

    def results(dev):
        scores = {"dev_f1": dev, "test_f1": dev - 1}
        return {"tasks": {"wnut16": {"main_metric": "f1", "last": scores, "best_dev": {**scores, "step": 10}}}}

    for value, rate in ((45.0, 0.01), (44.0, 0.02)):
        sweep.study.add_trial(optuna.trial.create_trial(
            params={"train.lr": rate}, distributions=lr, value=value,
            user_attrs={"runs": [{"fold": None, "seed": 42, "scores": runs.scores(results(value))}]}))

    def confirmed(rate, dev):
        out = sweep.dir / "confirm" / config_id({"train.lr": rate}) / "all-seed45"
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps(results(dev)))

    confirmed(0.02, 50.0)
    report = sweep.report()
    data = json.loads((report / "report.json").read_text())
    assert (data["final"], data["final_by"], data["provisional"]) == (0, "search", True)
    assert "**Chosen: trial 0** (by search dev; provisional: the confirmation has 1 of its 2 runs)" in (
        report / "report.md").read_text()
    assert "provisional until the confirmation is done" in (report / "winner.yaml").read_text().splitlines()[0]
    assert load_config(str(report / "winner.yaml")).output_dir == "runs/s-trial0"  # not the base run's: no resume of it
    compare = subprocess.run([sys.executable, "benchmarks/sweep_compare.py", "--name", "x", str(sweep.dir)],
                             cwd=REPO, capture_output=True, text=True)
    assert compare.returncode == 1 and "the confirmation is not complete yet (1 of 2 runs)" in compare.stderr
    confirmed(0.01, 48.0)
    data = json.loads((sweep.report() / "report.json").read_text())
    assert (data["final"], data["final_by"], data["provisional"]) == (1, "confirmation", False)
    assert (sweep.dir / "report" / "winner.yaml").read_text().startswith(
        f"# deepprompt sweep {sweep.dir}: trial 1, chosen on LAST dev 50.00 (mean of 1 run(s) on fresh seeds)")


def test_the_report_says_how_far_the_confirmed_choice_rests_on_noise(tmp_path):
    """Trials 0 and 1 confirmed on seeds 45 and 46: 50/52 and 49/50 LAST dev. The choice (trial 0)
    minus trial 1, paired by seed: differences 1 and 2, mean 1.5, s.e. 0.5, t(0.975, 1) = 12.706,
    so the 95 % interval is 1.5 ± 6.35, which holds 0."""
    import optuna
    from optuna.distributions import FloatDistribution

    from deepprompt.sweep.settings import config_id

    sweep = Sweep(SweepConfig(dir=str(tmp_path / "s"), space=["train.lr=loguniform(1e-3,1e-1)"], trials=2,
                              confirm_seeds=[45, 46], confirm_top=2))
    lr = {"train.lr": FloatDistribution(1e-3, 1e-1, log=True)}

    def results(dev):
        scores = {"dev_f1": dev, "test_f1": dev - 1}
        return {"tasks": {"wnut16": {"main_metric": "f1", "last": scores, "best_dev": {**scores, "step": 10}}}}

    for value, rate, devs in ((45.0, 0.01, (50.0, 52.0)), (44.0, 0.02, (49.0, 50.0))):
        sweep.study.add_trial(optuna.trial.create_trial(
            params={"train.lr": rate}, distributions=lr, value=value,
            user_attrs={"runs": [{"fold": None, "seed": 42, "scores": runs.scores(results(value))}]}))
        for seed, dev in zip((45, 46), devs):
            out = sweep.dir / "confirm" / config_id({"train.lr": rate}) / f"all-seed{seed}"
            out.mkdir(parents=True)
            (out / "results.json").write_text(json.dumps(results(dev)))
    report = sweep.report()
    paired = json.loads((report / "report.json").read_text())["confirmed"][1]["chosen_minus_this_dev_paired"]
    assert paired["n"] == 2 and paired["mean"] == pytest.approx(1.5) and paired["se"] == pytest.approx(0.5)
    assert paired["ci95"] == pytest.approx([1.5 - 6.353, 1.5 + 6.353], abs=1e-3)
    assert ("- Trial 0 − trial 1, LAST dev on the fresh seeds, paired over 2 (fold, seed) runs: +1.50 "
            "(95 % interval -4.85 … +7.85); the interval holds 0: the two are not told apart at this size") in (
        report / "report.md").read_text()


@pytest.mark.parametrize("text", ["", '{"host": "n', "[1]", '{"host": "n0"}'])
def test_a_confirm_lock_or_heartbeat_cut_short_is_no_traceback(tmp_path, caplog, text):
    """confirm.lock and trials/<n>.alive are read by every worker: one left empty or half-written by
    a worker that died writing it names itself (the lock) or counts as no heartbeat yet."""
    from types import SimpleNamespace

    sweep = Sweep(SweepConfig(dir=str(tmp_path / "s"), space=["train.lr=loguniform(1e-3,1e-1)"], trials=1,
                              confirm_seeds=[45]))
    lock = sweep.dir / "confirm.lock"
    lock.write_text(text)
    with caplog.at_level("WARNING", logger="deepprompt"):
        assert sweep.confirm() is None
    assert f"{lock} names no worker; if none is confirming, delete it" in caplog.text and lock.read_text() == text
    (sweep.dir / "trials" / "0.alive").write_text(text)
    assert sweep._stale(SimpleNamespace(number=0, datetime_start=None)) is False


def test_sweep_compare_pairs_two_confirmed_sweeps_by_fold_and_seed(tmp_path):
    """FT confirmed at LAST test 50 and 52 (seeds 45, 46), PT-2 at 49.5 and 50.5: paired differences
    -0.5 and -1.5, mean -1.0, s.e. 0.5, t(0.975, 1) = 12.706, so the 95 % interval is -1.0 ± 6.353:
    "within 1 F1" is not shown. Unpaired: -1.0 ± sqrt(2/2 + 0.5/2) = ± 1.118."""
    import optuna
    from optuna.distributions import FloatDistribution

    from deepprompt.sweep.settings import config_id

    lr = {"train.lr": FloatDistribution(1e-3, 1e-1, log=True)}

    def results(dev):
        scores = {"dev_f1": dev, "test_f1": dev - 1}
        return {"tasks": {"wnut16": {"main_metric": "f1", "last": scores, "best_dev": {**scores, "step": 10}}}}

    def confirmed_sweep(name, rate, devs):
        sweep = Sweep(SweepConfig(dir=str(tmp_path / name), space=["train.lr=loguniform(1e-3,1e-1)"], trials=1,
                                  confirm_seeds=[45, 46], confirm_top=1))
        sweep.study.add_trial(optuna.trial.create_trial(
            params={"train.lr": rate}, distributions=lr, value=devs[0],
            user_attrs={"runs": [{"fold": None, "seed": 42, "scores": runs.scores(results(devs[0]))}]}))
        for seed, dev in zip((45, 46), devs):
            out = sweep.dir / "confirm" / config_id({"train.lr": rate}) / f"all-seed{seed}"
            out.mkdir(parents=True)
            (out / "results.json").write_text(json.dumps(results(dev)))
        sweep.report()
        return sweep.dir

    ft, pt = confirmed_sweep("ft", 1e-3, (51.0, 53.0)), confirmed_sweep("pt", 3e-2, (50.5, 51.5))
    compare = subprocess.run([sys.executable, "benchmarks/sweep_compare.py", "--name", "x", "--out", str(tmp_path / "o"),
                              str(ft), str(pt)], cwd=REPO, capture_output=True, text=True)
    assert compare.returncode == 0, compare.stderr
    assert (f"{pt} − {ft}, LAST test, paired over 2 (fold, seed) runs: -1.00 (95 % interval -7.35 … +5.35): "
            f"within 1 NOT shown at 95 %") in compare.stdout
    out = json.loads((tmp_path / "o" / "sweep_x.json").read_text())["sweeps"]
    assert out[1]["last_test_minus_ref"] == pytest.approx([-1.0, (2 / 2 + 0.5 / 2) ** 0.5])
    assert out[1]["last_test_minus_ref_paired"]["ci95"] == pytest.approx([-7.353, 5.353], abs=1e-3)
    assert out[1]["within_margin"] is False and "within_margin" not in out[0]
    assert (tmp_path / "o" / "sweep_x.png").stat().st_size > 10_000

    # The same FT runs as a plain directory of runs (a recipe confirmed outside a sweep: fold and seed from
    # each run_config.json), with a third seed PT-2 lacks, against PT-2's report.json as kept in docs/:
    # compared on the two runs both hold, the same paired figures, and it says so.
    for seed, dev in ((45, 51.0), (46, 53.0), (47, 0.0)):
        run = tmp_path / "ft_runs" / f"s{seed}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(results(dev)))
        (run / "run_config.json").write_text(json.dumps({"task": {"fold": None}, "train": {"seed": seed, "lr": 1e-3},
                                                         "prompt": {"method": "finetune"}}))
    compare = subprocess.run([sys.executable, "benchmarks/sweep_compare.py", "--name", "y", "--out", str(tmp_path / "o"),
                              str(tmp_path / "ft_runs"), str(pt / "report" / "report.json")],
                             cwd=REPO, capture_output=True, text=True)
    assert compare.returncode == 0, compare.stderr
    assert f"{tmp_path / 'ft_runs'}: compared on the 2 (fold, seed) runs every input holds (of its 3)" in compare.stderr
    out = json.loads((tmp_path / "o" / "sweep_y.json").read_text())["sweeps"]
    assert out[0]["params"] == {"prompt.method": "finetune", "train.lr": 1e-3} and out[0]["runs"] == 2
    assert out[1]["last_test_minus_ref_paired"]["ci95"] == pytest.approx([-7.353, 5.353], abs=1e-3)
    empty = subprocess.run([sys.executable, "benchmarks/sweep_compare.py", "--name", "z", str(tmp_path / "o")],
                           cwd=REPO, capture_output=True, text=True)
    assert empty.returncode == 1 and "neither a sweep (report/report.json), a report.json, nor finished runs" in (
        empty.stderr)
    # a directory holds one configuration: a run at another rate is named, not averaged in
    (tmp_path / "ft_runs" / "s47" / "run_config.json").write_text(json.dumps(
        {"task": {"fold": None}, "train": {"seed": 47, "lr": 2e-3}, "prompt": {"method": "finetune"}}))
    mixed = subprocess.run([sys.executable, "benchmarks/sweep_compare.py", "--name", "z", str(tmp_path / "ft_runs"),
                            str(pt)], cwd=REPO, capture_output=True, text=True)
    assert mixed.returncode == 1 and mixed.stderr.strip().splitlines() == [
        f"sweep_compare: {tmp_path / 'ft_runs'}: runs of different configurations (s45 and s47 differ in train.lr); "
        f"one directory holds one configuration"]
    (tmp_path / "ft_runs" / "s47" / "results.json").write_text('{"tasks": ')
    (tmp_path / "ft_runs" / "s47" / "run_config.json").unlink()
    torn = subprocess.run([sys.executable, "benchmarks/sweep_compare.py", "--name", "z", str(tmp_path / "ft_runs"),
                           str(pt)], cwd=REPO, capture_output=True, text=True)
    assert torn.returncode == 1 and "s47: a results.json without its run_config.json" in torn.stderr
    (tmp_path / "ft_runs" / "s47" / "run_config.json").write_text(
        (tmp_path / "ft_runs" / "s46" / "run_config.json").read_text().replace("46", "47"))
    torn = subprocess.run([sys.executable, "benchmarks/sweep_compare.py", "--name", "z", str(tmp_path / "ft_runs"),
                           str(pt)], cwd=REPO, capture_output=True, text=True)
    assert torn.returncode == 1 and len(torn.stderr.strip().splitlines()) == 1
    assert torn.stderr.startswith(f"sweep_compare: {tmp_path / 'ft_runs' / 's47' / 'results.json'}")


def test_rank_0_logs_each_run_its_dev_scores_as_they_come_and_its_result(tmp_path, monkeypatch, caplog):
    """A confirmation of hours said only "confirming trial 22 on fold0-seed45", and the same for the runs
    it reused: now each new dev score, then the run's LAST and BEST-DEV and its time, or "reused"."""
    import logging

    import optuna
    from optuna.distributions import FloatDistribution

    from deepprompt.sweep import study as S

    sweep = Sweep(SweepConfig(dir=str(tmp_path / "s"), space=["train.lr=loguniform(1e-3,1e-1)"], trials=1,
                              confirm_seeds=[45, 46], confirm_top=1))
    sweep.study.add_trial(optuna.trial.create_trial(
        params={"train.lr": 0.01}, distributions={"train.lr": FloatDistribution(1e-3, 1e-1, log=True)}, value=40.0))
    scores = {"dev_f1": 50.0, "test_f1": 48.5}
    results = {"tasks": {"wnut16": {"main_metric": "f1", "last": scores,
                                    "best_dev": {"dev_f1": 51.25, "test_f1": 47.0, "step": 100}}},
               "eval_history": [{"step": 50, "dev_mean_main": 45.0}, {"step": 100, "dev_mean_main": 51.25}]}

    def launch(how, out, extra, on_eval=None, tick=None):
        if not (out / "results.json").is_file():
            for r in results["eval_history"]:
                assert on_eval(r["step"], r["dev_mean_main"]) is False
            out.mkdir(parents=True)
            (out / "results.json").write_text(json.dumps(results))
        return results

    monkeypatch.setattr(S.R, "launch", launch)
    (tmp_path / "s" / "confirm").mkdir()
    with caplog.at_level(logging.INFO, logger="deepprompt"):
        sweep.confirm()
    lines = [r.getMessage() for r in caplog.records]
    assert "sweep: confirming trial 0 on all-seed45 (run 1 of 2) step 50: dev 45.00" in lines
    done = [m for m in lines if m.startswith("sweep: confirming trial 0 on all-seed46 (run 2 of 2) done: ")][0]
    assert done.startswith("sweep: confirming trial 0 on all-seed46 (run 2 of 2) done: LAST dev 50.00 test 48.50 | "
                           "BEST-DEV dev 51.25 test 47.00 (step 100) | ") and done.endswith(" min")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="deepprompt"):
        sweep.confirm()  # every run is there: reused, no step lines
    assert [r.getMessage() for r in caplog.records] == [
        f"sweep: confirming trial 0 on all-seed{s} (run {k} of 2) reused: LAST dev 50.00 test 48.50 | "
        f"BEST-DEV dev 51.25 test 47.00 (step 100)" for k, s in ((1, 45), (2, 46))]
