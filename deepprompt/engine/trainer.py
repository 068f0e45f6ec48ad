"""The one training loop: every method, backbone and task runs through ``train``.

A run trains one task or several (``tasks:``): one shared prompt, one head per task. The mixer
(``data/mixer.py``) draws the task of every optimizer step from (seed, step), identically on every
rank; a single task is simply N=1. Best-dev tracking maximises the MEAN over tasks of each task's
main metric (for one task: its main metric)."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from deepprompt.cli import setup_logging
from deepprompt import schedules
from deepprompt.config import RunConfig, TrainConfig
from deepprompt.errors import ConfigError
from deepprompt.data.mixer import TaskMixer
from deepprompt.engine import checkpoint, comm, ds_setup, init_from, layout, preflight, setup, throughput
from deepprompt.engine import world as world_info
from deepprompt.engine.evaluate import evaluate
from deepprompt.artifacts import save_artifact
from deepprompt.fileio import atomic_write
from deepprompt.engine.results import collect, criterion, log_done, mean_main_metric, prefixed
from deepprompt.engine.run_log import Progress, Scalars, StepRecord, TrainLog, hms, progress_bar, warmup_steps
from deepprompt.engine.signals import EXIT_PREEMPTED, StopFlag

log = logging.getLogger("deepprompt")
BEST_ARTIFACT = "artifact_best"  # output_dir/artifact_best: prompts + heads of the best dev step
ARTIFACT = "artifact"  # output_dir/artifact: prompts + heads after the last step
OUTPUT_DIRS = (checkpoint.CKPT_DIR, ARTIFACT, BEST_ARTIFACT, "logs", "tensorboard")
OUTPUT_FILES = ("results.json", "run_config.json", "ds_config.json", "train_log.jsonl", "eval_log.jsonl", "PREEMPTED")


def train(run: RunConfig, ds_config_path: str) -> dict:
    """Set up, train to ``train.max_steps`` (or resume there; or until early stopping), evaluate,
    save; returns results.json."""
    trainer = Trainer(run, ds_config_path)
    trainer.loop()
    results = trainer.finish()  # ends with a barrier: every rank is done
    comm.shutdown()
    return results


class Trainer:
    """One run: ``__init__`` checks everything and builds the engine (or resumes it), ``loop`` runs
    the optimizer steps, ``finish`` scores LAST and BEST-DEV, saves and writes results.json."""

    def __init__(self, run: RunConfig, ds_config_path: str):
        self.run, self.tr, self.started = run, run.train, time.time()
        self.out_dir = Path(run.output_dir)
        # one line (on every rank) if it cannot be a directory, or holds a file where the run writes a directory
        preflight.check_output_dir(run.output_dir, dirs=OUTPUT_DIRS, files=OUTPUT_FILES)
        comm.init_distributed(self.tr.dist_timeout_s)  # the device first, then the group
        self.rank, self.world = comm.rank(), comm.world_size()
        setup_logging(self.rank, self.out_dir / "logs")

        # ---- everything that can be wrong is checked before the weights load
        # the backbone, the DeepSpeed JSON, the tokenizer and every task's data, each resolved ONCE:
        # the start-up checks (same code/config on every rank, paths, batch, disk) resolve the first two
        backbone, ds = preflight.run(run, ds_config_path)
        resume_from = checkpoint.resume_point(run)
        self.resolved = setup.resolve(run, backbone, ds, ds_config_path)  # reads every task's data
        self.model_path, self.tasks = self.resolved.model_path, self.resolved.tasks
        self.tr = self._length(self.resolved.ds_config)  # train.epochs becomes a step count here, from the data
        self.warm = None
        if resume_from is None:  # a resumed run takes everything from its checkpoint
            self.warm = init_from.prepare(run, self.model_path, self.resolved.family, self.tasks)
        self.built = setup.build(self.resolved, dataclasses.replace(run, train=self.tr),
                                 init=self.warm[0] if self.warm else None)
        self.engine, self.model = self.built.engine, self.built.model
        ds = self.built.ds_config
        self.grad_accum = ds["gradient_accumulation_steps"]
        self.frozen_per_rank = _log_layout(run, self.built, self.tasks, self.world)
        if self.rank == 0:
            for name, content in (("run_config.json", run.to_dict()), ("ds_config.json", ds_setup.public(ds))):
                atomic_write(self.out_dir / name, lambda p, c=content: p.write_text(json.dumps(c, indent=2)))

        self.train_feats = [task.features("train") for task in self.tasks]
        self.mixer = TaskMixer([t.name for t in self.tasks], [len(f) for f in self.train_feats], run.mixer,
                               self.tr.seed, self.world, self.rank, ds["train_micro_batch_size_per_gpu"])
        _check_same_mixture(self.mixer)
        if len(self.tasks) > 1:
            log.info("mixing %d tasks (%s): %s", len(self.tasks), run.mixer.policy, ", ".join(
                f"{n} {r:.3f} ({s} examples)" for n, r, s in zip(self.mixer.names, self.mixer.rates, self.mixer.sizes)))
        self.progress = Progress()
        self.start_step = 0
        self.resumed = resume_from is not None
        if self.resumed:
            state = checkpoint.load(self.engine, self.model, resume_from)
            checkpoint.missing_state(resume_from, state, ("progress", ("mixer", "sampler")))  # older ones: sampler
            self.mixer.load_state_dict(state.get("mixer") or {"sampler": state["sampler"]}, step=state["step"])
            self.progress.load_state_dict(state["progress"])
            self.start_step = state["step"]
            _check_same_length(state, self.tr, resume_from)
            log.info("resumed from %s (step %d, saved by %d rank(s))", resume_from, self.start_step,
                     state["world_size"])
        self.frozen_before = ds_setup.frozen_fingerprint(self.model) if self.tr.verify_frozen else None
        self.scalars = Scalars(self.out_dir, self.rank == 0)
        self.train_log = TrainLog(self.out_dir / "train_log.jsonl", self.start_step, enabled=self.rank == 0)
        self.eval_log = TrainLog(self.out_dir / "eval_log.jsonl", self.start_step, enabled=self.rank == 0)
        self.stop = StopFlag().install()
        self.meter = throughput.Meter(self.start_step, warmup_steps(self.tr.max_steps - self.start_step))
        self.pending: StepRecord | None = None  # the last step, its reduction still on its way to the host
        self.window: list[float] = []

    # ---- the loop
    def loop(self) -> None:
        """Optimizer steps to ``train.max_steps``. Each step's loss, token count and the flags every
        rank must agree on (a stop signal, a timed save) travel in ONE all-reduce, read on the host
        one step later (``comm.HostCopy``): no step waits for the device to drain, and a decision
        made at step s takes effect at step s+1 on every rank alike."""
        tr = self.tr
        self.engine.train()
        self.bar = progress_bar(tr.max_steps, self.rank == 0, self.start_step)
        self.loop_start, last_save = time.time(), time.time()
        self._maybe_start_meter(self.start_step)
        for step in range(self.start_step + 1, self.final_step + 1):
            lr = self.engine.get_lr()[0]  # the rate this step trains at (the step advances the schedule)
            task, values = self._optimizer_step(step)
            due = bool(tr.save_every_minutes) and time.time() - last_save >= 60 * tr.save_every_minutes
            values[3:] = torch.tensor([float(self.stop.raised), float(due)], dtype=values.dtype)
            stop, due = self._settle(StepRecord(step, task.name, lr, comm.all_reduce_to_host(values)))
            self._maybe_start_meter(step)
            save_now = step != tr.max_steps and ((tr.save_every and step % tr.save_every == 0) or due)
            if stop or save_now:  # a checkpoint holds this step's record too
                stop = self._settle(None)[0] or stop
            if stop:
                self._exit_preempted(step)
            if tr.eval_every and step % tr.eval_every == 0 and step != tr.max_steps:
                self._paused(self.eval_and_track, step)
                if self.progress.stopped_early:  # patience ran out: end at this step like a normal run
                    break
            if save_now:
                self._paused(self.save, step)
                last_save = time.time()
        if self._settle(None)[0]:  # signalled during the last step
            self._exit_preempted(self.final_step)
        self._stop_meter()
        self.bar.close()
        self.stop.restore()

    def _optimizer_step(self, step: int):
        """One optimizer step (its gradient-accumulation micro-batches) of the task the mixer draws;
        returns (task, [mean loss, real tokens, sequences, 0, 0]) on the device, this rank's share."""
        # dropout depends only on (seed, step, rank): a resumed run draws the same masks
        torch.manual_seed((self.tr.seed * 1_000_003 + step) * 1_009 + self.rank)
        t = self.mixer.start_step(step)  # the same task on every rank: ZeRO-3 needs the same modules everywhere
        task, ga = self.tasks[t], self.grad_accum
        values = torch.zeros(5, dtype=torch.float64, device=self.engine.device)
        for _ in range(ga):
            feats = [self.train_feats[t][i] for i in self.mixer.next_micro_batch()]
            batch = {k: v.to(self.engine.device) for k, v in task.collate(feats).items()}
            loss = self.engine(batch, task.name).loss
            self.engine.backward(loss)
            self.engine.step()
            real = batch.get("attention_mask", batch["input_ids"] >= 0)
            values[0] += loss.detach().double() / ga  # stays on the device: no host sync per micro-batch
            values[1] += real.sum()
            values[2] += real.shape[:-1].numel()
        return task, values

    def _settle(self, record: StepRecord | None) -> tuple[bool, bool]:
        """Make ``record`` the pending step and account for the one before it (``None``: account for
        the pending step now). Returns that step's agreed (stop, timed save due)."""
        done, self.pending = self.pending, record
        if done is None:
            return False, False
        loss_sum, tokens, rows, stop, due = done.reduced.values()
        loss = loss_sum / self.world
        tr, step = self.tr, done.step
        self.meter.add(step, tokens, rows)
        self.train_log.write(step, loss, done.lr, done.task if len(self.tasks) > 1 else None)
        self.window.append(loss)
        self.progress.first_loss = loss if self.progress.first_loss is None else self.progress.first_loss
        self.progress.last_loss = loss
        self.bar.update(1)
        if step % tr.log_every == 0 or step == tr.max_steps:
            mean = sum(self.window) / len(self.window)
            self.window.clear()
            self.scalars.add("train/loss", mean, step)
            self.scalars.add("train/lr", done.lr, step)
            self.bar.set_postfix(loss=f"{mean:.4f}", lr=f"{done.lr:.2e}")
            if self.bar.disable and self.rank == 0:  # no terminal (a log file, CI): one plain line instead of a bar
                per_step = (time.time() - self.loop_start) / (step - self.start_step)
                log.info("step %d/%d | loss %.4f | lr %.2e | %.2f s/step | eta %s", step, tr.max_steps, mean,
                         done.lr, per_step, hms(per_step * (tr.max_steps - step)))
        return stop > 0, due > 0

    def _maybe_start_meter(self, step: int) -> None:
        """Throughput is timed from the end of the warm-up steps on (the device drained first)."""
        if step == self.meter.first_counted and self.start_step < self.tr.max_steps:
            comm.synchronize()
            self.meter.start()

    def _stop_meter(self) -> bool:
        """Stop the throughput clock once the queued steps are done; whether it was running."""
        running = self.meter.running()
        if running:
            comm.synchronize()
            self.meter.pause()
        return running

    def _paused(self, work, *args) -> None:
        """``work`` outside the throughput clock (evaluation, checkpoints)."""
        running = self._stop_meter()
        work(*args)
        if running:
            self.meter.start()

    def _exit_preempted(self, step: int):
        self.save(step)
        log.warning("preempted at step %d: checkpoint saved; re-run the same command to resume", step)
        if self.rank == 0:
            (self.out_dir / "PREEMPTED").write_text(f"{step}\n")
        self.stop.restore()
        comm.barrier()
        comm.shutdown()
        raise SystemExit(EXIT_PREEMPTED)

    def save(self, step: int) -> None:
        # the best dev step's checkpoint survives train.keep_checkpoints (when one was saved at that step)
        checkpoint.save(self.engine, self.model, self.run, step, {"mixer": self.mixer.state_dict(),
                                                                  "progress": self.progress.state_dict(),
                                                                  "max_steps": self.tr.max_steps},
                        self.tr.keep_checkpoints, protect=self.progress.best["step"])

    # ---- how long: train.max_steps or train.epochs, and early stopping
    def _length(self, ds: dict) -> TrainConfig:
        """The train config with ``max_steps`` set: as given, or the steps ``train.epochs`` makes of
        this training data (every task's examples added up, at the global batch DeepSpeed will use)."""
        tr = self.run.train
        if tr.epochs is None:
            return tr
        batch = ds["train_batch_size"]  # resolved by the preflight for this world size
        examples = sum(len(t.features("train")) for t in self.tasks)
        steps = schedules.steps_for_epochs(tr.epochs, examples, batch)
        log.info("train.epochs %g = %d steps (%d training examples%s / global batch %d per step)", tr.epochs, steps,
                 examples, f" over {len(self.tasks)} tasks" * (len(self.tasks) > 1), batch)
        return dataclasses.replace(tr, max_steps=steps)

    @property
    def final_step(self) -> int:
        """The step the run ends at: train.max_steps, or the evaluation where early stopping ended it."""
        stopped = self.progress.stopped_early
        return stopped["step"] if stopped else self.tr.max_steps

    def _count_patience(self, step: int, improved: bool) -> None:
        """Early stopping. The dev metrics are the same on every rank (evaluate broadcasts them), so
        every rank takes this decision alike without a collective; it lives in Progress, so a resumed
        run continues the count."""
        progress, patience = self.progress, self.tr.early_stopping_patience
        progress.evals_without_improvement = 0 if improved else progress.evals_without_improvement + 1
        if not patience or progress.evals_without_improvement < patience or step >= self.tr.max_steps:
            return
        best = progress.best
        reason = (f"dev {criterion(self.tasks)} did not improve for {progress.evals_without_improvement} "
                  f"evaluations (train.early_stopping_patience={patience}); best {best['value']:.2f} at step "
                  f"{best['step']}")
        progress.stopped_early = {"step": step, "reason": reason}
        log.info("early stopping at step %d of %d: %s", step, self.tr.max_steps, reason)

    def _save_best_artifact(self, step: int) -> None:
        """Collective: output_dir/artifact_best, the prompts and heads of the new best dev step."""
        best = self.progress.best
        metrics = {t.name: prefixed(best["dev"], best["test"], t.name) for t in self.tasks}
        save_artifact(self.engine, self.run, self.tasks, self.model_path, self.out_dir / BEST_ARTIFACT,
                      extra={"steps": step, "best_dev_step": step,
                             "metrics": metrics if len(self.tasks) > 1 else metrics[self.tasks[0].name]})

    def _best_artifact(self) -> str | None:
        """artifact_best's path for results.json, where it holds the best step (rank 0 reads it). A
        run killed after writing it but before its next checkpoint may have left one of a step that
        the resumed run did not reach again: named, not passed off as the best."""
        best_step, path = self.progress.best["step"], self.out_dir / BEST_ARTIFACT
        if best_step is None or self.rank != 0:
            return str(path) if best_step is not None else None
        try:
            saved = json.loads((path / "prompts.json").read_text())["extra"].get("best_dev_step")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing, cut short, another shape
            saved = None
        if saved != best_step:
            log.warning("%s holds step %s, not the best dev step %d (written by a run killed before its next "
                        "checkpoint); results.json names no artifact_best", path, saved, best_step)
            return None
        return str(path)

    # ---- evaluation
    def eval_split(self, split: str) -> dict:
        """{task: metrics} for every task that has ``split``."""
        return {t.name: evaluate(self.engine, t, split, self.tr.eval_batch_size) for t in self.tasks
                if split in t.splits}

    def eval_and_track(self, step: int) -> dict:
        """Dev of every task; test too when the dev criterion improves (BEST-DEV keeps both)."""
        tasks, dev = self.tasks, self.eval_split("dev")
        for name, metrics in dev.items():
            for k, v in metrics.items():
                self.scalars.add(f"dev/{k}" if len(tasks) == 1 else f"dev/{name}/{k}", v, step)
        value = mean_main_metric(tasks, dev)
        entry, best = {"step": step, "dev": dev, "dev_mean_main": value}, self.progress.best
        improved = best["value"] is None or value > best["value"]
        if improved:
            test = self.eval_split("test")
            best.update(value=value, step=step, dev=dev, test=test)
            entry["test"] = test
            self._save_best_artifact(step)
        self.progress.history.append(entry)
        self.eval_log.write_record({"step": step, "dev_mean_main": value, "dev": dev})  # read live by deepprompt sweep
        log.info("step %d | dev %s | best dev %s %.2f at step %d", step, " | ".join(
            f"{n} " * (len(tasks) > 1) + " ".join(f"{k} {v:.2f}" for k, v in m.items()) for n, m in dev.items()),
            criterion(tasks), best["value"], best["step"])
        self._count_patience(step, improved)
        return dev

    # ---- the end
    def finish(self) -> dict:
        progress, final = self.progress, self.final_step
        if progress.history and progress.history[-1]["step"] == final:  # re-run of a finished run; early stop
            last_dev = progress.history[-1]["dev"]
        else:
            last_dev = self.eval_and_track(final)
        best = progress.best
        last_test = best["test"] if best["step"] == final else self.eval_split("test")
        self.save(final)
        if self.rank == 0:
            (self.out_dir / "PREEMPTED").unlink(missing_ok=True)
        results = collect(self, last_dev, last_test)
        tasks = self.tasks
        # collective: gathers the prompt and head shards; the model after the LAST step
        last = {t.name: results["tasks"][t.name]["last"] for t in tasks}
        artifact = save_artifact(self.engine, self.run, tasks, self.model_path, self.out_dir / ARTIFACT,
                                 extra={"steps": final,
                                        "metrics": last if len(tasks) > 1 else last[tasks[0].name]})
        results["artifact"] = str(artifact)
        results["artifact_best"] = self._best_artifact()
        results["stopped_early"] = progress.stopped_early
        if self.rank == 0:
            # atomic: its presence marks the run finished (deepprompt sweep reuses it, never reruns it)
            atomic_write(self.out_dir / "results.json", lambda p: p.write_text(json.dumps(results, indent=2)))
            log_done(results, tasks, self.out_dir / "results.json")
        self.scalars.close()
        comm.barrier()
        return results

