"""What a finished run reports: results.json (per task LAST and BEST-DEV, parameters, throughput,
memory, the frozen-backbone check) and rank 0's closing log lines; the best-dev criterion."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from deepprompt.engine import comm, ds_setup, throughput

log = logging.getLogger("deepprompt")


def frozen_check(model, before: dict | None) -> dict | None:
    """The frozen backbone's per-rank fingerprint against the one taken before training."""
    if before is None:
        return None
    after = ds_setup.frozen_fingerprint(model)
    frozen = {"numel": after["numel"], "unchanged": after == before if after["numel"] else None}
    if frozen["unchanged"] is False:
        log.error("frozen backbone weights CHANGED during training (per-rank SHA-256 differ)")
    return frozen


def collect(trainer, last_dev: dict, last_test: dict) -> dict:
    """results.json of a finished run (collective: optimizer-state sizes, frozen check, peak memory)."""
    self = trainer
    run, tr, built, best = self.run, self.tr, self.built, self.progress.best
    opt_state = ds_setup.optimizer_state_numel(self.engine)
    frozen = frozen_check(self.model, self.frozen_before)
    rss, accel = peak_memory_per_rank()
    device = comm.device_info()
    peak = tr.peak_tflops or throughput.default_peak_tflops(device["name"] if device["accelerator"] != "cpu"
                                                             else None, built.precision)
    return {
        "method": run.prompt.method,
        "model": run.model.path,
        "world_size": self.world,
        "steps": self.final_step,
        "max_steps": tr.max_steps,
        "seed": tr.seed,
        "precision": built.precision,
        "resumed_from": self.start_step if self.resumed else None,
        "params": {"total": built.total_params, "trainable": built.trainable_params,
                   "trainable_percent": 100 * built.trainable_params / built.total_params,
                   "optimizer_state_numel": opt_state["total"],
                   "optimizer_state": opt_state,
                   "frozen_numel_per_rank": self.frozen_per_rank},
        "frozen_backbone": frozen,
        "train_loss": {"first": self.progress.first_loss, "last": self.progress.last_loss},
        "tasks": {task.name: {
            "main_metric": task.main_metric,
            "last": {**{f"dev_{k}": v for k, v in last_dev.get(task.name, {}).items()},
                     **{f"test_{k}": v for k, v in last_test.get(task.name, {}).items()}},
            "best_dev": {**{f"dev_{k}": v for k, v in best["dev"].get(task.name, {}).items()},
                         **{f"test_{k}": v for k, v in best["test"].get(task.name, {}).items()},
                         "step": best["step"]},
        } for task in self.tasks},
        "best_dev_criterion": criterion(self.tasks),
        "mixture": self.mixer.mixture(),
        "init_from": self.warm[1] if self.warm else None,
        "eval_history": self.progress.history,
        "wall_time_s": time.time() - self.started,
        "device": device,
        "throughput": self.meter.report(flops_model(self), self.world, peak),
        "peak_rss_mb_per_rank": rss,
        "peak_accelerator_memory_mb_per_rank": accel,
    }

def flops_model(trainer) -> throughput.FlopsModel:
    """What a step costs, for tokens/s and MFU."""
    self = trainer
    model, spec = self.model, self.built.adapter.spec()
    prefix_layers = sorted(getattr(model.prompt, "layers", None) or [])
    deep = bool(prefix_layers) and not model.prompt.puts_prompt_at_input
    return throughput.FlopsModel(
        n_matmul=throughput.matmul_params(model.backbone), num_layers=spec.num_layers, hidden=spec.hidden,
        prefix_length=self.run.prompt.length if deep else 0, finetune=not model.prompt.freezes_backbone,
        checkpointing=self.tr.activation_checkpointing,
        backward_layers=spec.num_layers - prefix_layers[0] if deep else spec.num_layers)


def log_done(results: dict, tasks, path: Path) -> None:
    """Rank 0's closing lines: LAST and BEST-DEV per task, the wall time, where results.json is."""
    best_step = results["tasks"][tasks[0].name]["best_dev"]["step"]
    lines = [f"LAST (step {results['steps']}): {scores(results['tasks'][t.name]['last'], t.main_metric)} | "
             f"BEST-DEV (step {best_step}): {scores(results['tasks'][t.name]['best_dev'], t.main_metric)}"
             for t in tasks]
    speed = speed_text(results["throughput"])
    if len(tasks) == 1:
        log.info("done in %.0f s | %s%s | %s", results["wall_time_s"], lines[0], speed, path)
    else:
        for t, line in zip(tasks, lines):
            log.info("%s | %s", t.name, line)
        log.info("done in %.0f s | mixture drawn (steps per task): %s | best dev = %s%s | %s",
                 results["wall_time_s"], ", ".join(f"{n} {c}" for n, c in results["mixture"]["steps"].items()),
                 results["best_dev_criterion"], speed, path)


def speed_text(tp: dict) -> str:
    """' | 5,210 tokens/s | MFU 41.3%' (MFU where a peak is known; nothing when no step was timed)."""
    if tp["tokens_per_s"] is None:
        return ""
    mfu = f" | MFU {100 * tp['mfu']:.1f}%" if tp["mfu"] is not None else ""
    return f" | {tp['tokens_per_s']:,.0f} tokens/s{mfu}"


def peak_memory_per_rank() -> tuple[list[float], list[float | None]]:
    """Each rank's peak resident memory (MiB; Linux reports ru_maxrss in KiB) and peak accelerator
    memory allocated (MiB; None on CPU), gathered in one collective."""
    import resource

    mine = (round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), comm.peak_memory_mb())
    everyone = comm.all_gather_object(mine)
    return [r for r, _ in everyone], [None if a is None else round(a, 1) for _, a in everyone]


def prefixed(dev: dict, test: dict, task: str) -> dict:
    """{dev_<metric>: .., test_<metric>: ..} of one task (what results.json reports per task)."""
    return {**{f"dev_{k}": v for k, v in dev.get(task, {}).items()},
            **{f"test_{k}": v for k, v in test.get(task, {}).items()}}


def mean_main_metric(tasks, dev: dict) -> float:
    """The best-dev criterion: the mean over tasks of each task's main metric on dev."""
    return sum(dev[t.name][t.main_metric] for t in tasks) / len(tasks)


def criterion(tasks) -> str:
    if len(tasks) == 1:
        return tasks[0].main_metric
    return "mean(" + ", ".join(f"{t.name} {t.main_metric}" for t in tasks) + ")"


def scores(r: dict, metric: str) -> str:
    """'dev f1 43.05, test f1 44.15' (test only where the task has one)."""
    return ", ".join(f"{split} {metric} {r[f'{split}_{metric}']:.2f}" for split in ("dev", "test")
                     if f"{split}_{metric}" in r)
