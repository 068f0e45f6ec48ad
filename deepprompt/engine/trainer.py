"""The one training loop: every method, backbone and task runs through ``train``.

A run trains one task or several (``tasks:``): one shared prompt, one head per task. The mixer
(``data/mixer.py``) draws the task of every optimizer step from (seed, step), identically on every
rank; a single task is simply N=1. Best-dev tracking maximises the MEAN over tasks of each task's
main metric (for one task: its main metric)."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from deepprompt.cli import setup_logging
from deepprompt.config import RunConfig
from deepprompt.errors import ConfigError
from deepprompt.data.mixer import TaskMixer
from deepprompt import preflight
from deepprompt.engine import checkpoint, ds_setup, init_from, world as world_info
from deepprompt.engine.evaluate import evaluate
from deepprompt.artifacts import save_artifact
from deepprompt.engine.signals import EXIT_PREEMPTED, StopFlag
from deepprompt.models.backbones.base import family_for_model_type
from deepprompt.models.loading import load_tokenizer_and_config, resolve_model_path
from deepprompt.tasks import build_task

log = logging.getLogger("deepprompt")


class Scalars:
    """TensorBoard on rank 0 (a no-op elsewhere)."""

    def __init__(self, output_dir: Path, enabled: bool):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def add(self, tag: str, value: float, step: int) -> None:
        if self.writer:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


class Progress:
    """What the loop carries from step to step; all of it goes into a checkpoint."""

    def __init__(self):
        self.best = {"value": None, "step": None, "dev": None, "test": None}
        self.history: list[dict] = []
        self.first_loss: float | None = None
        self.last_loss: float | None = None

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def train(run: RunConfig, ds_config_path: str) -> dict:
    out_dir = Path(run.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds_setup.init_distributed(run.train.dist_timeout_s)
    rank, world = dist.get_rank(), dist.get_world_size()
    setup_logging(rank, out_dir / "logs")
    started = time.time()
    tr = run.train

    # ---- everything that can be wrong is checked before the weights load
    ds_raw = preflight.run(run, ds_config_path)  # same code/config on every rank, paths, batch, disk
    resume_from = checkpoint.resume_point(run)
    model_path = resolve_model_path(run.model.path)
    tokenizer, model_config = load_tokenizer_and_config(model_path, run.model.family)
    tasks = [build_task(cfg, tokenizer) for cfg in run.task_configs()]
    for task in tasks:
        for split in task.splits:
            task.features(split)  # read + tokenize everything before the model loads: data errors fail fast
    warm = None
    if resume_from is None:  # a resumed run takes everything from its checkpoint
        family = family_for_model_type(model_config.model_type, run.model.family).registered_name()
        warm = init_from.prepare(run, model_path, family, tasks)
    built = ds_setup.build(run, ds_raw, tasks, model_path, model_config, src=ds_config_path,
                           init=warm[0] if warm else None)
    engine, ds, model = built.engine, built.ds_config, built.model
    mb, ga = ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]
    frozen_per_rank = _log_layout(run, built, tasks, world)
    if rank == 0:
        (out_dir / "run_config.json").write_text(json.dumps(run.to_dict(), indent=2))
        (out_dir / "ds_config.json").write_text(json.dumps(ds_setup.public(ds), indent=2))

    train_feats = [task.features("train") for task in tasks]
    mixer = TaskMixer([t.name for t in tasks], [len(f) for f in train_feats], run.mixer, tr.seed, world, rank, mb)
    _check_same_mixture(mixer)
    if len(tasks) > 1:
        log.info("mixing %d tasks (%s): %s", len(tasks), run.mixer.policy,
                 ", ".join(f"{n} {r:.3f} ({s} examples)" for n, r, s in zip(mixer.names, mixer.rates, mixer.sizes)))
    progress = Progress()
    start_step = 0
    if resume_from is not None:
        state = checkpoint.load(engine, model, resume_from)
        mixer.load_state_dict(state.get("mixer") or {"sampler": state["sampler"]}, step=state["step"])
        progress.load_state_dict(state["progress"])
        start_step = state["step"]
        log.info("resumed from %s (step %d, saved by %d rank(s))", resume_from, start_step, state["world_size"])
    frozen_before = ds_setup.frozen_fingerprint(model) if tr.verify_frozen else None
    scalars = Scalars(out_dir, rank == 0)
    train_log = _TrainLog(out_dir / "train_log.jsonl", start_step, enabled=rank == 0)
    stop = StopFlag().install()

    def save(step: int) -> None:
        checkpoint.save(engine, model, run, step, {"mixer": mixer.state_dict(),
                                                   "progress": progress.state_dict()}, tr.keep_checkpoints)

    def eval_split(split: str) -> dict:
        """{task: metrics} for every task that has ``split``."""
        return {t.name: evaluate(engine, t, split, tr.eval_batch_size) for t in tasks if split in t.splits}

    def eval_and_track(step: int) -> dict:
        dev = eval_split("dev")
        for name, metrics in dev.items():
            for k, v in metrics.items():
                scalars.add(f"dev/{k}" if len(tasks) == 1 else f"dev/{name}/{k}", v, step)
        value = _mean_main_metric(tasks, dev)
        entry, best = {"step": step, "dev": dev, "dev_mean_main": value}, progress.best
        if best["value"] is None or value > best["value"]:
            test = eval_split("test")
            best.update(value=value, step=step, dev=dev, test=test)
            entry["test"] = test
        progress.history.append(entry)
        log.info("step %d | dev %s | best dev %s %.2f at step %d", step, " | ".join(
            f"{n} " * (len(tasks) > 1) + " ".join(f"{k} {v:.2f}" for k, v in m.items()) for n, m in dev.items()),
            _criterion(tasks), best["value"], best["step"])
        return dev

    engine.train()
    bar = _progress(tr.max_steps, rank == 0, start_step)
    loop_start, last_save, window = time.time(), time.time(), []
    for step in range(start_step + 1, tr.max_steps + 1):
        # dropout depends only on (seed, step, rank): a resumed run draws the same masks
        torch.manual_seed((tr.seed * 1_000_003 + step) * 1_009 + rank)
        t = mixer.start_step(step)  # the same task on every rank: ZeRO-3 needs the same modules everywhere
        task = tasks[t]
        step_loss = 0.0
        for _ in range(ga):
            feats = [train_feats[t][i] for i in mixer.next_micro_batch()]
            batch = {k: v.to(engine.device) for k, v in task.collate(feats).items()}
            loss = engine(batch, task.name).loss
            engine.backward(loss)
            engine.step()
            step_loss += loss.item() / ga
        # one small all-reduce per step: the mean loss over ranks, and whether any rank was signalled
        agreed = torch.tensor([step_loss, float(stop.raised)], dtype=torch.float64)
        dist.all_reduce(agreed)
        mean, preempted = agreed[0].item() / world, agreed[1].item() > 0
        lr = engine.get_lr()[0]
        train_log.write(step, mean, lr, task.name if len(tasks) > 1 else None)
        window.append(mean)
        progress.first_loss = mean if progress.first_loss is None else progress.first_loss
        progress.last_loss = mean
        bar.update(1)
        if step % tr.log_every == 0 or step == tr.max_steps:
            mean = sum(window) / len(window)
            window.clear()
            scalars.add("train/loss", mean, step)
            scalars.add("train/lr", lr, step)
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2e}")
            if bar.disable and rank == 0:  # no terminal (a log file, CI): one plain line instead of a bar
                per_step = (time.time() - loop_start) / (step - start_step)
                log.info("step %d/%d | loss %.4f | lr %.2e | %.2f s/step | eta %s", step, tr.max_steps, mean, lr,
                         per_step, _hms(per_step * (tr.max_steps - step)))
        if preempted:
            save(step)
            log.warning("preempted at step %d: checkpoint saved; re-run the same command to resume", step)
            if rank == 0:
                (out_dir / "PREEMPTED").write_text(f"{step}\n")
            stop.restore()
            dist.barrier()
            raise SystemExit(EXIT_PREEMPTED)
        if tr.eval_every and step % tr.eval_every == 0 and step != tr.max_steps:
            eval_and_track(step)
        due_minutes = tr.save_every_minutes and time.time() - last_save >= 60 * tr.save_every_minutes
        if step != tr.max_steps and ((tr.save_every and step % tr.save_every == 0) or _agree(due_minutes)):
            save(step)
            last_save = time.time()
    bar.close()
    stop.restore()
    if progress.history and progress.history[-1]["step"] == tr.max_steps:  # re-run of a finished run
        last_dev = progress.history[-1]["dev"]
    else:
        last_dev = eval_and_track(tr.max_steps)
    best = progress.best
    last_test = best["test"] if best["step"] == tr.max_steps else eval_split("test")
    save(tr.max_steps)
    if rank == 0:
        (out_dir / "PREEMPTED").unlink(missing_ok=True)

    opt_state = ds_setup.optimizer_state_numel(engine)
    frozen = None
    if frozen_before is not None:
        after = ds_setup.frozen_fingerprint(model)
        frozen = {"numel": after["numel"], "unchanged": after == frozen_before if after["numel"] else None}
        if frozen["unchanged"] is False:
            log.error("frozen backbone weights CHANGED during training (per-rank SHA-256 differ)")
    results = {
        "method": run.prompt.method,
        "model": run.model.path,
        "world_size": world,
        "steps": tr.max_steps,
        "seed": tr.seed,
        "precision": built.precision,
        "resumed_from": start_step if resume_from is not None else None,
        "params": {"total": built.total_params, "trainable": built.trainable_params,
                   "trainable_percent": 100 * built.trainable_params / built.total_params,
                   "optimizer_state_numel": opt_state["total"],
                   "optimizer_state": opt_state,
                   "frozen_numel_per_rank": frozen_per_rank},
        "frozen_backbone": frozen,
        "train_loss": {"first": progress.first_loss, "last": progress.last_loss},
        "tasks": {task.name: {
            "main_metric": task.main_metric,
            "last": {**{f"dev_{k}": v for k, v in last_dev.get(task.name, {}).items()},
                     **{f"test_{k}": v for k, v in last_test.get(task.name, {}).items()}},
            "best_dev": {**{f"dev_{k}": v for k, v in best["dev"].get(task.name, {}).items()},
                         **{f"test_{k}": v for k, v in best["test"].get(task.name, {}).items()}, "step": best["step"]},
        } for task in tasks},
        "best_dev_criterion": _criterion(tasks),
        "mixture": mixer.mixture(),
        "init_from": warm[1] if warm else None,
        "eval_history": progress.history,
        "wall_time_s": time.time() - started,
        "peak_rss_mb_per_rank": _peak_rss_mb_per_rank(),
    }
    # collective: gathers the prompt and head shards; the model after the LAST step
    artifact = save_artifact(engine, run, tasks, model_path, out_dir / "artifact",
                             extra={"steps": tr.max_steps, "metrics": {t.name: results["tasks"][t.name]["last"]
                                                                       for t in tasks} if len(tasks) > 1
                                    else results["tasks"][tasks[0].name]["last"]})
    results["artifact"] = str(artifact)
    if rank == 0:
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
        lines = [f"LAST (step {tr.max_steps}): {_scores(results['tasks'][t.name]['last'], t.main_metric)} | "
                 f"BEST-DEV (step {best['step']}): {_scores(results['tasks'][t.name]['best_dev'], t.main_metric)}"
                 for t in tasks]
        if len(tasks) == 1:
            log.info("done in %.0f s | %s | %s", results["wall_time_s"], lines[0], out_dir / "results.json")
        else:
            for t, line in zip(tasks, lines):
                log.info("%s | %s", t.name, line)
            log.info("done in %.0f s | mixture drawn (steps per task): %s | best dev = %s | %s",
                     results["wall_time_s"], ", ".join(f"{n} {c}" for n, c in results["mixture"]["steps"].items()),
                     _criterion(tasks), out_dir / "results.json")
    scalars.close()
    dist.barrier()
    return results


def _peak_rss_mb_per_rank() -> list[float]:
    """Each rank's peak resident memory so far (MiB; Linux reports ru_maxrss in KiB), gathered."""
    import resource

    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_rank = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, round(mine, 1))
    return per_rank


