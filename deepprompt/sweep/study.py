"""``deepprompt sweep``: an Optuna study over run-config keys whose trials are real launcher runs.

One trial = one configuration (the base config + overrides + one value per ``--space`` key), run on
every fold (``--folds``) x every seed (``--seeds``), one after the other; its value is the mean dev
score of those runs (LAST or BEST-DEV, ``--select``): a choice on dev only. Each dev evaluation of
each run is reported to Optuna as it happens, at step ``run_index * STRIDE + step``, so a trial is
compared with others on the same fold, seed and step; the percentile (by default median) pruner may stop
it there.

The study lives in ``<dir>/study.journal`` (Optuna's JournalStorage, file backend, file-locked): any
number of workers on any nodes run the same command against one shared directory and split the
trials; a worker that is stopped (SIGTERM/SIGINT) hands its trial back, one that died (kill -9, a
lost node) is noticed by the others (its heartbeat stops) and its trial is handed back too; the
trial's runs then continue from their checkpoints. When the last trial ends, the best ``--confirm-top``
configurations are re-run on ``--confirm-seeds`` (seeds the search never saw) over all folds, and
the report (``report.py``) is written."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import statistics
import time
from pathlib import Path

from deepprompt.errors import ConfigError, DeepPromptError
from deepprompt.fileio import atomic_write, load_json, make_output_dir, read_text
from deepprompt.sweep import runs as R
from deepprompt.sweep.settings import CONFIRMATION, OWNED_KEYS, SweepConfig, config_id, param_overrides, run_name  # noqa: F401  (re-exported)

log = logging.getLogger("deepprompt")

STRIDE = 1_000_000
"""Intermediate-value steps: run i of a trial reports its dev at step i * STRIDE + training step."""
EXIT_INTERRUPTED = 75


class Interrupted(DeepPromptError):
    """SIGTERM/SIGINT: the worker handed its trial back; the same command continues the sweep."""


class Sweep:
    def __init__(self, cfg: SweepConfig):
        self.dir = Path(cfg.dir)
        path = self.dir / "sweep.json"
        stored = _read_definition(path) if path.is_file() else None
        changed = cfg.settle_confirmation(stored)
        self.cfg, self.dims = cfg, cfg.check()
        try:
            import optuna
        except ImportError:
            raise DeepPromptError("deepprompt sweep needs Optuna: pip install 'deepprompt[sweep]' "
                                  "(or pip install optuna matplotlib)") from None
        make_output_dir(self.dir, "the sweep", key="--dir")
        self._agree_on_definition(stored, changed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        self.storage = JournalStorage(JournalFileBackend(str(self.dir / "study.journal")))
        # Optuna's percentile is the share of trials KEPT (a maximised study prunes below its 100 - p):
        # ours is the share stopped, so "25" stops the bottom quarter
        pruner = (optuna.pruners.PercentilePruner(100.0 - cfg.prune_percentile, n_startup_trials=cfg.prune_startup,
                                                  n_warmup_steps=cfg.prune_warmup)
                  if cfg.prune else optuna.pruners.NopPruner())
        self.study = optuna.create_study(study_name="sweep", storage=self.storage, direction="maximize",
                                         pruner=pruner, load_if_exists=True)
        self.study_id = self.storage.get_study_id_from_name("sweep")
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}
        (self.dir / "trials").mkdir(exist_ok=True)
        self._beats: dict[int, float] = {}

    # ---- one definition per directory
    def _agree_on_definition(self, theirs: dict | None, changed: dict[str, tuple]) -> None:
        """The search must be the one sweep.json defines; the confirmation may be set or changed
        (``SweepConfig.settle_confirmation``), except the confirmation runs' overrides once they ran."""
        path, mine = self.dir / "sweep.json", self.cfg.definition()
        if theirs is not None:
            diff = [k for k in mine if k not in CONFIRMATION and mine[k] != theirs.get(k)]
            if diff:
                raise ConfigError(f"--dir {self.dir}: this sweep was started with a different {diff[0]} "
                                  f"({theirs.get(diff[0])!r}, now {mine[diff[0]]!r}); use a new --dir")
            if "confirm_overrides" in changed and any((self.dir / "confirm").glob("*/*")):
                before, now = changed["confirm_overrides"]
                raise ConfigError(f"--confirm-set: this sweep's confirmation already ran with {before!r} (now {now!r}), "
                                  f"and its runs would mix the two; give the same --confirm-set or use a new --dir")
            for key, (before, now) in changed.items():
                log.info("sweep: %s changed from %r to %r%s", key, before, now,
                         " for this report only" if self.cfg.report_only else "")
        if (theirs is None or changed) and not self.cfg.report_only:
            atomic_write(path, lambda p: p.write_text(json.dumps(mine, indent=2)))

    # ---- trials and who runs them
    def trials(self):
        return self.study.get_trials(deepcopy=False)

    def counted(self, below: int | None = None) -> int:
        """Trials that use up the budget: complete, pruned, failed or running, not handed back."""
        from optuna.trial import TrialState

        return sum(1 for t in self.trials() if t.state != TrialState.WAITING and not t.user_attrs.get("handed_back")
                   and (below is None or t.number < below))

    def _beat(self, number: int, every_s: float = 30.0) -> None:
        """This worker is alive and runs trial ``number`` (a file written at most every ``every_s``)."""
        if time.time() - self._beats.get(number, 0.0) < every_s:
            return
        self._beats[number] = time.time()
        path = self.dir / "trials" / f"{number}.alive"
        atomic_write(path, lambda p: p.write_text(json.dumps({**self.me, "time": time.time()})))

    def _stale(self, t) -> bool:
        path = self.dir / "trials" / f"{t.number}.alive"
        try:
            beat = json.loads(path.read_text())
            host, pid, at = beat["host"], int(beat["pid"]), float(beat["time"])
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or not one of ours: judged by the start
            started = t.datetime_start.timestamp() if t.datetime_start else time.time()
            return time.time() - started > 60 * self.cfg.stale_after_min
        if host == self.me["host"] and pid != self.me["pid"] and not _alive(pid):
            return True
        return time.time() - at > 60 * self.cfg.stale_after_min

    def hand_back(self, number: int, why: str) -> None:
        """A RUNNING trial's configuration goes back in the queue (the next worker reruns it; its runs
        continue from their checkpoints); the trial itself ends FAIL and stops counting."""
        from optuna.trial import TrialState

        tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        t = self.storage.get_trial(tid)
        if t.state != TrialState.RUNNING:
            return
        self.storage.set_trial_user_attr(tid, "handed_back", why)
        self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        self.study.enqueue_trial(t.params, user_attrs={"retry_of": number})
        log.info("sweep: trial %d handed back (%s); its configuration is queued again", number, why)

    def recover_stale(self) -> None:
        from optuna.trial import TrialState

        for t in self.trials():
            if t.state == TrialState.RUNNING and self._stale(t):
                self.hand_back(t.number, "its worker stopped answering")

    def _sampler(self):
        import optuna

        seed = self.cfg.sampler_seed + len(self.trials())  # distinct per trial, reproducible for one worker
        if self.cfg.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.cfg.startup_trials, constant_liar=True)

    def work(self) -> None:
        """Run trials until the sweep has ``trials`` of them, then confirm and report (whoever ends last)."""
        failures = 0
        while True:
            self.recover_stale()
            if self.counted() >= self.cfg.trials:
                break
            self.study.sampler = self._sampler()
            trial = self.study.ask()
            if self.counted(below=trial.number) >= self.cfg.trials:  # another worker took the last one
                self.hand_back(trial.number, "surplus") if "retry_of" in trial.user_attrs else self._drop(trial.number)
                break
            try:
                self.run_trial(trial)
                failures = 0
            except R.RunFailed as e:
                failures += 1
                log.error("sweep: trial %d failed: %s", trial.number, e)
                if failures >= 3:
                    raise DeepPromptError(f"sweep: 3 trials in a row failed on this worker; the last: {e}") from None
        self.finish()

    def _drop(self, number: int) -> None:
        from optuna.trial import TrialState

        tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.storage.set_trial_user_attr(tid, "handed_back", "surplus")
        self.study.tell(number, state=TrialState.FAIL)

    def run_trial(self, trial) -> None:
        from optuna.trial import TrialState

        cfg = self.cfg
        params = {d.key: d.suggest(trial) for d in self.dims}
        cid = config_id(params)
        trial.set_user_attr("config_id", cid)
        trial.set_user_attr("worker", f"{self.me['host']}:{self.me['pid']}")
        self._beat(trial.number)
        log.info("sweep: trial %d: %s", trial.number, " ".join(param_overrides(self.dims, params)))
        self._wait_for_twin(trial.number, cid)
        done = []
        try:
            plan = cfg.plan(cfg.seeds)
            for i, (fold, seed) in enumerate(plan):
                out = self.dir / "runs" / cid / run_name(fold, seed)

                def on_eval(step: int, value: float, i=i) -> bool:
                    trial.report(value, i * STRIDE + step)
                    return trial.should_prune()

                res = self._launch(f"trial {trial.number} {run_name(fold, seed)} (run {i + 1} of {len(plan)})",
                                   out, [*param_overrides(self.dims, params), *R.run_overrides(cfg.folds, fold, seed)],
                                   on_eval=on_eval, tick=lambda: self._beat(trial.number))
                done.append({"fold": fold, "seed": seed, "dir": str(out), "scores": R.scores(res),
                             "wall_time_s": res.get("wall_time_s")})
                trial.set_user_attr("runs", done)
        except R.Stopped as s:
            trial.set_user_attr("pruned_at", {"run": len(done), "step": s.args[0], "percentile": cfg.prune_percentile})
            self.study.tell(trial, state=TrialState.PRUNED)
            log.info("sweep: trial %d pruned at run %d step %s", trial.number, len(done), s.args[0])
            return
        except R.RunFailed as e:
            trial.set_user_attr("error", str(e))
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        except BaseException:
            self.hand_back(trial.number, "its worker was interrupted")
            raise
        value = statistics.fmean(r["scores"][cfg.select]["dev"] for r in done)
        self.study.tell(trial, value)
        log.info("sweep: trial %d: dev %.2f (%s, mean of %d run(s))", trial.number, value, cfg.select, len(done))

    def _launch(self, label: str, out: Path, overrides: list[str], on_eval=None, tick=None) -> dict:
        """``R.launch`` with rank 0's account of it: each new dev score as it comes, then the run's LAST
        and BEST-DEV scores and its time, or that it was reused (a run of hours is not silent)."""
        reused = (out / "results.json").is_file()
        if not reused:
            log.info("sweep: %s ...", label)

        def logged(step: int, value: float) -> bool:
            if not reused:
                log.info("sweep: %s step %d: dev %.2f", label, step, value)
            return bool(on_eval and on_eval(step, value))

        started = time.time()
        res = R.launch(self.cfg.launch(), out, overrides, on_eval=logged, tick=tick)
        sc = R.scores(res)

        def shown(which: str) -> str:
            return " ".join(f"{split} {sc[which][split]:.2f}" for split in ("dev", "test") if split in sc[which])
        log.info("sweep: %s %s: LAST %s | BEST-DEV %s (step %s)%s", label, "reused" if reused else "done",
                 shown("last"), shown("best_dev"), sc["best_dev"].get("step"),
                 "" if reused else f" | {(time.time() - started) / 60:.1f} min")
        return res

    def _wait_for_twin(self, number: int, cid: str) -> None:
        """Two trials of one configuration never write into the same run directories at once: wait for
        an earlier RUNNING twin (its runs are then reused, or continued when it was pruned)."""
        from optuna.trial import TrialState

        while any(t.state == TrialState.RUNNING and t.number < number and t.user_attrs.get("config_id") == cid
                  for t in self.trials()):
            self._beat(number)
            time.sleep(5)
            self.recover_stale()

    # ---- the end: confirmation and report
    def finish(self) -> None:
        from optuna.trial import TrialState

        states = [t.state for t in self.trials()]
        if TrialState.RUNNING in states or TrialState.WAITING in states:
            log.info("sweep: this worker is done; trials still run elsewhere (the last worker confirms and reports)")
            return
        if self.cfg.confirm_seeds:
            self.confirm()
        self.report()

    def confirm(self) -> None:
        lock = self.dir / "confirm.lock"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, json.dumps({**self.me, "time": time.time()}).encode())
            os.close(fd)
        except FileExistsError:
            try:
                other = json.loads(lock.read_text())
            except (OSError, ValueError):
                other = None
            if not isinstance(other, dict) or not isinstance(other.get("pid"), int):  # its writer died writing it
                log.warning("sweep: %s names no worker; if none is confirming, delete it and run the same command", lock)
                return
            if other.get("host") == self.me["host"] and not _alive(other["pid"]):
                lock.unlink(missing_ok=True)  # its worker died: take over (its runs continue)
                return self.confirm()
            log.info("sweep: worker %s:%s is confirming", other.get("host"), other.get("pid"))
            return
        try:
            plan = [(t, fold, seed) for t in self.top() for fold, seed in self.cfg.plan(self.cfg.confirm_seeds)]
            for k, (t, fold, seed) in enumerate(plan, 1):
                out = self.dir / "confirm" / config_id(t.params) / run_name(fold, seed)
                self._launch(f"confirming trial {t.number} on {run_name(fold, seed)} (run {k} of {len(plan)})", out,
                             [*param_overrides(self.dims, t.params), *R.run_overrides(self.cfg.folds, fold, seed),
                              *self.cfg.confirm_overrides])
        finally:
            lock.unlink(missing_ok=True)

    def top(self) -> list:
        from optuna.trial import TrialState

        complete = [t for t in self.trials() if t.state == TrialState.COMPLETE]
        return sorted(complete, key=lambda t: (-t.value, t.number))[:self.cfg.confirm_top]

    def report(self) -> Path:
        from deepprompt.sweep.report import write_report

        return write_report(self)


def _read_definition(path: Path) -> dict:
    stored = load_json(read_text(path, ConfigError), path, ConfigError,
                       hint="it is the sweep's definition: restore it or use a new --dir")
    if not isinstance(stored, dict):
        raise ConfigError(f"{path}: expected a JSON object (the sweep's definition); restore it or use a new --dir")
    return stored


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_sweep(cfg: SweepConfig) -> Path | None:
    """The ``deepprompt sweep`` command: work on the sweep in ``cfg.dir``, then (last worker) report."""
    from deepprompt.cli import setup_logging

    setup_logging(0)
    sweep = Sweep(cfg)
    if cfg.report_only:
        return sweep.report()

    def interrupted(signum, frame):
        raise Interrupted(f"sweep: stopped by {signal.Signals(signum).name}; the trial in progress was handed back "
                          f"(its runs keep their checkpoints); run the same command to continue")
    old = {s: signal.signal(s, interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        sweep.work()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return sweep.dir / "report"
