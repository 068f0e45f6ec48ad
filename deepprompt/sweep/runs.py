"""Real training runs as subprocesses, and what their results.json say: the one copy of run launching
and score aggregation, used by ``deepprompt sweep`` (each trial, the confirmation) and by the
benchmark scripts (``benchmarks/_bench.py``, ``benchmarks/quality.py``).

A run is the same command a user types: ``deepspeed <launcher args> launcher/train.py --ds_config
... [--config ...] key=value ... output_dir=...`` (or ``python launcher/train.py ...`` for one local
rank). A run whose results.json exists is reused, one with checkpoints continues from them
(``train.resume=auto``): an interrupted sweep or benchmark repeats no finished work. While a run
goes, its ``eval_log.jsonl`` (one line per dev evaluation) is read and each new dev score is handed
to ``on_eval``, which may stop the run (pruning)."""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deepprompt.errors import ConfigError, DeepPromptError
from deepprompt.fileio import load_json, read_text

REPO = Path(__file__).resolve().parent.parent.parent
TRAIN_SCRIPT = REPO / "launcher" / "train.py"
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")
WHICH = ("last", "best_dev")
"""LAST: the model after the last step; BEST-DEV: the model at the step with the best dev score."""


class RunFailed(DeepPromptError):
    """A launched run ended with an error (its launch.log says why)."""


class Stopped(Exception):
    """``on_eval`` asked the run to stop (pruned); carries the step."""


