"""Training throughput of one GLM configuration on this machine's accelerator: tokens/s, MFU and peak
memory against the calculator (``python -m deepprompt memory``).

    python benchmarks/gpu_throughput.py --preset glm-xxlarge --method prefix --seq 512 \
        --micro-batch auto [--checkpointing] --json out.json

The model is the preset's shape with random weights (no GLM weights exist here), built and trained
through the same ``ds_setup.build`` and DeepSpeed engine as ``launcher/train.py`` (ZeRO-3 from
ds_configs/zero3.json, bf16 on a GPU), on synthetic token ids of length ``--seq``: ``--warmup``
steps, then ``--steps`` timed steps (device synchronised at both ends). ``--micro-batch auto`` takes
the largest power of two the calculator fits into 85 % of the device's memory (at most ``--max-micro-batch``),
so the measured peak memory also checks the calculator. One configuration per process: an
out-of-memory inside ZeRO-3 leaves the engine unusable, so the caller retries a smaller batch in a
new process (``gpu_check.sh`` does).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def synthetic_batch(vocab: int, micro_batch: int, seq: int, device, generator) -> dict:
    ids = torch.randint(100, vocab - 100, (micro_batch, seq), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": torch.randint(0, 2, (micro_batch,), generator=generator).to(device)}


def measure(args) -> dict:
    from deepprompt import memory
    from deepprompt.config import config_from_dict
    from deepprompt.engine import comm, setup, throughput
    from deepprompt.models.backbones.base import family_for_model_type
    from deepprompt.models.loading import Backbone
    from deepprompt.models.glm.config import PRESETS

    comm.init_distributed()
    cfg = PRESETS[args.preset]
    device_total = None if comm.on_cpu() else torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    workload = dict(world=comm.world_size(), seq=args.seq, prompt_length=args.prompt_length,
                    weight_bytes=2 if not comm.on_cpu() else 4, checkpointing=args.checkpointing)
    mb = args.micro_batch
    if mb == "auto":
        budget = 0.85 * device_total if device_total else 8 * memory.GIB
        mb = max(1, memory.largest_micro_batch(cfg, budget, limit=args.max_micro_batch, **workload))
    mb = int(mb)
    print(f"micro batch {mb}", flush=True)
    predicted = memory.estimate(cfg, memory.Workload(micro_batch=mb, **workload))
    run = config_from_dict({
        "model": {"path": args.preset},
        "prompt": {"method": args.method, "length": args.prompt_length},
        "task": {"name": "wnut16", "max_seq_length": args.seq},  # only the head's shape comes from the task
        "train": {"batch_size": mb * comm.world_size(), "micro_batch_size": mb, "lr": 1e-5 if args.method == "finetune"
                  else 1e-2, "activation_checkpointing": args.checkpointing, "max_steps": args.warmup + args.steps},
    })
    task = SimpleNamespace(name="synthetic", head="classification", labels=["a", "b"], cfg=run.task)
    started = time.time()
    backbone = Backbone(args.preset, cfg, family_for_model_type(cfg.model_type))
    built = setup.build_for(run, str(REPO / args.ds_config), [task], backbone)
    build_s = time.time() - started
    engine = built.engine
    g = torch.Generator().manual_seed(0)
    if not comm.on_cpu():
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        batch = synthetic_batch(cfg.vocab_size, mb, args.seq, engine.device, g)
        comm.synchronize()
        t0 = time.perf_counter()
        loss = engine(batch, "synthetic").loss
        engine.backward(loss)
        engine.step()
        comm.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    timed = times[args.warmup:]
    step_s = sum(timed) / len(timed)
    tokens_per_s = mb * args.seq * comm.world_size() / step_s
    model = built.model
    flops = throughput.FlopsModel(
        n_matmul=throughput.matmul_params(model.backbone), num_layers=cfg.num_hidden_layers, hidden=cfg.hidden_size,
        prefix_length=args.prompt_length if args.method == "prefix" else 0, finetune=args.method == "finetune",
        checkpointing=args.checkpointing, backward_layers=cfg.num_hidden_layers)
    device = comm.device_info()
    peak = throughput.default_peak_tflops(device["name"], built.precision)
    achieved = tokens_per_s * flops.per_token(args.seq) / comm.world_size() / 1e12
    peak_mb = comm.peak_memory_mb()
    return {
        "preset": args.preset, "params": built.total_params, "trainable": built.trainable_params,
        "method": args.method, "prompt_length": args.prompt_length, "seq": args.seq, "micro_batch": mb,
        "checkpointing": args.checkpointing, "precision": built.precision, "world": comm.world_size(),
        "device": device, "build_s": round(build_s, 1), "step_times_s": [round(t, 4) for t in times],
        "step_time_s": step_s, "tokens_per_s": tokens_per_s, "flops_per_token": flops.per_token(args.seq),
        "achieved_tflops_per_device": achieved, "peak_tflops": peak,
        "mfu": achieved / peak if peak else None, "peak_memory_mb": peak_mb,
        "predicted_memory_mb": predicted["total"] / 2**20,
        "predicted_terms_mb": {k: v / 2**20 for k, v in predicted.items()},
        "memory_ratio": peak_mb / (predicted["total"] / 2**20) if peak_mb else None,
        "losses": losses,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="glm-xlarge")
    ap.add_argument("--method", default="prefix", choices=["prefix", "prompt", "ptuning", "finetune"])
    ap.add_argument("--prompt-length", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--micro-batch", default="auto")
    ap.add_argument("--max-micro-batch", type=int, default=64)
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--ds-config", default="ds_configs/zero3.json")
    ap.add_argument("--json", help="write the row here (else stdout only)")
    args = ap.parse_args(argv)
    try:
        row = measure(args)
    except torch.OutOfMemoryError as e:  # the caller retries a smaller micro batch in a new process
        row = {"preset": args.preset, "method": args.method, "checkpointing": args.checkpointing,
               "oom": str(e).splitlines()[0]}
        print(json.dumps(row))
        if args.json:
            Path(args.json).write_text(json.dumps(row) + "\n")
        sys.exit(3)
    text = json.dumps(row, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
