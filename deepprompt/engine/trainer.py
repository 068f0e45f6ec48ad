"""The one training loop: every method, backbone and task runs through ``train``."""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from deepprompt.config import RunConfig
from deepprompt.data.sampler import ShardedSampler
from deepprompt.engine import ds_setup
from deepprompt.engine.evaluate import evaluate
from deepprompt.models.loading import load_tokenizer_and_config, resolve_model_path
from deepprompt.tasks import build_task

log = logging.getLogger("deepprompt")


def setup_logging(rank: int) -> None:
    # torch.distributed deprecation chatter from inside DeepSpeed, once per collective kind per rank
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank{rank}] %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("DeepSpeed", "transformers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from deepspeed.utils import logger as ds_logger
        ds_logger.setLevel(logging.WARNING)
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def train(run: RunConfig, ds_config_path: str) -> dict:
    setup_logging(int(os.environ.get("RANK", "0")))
    ds_setup.init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    out_dir = Path(run.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    ds_raw = ds_setup.read_ds_config(ds_config_path)
    model_path = resolve_model_path(run.model.path)
    tokenizer, model_config = load_tokenizer_and_config(model_path, run.model.family)
    task = build_task(run.task, tokenizer)
    for split in task.splits:
        task.features(split)  # read + tokenize everything before the model loads: data errors fail fast
    built = ds_setup.build(run, ds_raw, [task], model_path, model_config, src=ds_config_path)
    engine, ds = built.engine, built.ds_config
    tr = run.train
    mb, ga = ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]
    log.info("world %d rank(s) | %s | backbone %s (%s) | method %s | precision %s | ZeRO stage %s",
             world, task.name, run.model.path, built.adapter.family, run.prompt.method, built.precision,
             ds.get("zero_optimization", {}).get("stage", 0))
    log.info("params: %s total, %s trainable (%.3f%%) | batch %d = micro %d x accum %d x ranks %d",
             f"{built.total_params:,}", f"{built.trainable_params:,}",
             100 * built.trainable_params / built.total_params, ds["train_batch_size"], mb, ga, world)
    frozen_per_rank = ds_setup.local_frozen_numel_per_rank(built.model)
    log.info("frozen weights stored per rank: %s (of %s)", ", ".join(f"{n:,}" for n in frozen_per_rank),
             f"{built.total_params - built.trainable_params:,}")
    if rank == 0:
        (out_dir / "run_config.json").write_text(json.dumps(run.to_dict(), indent=2))
        (out_dir / "ds_config.json").write_text(json.dumps(ds_setup.public(ds), indent=2))

    frozen_before = ds_setup.frozen_fingerprint(built.model) if tr.verify_frozen else None
    seed_everything(tr.seed + rank)  # dropout differs per rank, data order is the sampler's
    train_feats = task.features("train")
    sampler = ShardedSampler(len(train_feats), world, rank, mb, tr.seed, task.name)
    scalars = Scalars(out_dir, rank == 0)
    history, first_loss, last_loss, window = [], None, None, []
    best = {"value": -math.inf, "step": None, "dev": None, "test": None}

    def eval_and_track(step: int) -> dict:
        dev = evaluate(engine, task, "dev", tr.eval_batch_size)
        for k, v in dev.items():
            scalars.add(f"dev/{k}", v, step)
        entry = {"step": step, "dev": dev}
        if dev[task.main_metric] > best["value"]:
            test = evaluate(engine, task, "test", tr.eval_batch_size)
            best.update(value=dev[task.main_metric], step=step, dev=dev, test=test)
            entry["test"] = test
        history.append(entry)
        log.info("step %d | dev %s | best dev %s %.2f at step %d", step,
                 " ".join(f"{k} {v:.2f}" for k, v in dev.items()), task.main_metric, best["value"], best["step"])
        return dev

    engine.train()
    bar = _progress(tr.max_steps, rank == 0)
    loop_start = time.time()
    for step in range(1, tr.max_steps + 1):
        step_loss = 0.0
        for _ in range(ga):
            feats = [train_feats[i] for i in sampler.next()]
            batch = {k: v.to(engine.device) for k, v in task.collate(feats).items()}
            loss = engine(batch, task.name).loss
            engine.backward(loss)
            engine.step()
            step_loss += loss.item() / ga
        window.append(step_loss)
        if step % tr.log_every == 0 or step == 1 or step == tr.max_steps:
            mean = torch.tensor([sum(window) / len(window)], dtype=torch.float64)
            dist.all_reduce(mean)
            mean = mean.item() / world
            window.clear()
            first_loss = mean if first_loss is None else first_loss
            last_loss = mean
            lr = engine.get_lr()[0]
            scalars.add("train/loss", mean, step)
            scalars.add("train/lr", lr, step)
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2e}")
            if bar.disable and rank == 0:  # no terminal (a log file, CI): one plain line instead of a bar
                elapsed = time.time() - loop_start
                log.info("step %d/%d | loss %.4f | lr %.2e | %.2f s/step | eta %s", step, tr.max_steps, mean, lr,
                         elapsed / step, _hms(elapsed / step * (tr.max_steps - step)))
        bar.update(1)
        if tr.eval_every and step % tr.eval_every == 0 and step != tr.max_steps:
            eval_and_track(step)
    bar.close()
    last_dev = eval_and_track(tr.max_steps)
    last_test = best["test"] if best["step"] == tr.max_steps else evaluate(engine, task, "test", tr.eval_batch_size)

    opt_state = ds_setup.optimizer_state_numel(engine)
    frozen = None
    if frozen_before is not None:
        after = ds_setup.frozen_fingerprint(built.model)
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
        "params": {"total": built.total_params, "trainable": built.trainable_params,
                   "trainable_percent": 100 * built.trainable_params / built.total_params,
                   "optimizer_state_numel": opt_state["total"],
                   "optimizer_state": opt_state,
                   "frozen_numel_per_rank": frozen_per_rank},
        "frozen_backbone": frozen,
        "train_loss": {"first": first_loss, "last": last_loss},
        "tasks": {task.name: {
            "main_metric": task.main_metric,
            "last": {**{f"dev_{k}": v for k, v in last_dev.items()},
                     **{f"test_{k}": v for k, v in last_test.items()}},
            "best_dev": {**{f"dev_{k}": v for k, v in best["dev"].items()},
                         **{f"test_{k}": v for k, v in best["test"].items()}, "step": best["step"]},
        }},
        "eval_history": history,
        "wall_time_s": time.time() - started,
    }
    if rank == 0:
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
        r = results["tasks"][task.name]
        m = task.main_metric
        log.info("done in %.0f s | LAST (step %d): dev %s %.2f, test %s %.2f | BEST-DEV (step %d): dev %s %.2f, "
                 "test %s %.2f | %s", results["wall_time_s"], tr.max_steps, m, r["last"][f"dev_{m}"], m,
                 r["last"][f"test_{m}"], best["step"], m, r["best_dev"][f"dev_{m}"], m,
                 r["best_dev"][f"test_{m}"], out_dir / "results.json")
    scalars.close()
    dist.barrier()
    return results


def _progress(total: int, enabled: bool):
    """A tqdm bar on rank 0 when stderr is a terminal; disabled otherwise (plain log lines instead)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="train", disable=not (enabled and os.isatty(2)), dynamic_ncols=True)


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