@dataclass(frozen=True)
class Launch:
    """How every run is started: the same for all runs of a sweep or benchmark."""
    config: str | None = None
    """Base run config (``--config``); None = the embedded default."""
    overrides: tuple[str, ...] = ()
    """key=value overrides for every run."""
    ds_config: str = str(REPO / "ds_configs" / "zero3.json")
    ranks: int = 1
    """Ranks on this machine (``deepspeed --num_gpus <ranks>`` on loopback); 1 = ``python launcher/train.py``."""
    deepspeed_args: tuple[str, ...] | None = None
    """Launcher arguments instead of the local ones, e.g. ``--hostfile hosts --master_addr node0``:
    any world size, the user's own ``deepspeed`` command."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the run (e.g. OMP_NUM_THREADS)."""
    cwd: str | None = None
    """Where the run starts (relative paths of its arguments); None = here."""

    def command(self, out: Path, extra: list[str]) -> list[str]:
        args = ["--ds_config", self.ds_config, *(["--config", self.config] if self.config else []),
                *self.overrides, *extra, f"output_dir={out}"]
        if self.deepspeed_args is None and self.ranks == 1:
            return [sys.executable, str(TRAIN_SCRIPT), *args]
        deepspeed = str(Path(sys.executable).parent / "deepspeed")
        launcher = list(self.deepspeed_args) if self.deepspeed_args is not None else [
            "--num_gpus", str(self.ranks), "--no_ssh_check", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port())]
        return [deepspeed, *launcher, str(TRAIN_SCRIPT), *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """The run gets SIGTERM (a checkpoint, then exit) when the process that launched it dies, even by
    kill -9: an interrupted sweep leaves no orphan run writing into its directory."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def read_eval_log(out: Path) -> list[dict]:
    """The dev evaluations so far (``eval_log.jsonl``; a line torn by a kill is skipped)."""
    path = out / "eval_log.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def read_results(path: Path) -> dict:
    """A finished run's results.json, checked for what ``scores`` reads. It is what marks a run done
    (it is reused, never rerun), so one that is empty, cut short or of another shape is one line
    naming it: deleting it makes the run go again, continuing from its checkpoints."""
    again = "delete it and the run is launched again (continuing from its checkpoints)"
    r = load_json(read_text(path, ConfigError), path, ConfigError, hint=again, allow_nan=True)  # a diverged loss
    tasks = r.get("tasks") if isinstance(r, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError(f"{path}: not a deepprompt run's results.json (no \"tasks\" object); {again}")
    for name, t in tasks.items():
        if not (isinstance(t, dict) and isinstance(t.get("main_metric"), str)
                and all(isinstance(t.get(w), dict) for w in WHICH)):
            raise ConfigError(f"{path}: task {name!r} has no main_metric, last and best_dev scores; {again}")
    return r


def launch(how: Launch, out: Path, extra: list[str] | None = None,
           on_eval: Callable[[int, float], bool] | None = None, tick: Callable[[], None] | None = None,
           poll_s: float = 1.0) -> dict:
    """One run into ``out`` (reused when its results.json exists); returns its results.json.
    ``on_eval(step, dev_mean_main)`` is called once per dev evaluation (also for a reused run); when
    it returns True the run is stopped (SIGTERM: it saves a checkpoint and exits) and ``Stopped`` is
    raised. ``tick()`` is called every poll (a sweep's heartbeat). Output goes to ``out/launch.log``."""
    out = Path(out)
    seen: set[int] = set()

    def feed(records) -> None:
        for r in records:
            if on_eval is None or not isinstance(r, dict) or not {"step", "dev_mean_main"} <= r.keys() or r["step"] in seen:
                continue  # (a line torn by a kill may still parse, as a number or a string)
            seen.add(r["step"])
            if on_eval(int(r["step"]), float(r["dev_mean_main"])):
                raise Stopped(r["step"])

    results = out / "results.json"
    if results.is_file():
        r = read_results(results)
        feed(r.get("eval_history", []))
        return r
    out.mkdir(parents=True, exist_ok=True)
    cmd = how.command(out.resolve(), list(extra or []))  # absolute: ranks on other nodes may start elsewhere
    env = {**{k: v for k, v in os.environ.items() if k not in LAUNCH_VARS},  # the run makes its own process group
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "TOKENIZERS_PARALLELISM": "false", **how.env}
    with (out / "launch.log").open("a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=how.cwd,
                                preexec_fn=_die_with_parent)
        try:
            while proc.poll() is None:
                time.sleep(poll_s)
                if tick:
                    tick()
                feed(read_eval_log(out))
        except BaseException:  # pruned, interrupted, or the caller failed: never leave the run behind
            stop(proc)
            raise
    if proc.returncode != 0 or not results.is_file():
        tail = (out / "launch.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise RunFailed(f"run {out} failed (exit {proc.returncode}): {tail[0][:300]} (see {out / 'launch.log'})")
    r = read_results(results)
    feed(r.get("eval_history", []))
    return r


def stop(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """SIGTERM to the run's process group (every rank saves and exits), SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def plan(folds: int | None, seeds: list[int]) -> list[tuple[int | None, int]]:
    """(fold, seed) of one configuration's runs, fold-major (fold 0 with every seed first)."""
    return [(f, s) for f in (range(folds) if folds else [None]) for s in seeds]


def run_overrides(folds: int | None, fold: int | None, seed: int) -> list[str]:
    """The overrides that make a run fold ``fold`` of ``folds`` (task.folds) with ``seed``."""
    return ([] if folds is None else [f"task.folds={folds}", f"task.fold={fold}"]) + [f"train.seed={seed}"]


def run_name(fold: int | None, seed: int) -> str:
    return f"{'all' if fold is None else f'fold{fold}'}-seed{seed}"


# ------------------------------------------------------------------------------------ scores

def scores(results: dict, metrics: list[str] | None = None) -> dict:
    """A run's LAST and BEST-DEV scores, kept apart: ``{"last": {"dev": x, "test": y, ...},
    "best_dev": {..., "step": s}}`` where ``dev``/``test`` are the main metric (the mean over tasks in
    a multi-task run, as the trainer's best-dev criterion) and ``dev_<m>``/``test_<m>`` every metric
    of ``metrics`` (single task). ``test`` is absent where the task has no test split."""
    tasks = results["tasks"]
    out = {}
    for which in WHICH:
        entry: dict = {}
        for split in ("dev", "test"):
            vals = [t[which].get(f"{split}_{t['main_metric']}") for t in tasks.values()]
            if all(v is not None for v in vals):
                entry[split] = statistics.fmean(vals)
        if len(tasks) == 1:
            (t,) = tasks.values()
            for m in metrics or []:
                for split in ("dev", "test"):
                    if f"{split}_{m}" in t[which]:
                        entry[f"{split}_{m}"] = t[which][f"{split}_{m}"]
        if which == "best_dev":
            entry["step"] = next(iter(tasks.values()))["best_dev"].get("step")
        out[which] = entry
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(per_run: list[dict]) -> dict:
    """Mean ± std over runs of every score of ``scores``: ``{"last": {"dev": (mean, std), ...}, ...}``
    (a score only when every run has it)."""
    out = {}
    for which in WHICH:
        keys = [k for k in per_run[0][which] if k != "step" and all(k in r[which] for r in per_run)]
        out[which] = {k: mean_std([r[which][k] for r in per_run]) for k in keys}
    return out


def paired_difference(runs: list[dict], ref_runs: list[dict], which: str, split: str) -> dict | None:
    """``runs`` minus ``ref_runs`` matched by (fold, seed): two methods confirmed on the same folds and
    seeds differ by far less from pair to pair than their scores vary across folds, so the paired
    mean difference is the honest comparison. ``{"mean", "se", "ci95": [lo, hi], "n"}`` (Student's t
    over the pairs); None unless both sets hold the same >= 2 (fold, seed) pairs, each once, with
    that score."""
    def keyed(rs):
        return {(r["fold"], r["seed"]): r["scores"].get(which, {}).get(split) for r in rs}
    mine, ref = keyed(runs), keyed(ref_runs)
    if (len(mine) != len(runs) or len(ref) != len(ref_runs) or mine.keys() != ref.keys() or len(mine) < 2
            or any(v is None for v in (*mine.values(), *ref.values()))):
        return None
    from scipy.stats import t  # scipy comes with scikit-learn (seqeval's dependency)

    diffs = [mine[k] - ref[k] for k in sorted(mine, key=str)]
    m, sd = mean_std(diffs)
    se = sd / len(diffs) ** 0.5
    half = float(t.ppf(0.975, len(diffs) - 1)) * se
    return {"mean": m, "se": se, "ci95": [m - half, m + half], "n": len(diffs)}


def fmt(ms: tuple[float, float], n: int) -> str:
    """``mean ± std`` over ``n`` runs; just the value for one run (its 0 std means nothing)."""
    return f"{ms[0]:.2f} ± {ms[1]:.2f}" if n > 1 else f"{ms[0]:.2f}"