def _agree(flag) -> bool:
    """A time-based decision every rank takes together (clocks differ a little)."""
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t)
    return t.item() > 0


def _mean_main_metric(tasks, dev: dict) -> float:
    """The best-dev criterion: the mean over tasks of each task's main metric on dev."""
    return sum(dev[t.name][t.main_metric] for t in tasks) / len(tasks)


def _criterion(tasks) -> str:
    if len(tasks) == 1:
        return tasks[0].main_metric
    return "mean(" + ", ".join(f"{t.name} {t.main_metric}" for t in tasks) + ")"


def _scores(r: dict, metric: str) -> str:
    """'dev f1 43.05, test f1 44.15' (test only where the task has one)."""
    return ", ".join(f"{split} {metric} {r[f'{split}_{metric}']:.2f}" for split in ("dev", "test")
                     if f"{split}_{metric}" in r)


def _check_same_mixture(mixer: TaskMixer) -> None:
    """Every rank must draw the same tasks or ZeRO-3 hangs: compare what the draws depend on (task
    names, training-set sizes, seed) across ranks once, and stop with one line if they differ
    (e.g. nodes reading different copies of a dataset)."""
    mine = (mixer.names, mixer.sizes, mixer.seed)
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    differ = [r for r, x in enumerate(everyone) if x != everyone[0]]
    if differ:
        raise ConfigError(f"tasks: rank {differ[0]} sees tasks/training sizes/seed {everyone[differ[0]]} but rank 0 "
                          f"sees {everyone[0]}; every rank needs the same data (or ZeRO-3 would hang)")