def _check_same_length(state: dict, tr: TrainConfig, where) -> None:
    """By train.epochs the length comes from the data: a resume must find the same step count, or
    the LR schedule and the step count would silently change mid-run."""
    saved = state.get("max_steps")  # train.max_steps itself is in the config signature
    if tr.epochs is not None and saved is not None and saved != tr.max_steps:
        raise ConfigError(f"cannot resume from {where}: the run has {tr.max_steps} steps now (train.epochs {tr.epochs:g} "
                          f"of this training data) but {saved} when it was saved: the training data changed; restore "
                          f"it, or start fresh with train.resume=never")


def _check_same_mixture(mixer: TaskMixer) -> None:
    """Every rank must draw the same tasks or ZeRO-3 hangs: compare what the draws depend on (task
    names, training-set sizes, seed) across ranks once, and stop with one line if they differ
    (e.g. nodes reading different copies of a dataset)."""
    mine = (mixer.names, mixer.sizes, mixer.seed)
    everyone = comm.all_gather_object(mine)
    differ = [r for r, x in enumerate(everyone) if x != everyone[0]]
    if differ:
        raise ConfigError(f"tasks: rank {differ[0]} sees tasks/training sizes/seed {everyone[differ[0]]} but rank 0 "
                          f"sees {everyone[0]}; every rank needs the same data (or ZeRO-3 would hang)")


def _log_layout(run: RunConfig, built, tasks, world: int) -> list[int]:
    """Rank 0 logs the world, the parameter counts and what each rank holds; returns the latter."""
    ds = built.ds_config
    log.info("world %d rank(s) = %s", world, world_info.layout(world_info.peers() or [world_info.me()]))
    log.info("%s | backbone %s (%s) | method %s | precision %s | ZeRO stage %s",
             ", ".join(t.name for t in tasks), run.model.path, built.adapter.family, run.prompt.method, built.precision,
             ds.get("zero_optimization", {}).get("stage", 0))
    log.info("params: %s total, %s trainable (%.3f%%) | batch %d = micro %d x accum %d x ranks %d",
             f"{built.total_params:,}", f"{built.trainable_params:,}",
             100 * built.trainable_params / built.total_params, ds["train_batch_size"],
             ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], world)
    return layout.log_layout(run, built, tasks)  # layout, frozen weights held per rank, calculator, warnings


