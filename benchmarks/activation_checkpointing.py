#!/usr/bin/env python
"""Activation checkpointing (``train.activation_checkpointing``) on CPU: peak RSS and tokens/s with
and without it, P-Tuning v2 (prefix, P = 16 on every layer), ZeRO-3, one process, fp32, seq 512.

Each (backbone, checkpointing) cell is a fresh process that builds the model through the trainer's
own ``ds_setup.build`` (1 ZeRO-3 rank, ``ds_configs/zero3.json``, a token head for WNUT-16's 21
labels), then runs ``--warmup`` untimed and ``--steps`` timed optimizer steps on fixed random
batches of ``--batch`` x 512 tokens (every position real, dropout on, seeded per step). Its peak
RSS counter is reset right before the steps (/proc/self/clear_refs), so "peak" is the training
steps' own and "baseline" is what the process held before them (weights, optimizer, runtime).
The per-step losses are reported too: they must be equal with and without checkpointing.

Backbones: all-minilm-l6-v2 (the real weights, ``make assets``) and a GLM of glm-large's layer shape
(h 1024, 16 heads, FFN 4096, vocabulary 30592) with 6 of its 24 layers, random init: the full
glm-large takes minutes per step here. Activation memory grows linearly with the layers.

    .venv/bin/python benchmarks/activation_checkpointing.py [--steps 3] [--warmup 1] [--threads 1]

Prints a table and writes docs/benchmarks/activation_checkpointing.json. tokens/s on this shared
2-core machine moves with the other processes' load; peak RSS does not.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from _bench import print_table, write_json  # noqa: E402

SEQ = 512
PREFIX = 16
BACKBONES = {
    "all-minilm-l6-v2": {"batch": 8},
    "glm-large-6-layers": {"batch": 4, "glm": {"preset": "glm-large", "num_hidden_layers": 6}},
}
MIB = 1024 ** 2


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _model(name: str, workdir: Path) -> tuple[str, object]:
    """(model.path, its config) for ``ds_setup.build``."""
    spec = BACKBONES[name]
    if "glm" in spec:  # a directory with only glm_config.json: random init of that shape
        from deepprompt.models.glm.config import read_config

        d = workdir / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "glm_config.json").write_text(json.dumps(spec["glm"]))
        return str(d), read_config(d)
    from deepprompt.models.loading import load_tokenizer_and_config, resolve_model_path

    path = resolve_model_path(name)
    return path, load_tokenizer_and_config(path)[1]


def worker(name: str, checkpointing: bool, steps: int, warmup: int, out: Path) -> None:
    """One cell, in its own process: build, train, write a JSON row to ``out``."""
    import torch

    from deepprompt.config import load_config
    from deepprompt.engine import comm, setup
    from deepprompt.models.loading import load_tokenizer_and_config, resolve_model_path
    from deepprompt.tasks import build_task

    comm.init_distributed()
    batch = BACKBONES[name]["batch"]
    with tempfile.TemporaryDirectory() as tmp:
        path, model_config = _model(name, Path(tmp))
        run = load_config(None, [f"model.path={path}", "prompt.method=prefix", f"prompt.length={PREFIX}",
                                 f"task.max_seq_length={SEQ}", f"train.batch_size={batch}",
                                 f"train.micro_batch_size={batch}", f"train.max_steps={warmup + steps}",
                                 f"train.activation_checkpointing={str(checkpointing).lower()}"])
        # the task only gives the head its labels (WNUT-16's 21); the batches below are synthetic
        task = build_task(run.task, load_tokenizer_and_config(resolve_model_path("all-minilm-l6-v2"))[0])
        built = setup.build_for(run, str(REPO / "ds_configs" / "zero3.json"), [task])
    built.engine.train()
    g = torch.Generator().manual_seed(0)
    vocab = model_config.vocab_size
    batches = [{"input_ids": torch.randint(5, vocab, (batch, SEQ), generator=g),
                "attention_mask": torch.ones(batch, SEQ, dtype=torch.long),
                "labels": torch.randint(0, len(task.labels), (batch, SEQ), generator=g)} for _ in range(2)]
    baseline = _status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak from here on is the steps'
    times, losses = [], []
    for step in range(warmup + steps):
        torch.manual_seed(step)  # the same dropout draws with and without checkpointing
        t0 = time.perf_counter()
        loss = built.engine(batches[step % 2], task.name).loss
        built.engine.backward(loss)
        built.engine.step()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    row = {"backbone": name, "checkpointing": checkpointing, "batch": batch, "seq": SEQ, "prefix": PREFIX,
           "layers": built.adapter.spec().num_layers, "hidden": built.adapter.spec().hidden,
           "params": built.total_params, "trainable": built.trainable_params,
           "baseline_rss_mib": baseline / MIB, "peak_rss_mib": _status_bytes("VmHWM") / MIB,
           "peak_rss_process_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "step_s": times, "tokens_per_s": batch * SEQ * len(times) / sum(times), "losses": losses}
    out.write_text(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--worker", nargs=3, metavar=("BACKBONE", "CHECKPOINTING", "OUT"))
    args = ap.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        name, on, out = args.worker
        return worker(name, on == "1", args.steps, args.warmup, Path(out))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backbones.split(","):
            for on in (False, True):
                out = Path(tmp) / f"{name}-{int(on)}.json"
                subprocess.run([sys.executable, __file__, "--worker", name, str(int(on)), str(out),
                                "--steps", str(args.steps), "--warmup", str(args.warmup),
                                "--threads", str(args.threads)], check=True, env=env, cwd=REPO)
                rows.append(json.loads(out.read_text()))
                print(f"{name} checkpointing={on}: peak {rows[-1]['peak_rss_mib']:.0f} MiB, "
                      f"{rows[-1]['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
    for r in rows:
        plain = next(x for x in rows if x["backbone"] == r["backbone"] and not x["checkpointing"])
        r["activation_mib"] = r["peak_rss_mib"] - r["baseline_rss_mib"]
        r["losses_equal_to_plain"] = r["losses"] == plain["losses"]
        r["tokens_per_s_vs_plain"] = r["tokens_per_s"] / plain["tokens_per_s"]
    for r in rows:
        plain = next(x for x in rows if x["backbone"] == r["backbone"] and not x["checkpointing"])
        r["activation_vs_plain"] = r["activation_mib"] / plain["activation_mib"]
    print_table(("backbone", "layers x hidden", "batch x seq", "checkpointing", "baseline RSS (MiB)",
                 "peak RSS in steps (MiB)", "peak - baseline (MiB)", "tokens/s", "vs off", "losses = off"),
                [(r["backbone"], f"{r['layers']} x {r['hidden']}", f"{r['batch']} x {r['seq']}",
                  "on" if r["checkpointing"] else "off", f"{r['baseline_rss_mib']:,.0f}", f"{r['peak_rss_mib']:,.0f}",
                  f"{r['activation_mib']:,.0f} ({r['activation_vs_plain']:.2f}x)", f"{r['tokens_per_s']:,.0f}",
                  f"{r['tokens_per_s_vs_plain']:.2f}x", "yes" if r["losses_equal_to_plain"] else "NO") for r in rows])
    import torch

    out = write_json("activation_checkpointing.json", {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/activation_checkpointing.py "
                   f"--steps {args.steps} --warmup {args.warmup} --threads {args.threads}",
        "method": "prefix", "prefix_length": PREFIX, "seq": SEQ, "precision": "fp32", "world": 1,
        "ds_config": "ds_configs/zero3.json", "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
        "torch": torch.__version__, "machine": f"{os.cpu_count()} CPU cores, shared; {platform.machine()}",
        "note": "tokens/s depends on the other processes on this shared machine; peak RSS does not",
        "rows": rows})
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