def _log_layout(run: RunConfig, built, tasks, world: int) -> list[int]:
    """Rank 0 logs the world, the parameter counts and what each rank stores; returns the latter."""
    ds = built.ds_config
    log.info("world %d rank(s) = %s", world, world_info.layout(world_info.peers() or [world_info.me()]))
    log.info("%s | backbone %s (%s) | method %s | precision %s | ZeRO stage %s",
             ", ".join(t.name for t in tasks), run.model.path, built.adapter.family, run.prompt.method, built.precision,
             ds.get("zero_optimization", {}).get("stage", 0))
    log.info("params: %s total, %s trainable (%.3f%%) | batch %d = micro %d x accum %d x ranks %d",
             f"{built.total_params:,}", f"{built.trainable_params:,}",
             100 * built.trainable_params / built.total_params, ds["train_batch_size"],
             ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], world)
    per_rank = ds_setup.local_frozen_numel_per_rank(built.model)
    log.info("frozen weights stored per rank: %s (of %s)", ", ".join(f"{n:,}" for n in per_rank),
             f"{built.total_params - built.trainable_params:,}")
    return per_rank


class _TrainLog:
    """output_dir/train_log.jsonl: one line per optimizer step (rank 0). A resumed run drops the
    lines after its checkpoint's step, so the file always tells one consistent history."""

    def __init__(self, path: Path, start_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled:
            kept = []
            if start_step and path.is_file():
                kept = [l for l in path.read_text().splitlines() if l and json.loads(l)["step"] <= start_step]
            path.write_text("".join(l + "\n" for l in kept))

    def write(self, step: int, loss: float, lr: float, task: str | None = None) -> None:
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps({"step": step, "loss": loss, "lr": lr, **({"task": task} if task else {})}) + "\n")


def _progress(total: int, enabled: bool, initial: int = 0):
    """A tqdm bar on rank 0 when stderr is a terminal; disabled otherwise (plain log lines instead)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="train", disable=not (enabled and os.isatty(2)),
                dynamic_ncols=True)


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
