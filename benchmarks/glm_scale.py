#!/usr/bin/env python
"""The 10B memory path, proven at 2B on this machine: GLM-xlarge (1.92B, random init from the preset
``glm-xlarge``) P-Tuning v2 on 2 CPU ranks under ZeRO-3, with and without
``train.activation_checkpointing``: each rank's peak RSS against the memory calculator's prediction
for the same setting, the frozen elements each rank really holds, tokens/s, and the bytes every
collective moved per step (benchmarks/_comm_count.py) against the step-time model's volumes.
Plus all-MiniLM-L6-v2 with ``prompt.reparam=true`` and P = 128: frozen elements per rank before the
persistence fix (the old "auto" threshold, max(10·h, largest prompt tensor + 1), given explicitly)
and after it.

No GLM tokenizer or weights here, so the task is synthetic: a small byte-level BPE over made-up
words (model.path is a directory with ``glm_config.json {"preset": "glm-xlarge"}`` + vocab.json/
merges.txt), ``custom_classification`` on texts of 200 such words cut to 128 tokens (every sequence
exactly 128), 2 labels. The calculator's fixed overhead is replaced by the MEASURED peak RSS of the
same run on a 2-layer, 64-wide GLM (interpreter, torch, DeepSpeed, data; no weights to speak of).
Ranks run with MALLOC_MMAP_THRESHOLD_=131072 so that peak RSS follows live memory (glibc otherwise
keeps gigabytes of freed gather buffers in its heap); a "plain" row shows the default.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/glm_scale.py [--micro-batch 2] [--steps 6] [--dtype bf16]
        [--rows without,with]

Runs whose results exist are reused (``--runs``, default runs/glm_scale). Writes
docs/benchmarks/glm_scale.json and prints the tables of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

from _bench import REPO, free_port, print_table, write_json

sys.path.insert(0, str(REPO))
GIB, MIB = 1024 ** 3, 1024 ** 2
DS = {"bf16": "ds_configs/zero3_bf16.json", "fp32": "ds_configs/zero3.json"}


# ------------------------------------------------------------------------------ the synthetic setup

def words(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return sorted({"".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))
                   for _ in range(n)})


def glm_dir(path: Path, **shape) -> Path:
    """glm_config.json (the preset, shape overrides) + a GPT-2-style BPE trained on ``words()``."""
    from tokenizers import ByteLevelBPETokenizer

    if not (path / "glm_config.json").is_file():
        path.mkdir(parents=True, exist_ok=True)
        bpe = ByteLevelBPETokenizer(add_prefix_space=True)
        bpe.train_from_iterator([" ".join(words())] * 5, vocab_size=400, min_frequency=1,
                                special_tokens=["<|endoftext|>"])
        bpe.save_model(str(path))
        (path / "glm_config.json").write_text(json.dumps({"preset": "glm-xlarge", **shape}, indent=1))
    return path


def task_dir(path: Path, train: int = 64) -> Path:
    if not (path / "train.jsonl").is_file():
        path.mkdir(parents=True, exist_ok=True)
        rng, vocab = random.Random(1), words()
        for split, n in (("train", train), ("dev", 4), ("test", 4)):
            rows = [{"text": " ".join(rng.choice(vocab) for _ in range(200)), "label": rng.choice("ab")}
                    for _ in range(n)]
            (path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------ runs

# glibc keeps freed heap memory for reuse: with ZeRO-3 gathering and freeing gigabytes per step the
# peak RSS then tells more about the arena than about what is alive. A fixed mmap threshold makes
# every allocation over 128 KiB its own mapping, returned at free: RSS follows live memory (what a
# GPU's max_memory_allocated reports). Rows run with it unless marked "plain".
LIVE = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def env(count_dir: Path | None, live: bool) -> dict:
    keep = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    extra = {"COMM_COUNT_DIR": str(count_dir), "COMM_COUNT_TRACE": "1"} if count_dir else {}
    return {**keep, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO), **extra,
            **(LIVE if live else {})}


def launch(out: Path, ds_config: str, overrides: list[str], count: bool = False, live: bool = True) -> dict:
    """2 ranks on this machine through the DeepSpeed launcher (under the collective counter if
    ``count``; glibc's mmap threshold fixed if ``live``); returns results.json."""
    if not (out / "results.json").is_file():
        script = ["benchmarks/_comm_count.py", "launcher/train.py"] if count else ["launcher/train.py"]
        cmd = [str(REPO / ".venv/bin/deepspeed"), "--num_gpus", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), *script, "--ds_config", ds_config, *overrides,
               "train.resume=never", f"output_dir={out}"]
        subprocess.run(cmd, cwd=REPO, check=True, env=env(out / "comm" if count else None, live))
    return json.loads((out / "results.json").read_text())


def glm_overrides(model: Path, data: Path, micro: int, steps: int, checkpointing: bool) -> list[str]:
    return [f"model.path={model}", "task.name=custom_classification", f"task.data_dir={data}",
            "task.max_seq_length=128", "prompt.method=prefix", "prompt.length=16", f"train.max_steps={steps}",
            f"train.batch_size={2 * micro}", f"train.micro_batch_size={micro}", "train.eval_every=0",
            "train.save_every=0", "train.eval_batch_size=4", "train.verify_frozen=false",
            f"train.activation_checkpointing={str(checkpointing).lower()}"]


def layout_line(out: Path) -> str:
    log = (out / "logs" / "rank0.log").read_text()
    return re.search(r"frozen weights held per rank \(shard \+ whole\): ([^(]+)\(", log).group(1).strip()


def step_volumes(out: Path) -> list[dict]:
    """Per optimizer step (between consecutive gradient reduce-scatters, rank 0): payload bytes of
    every all-gather, split at the first gather after the forward's last layer into forward and
    backward by position, plus the post-step re-gathers (the calls before the forward's first)."""
    trace = json.loads((out / "comm" / "trace0.json").read_text())
    ends = [i for i, c in enumerate(trace) if c[0] == "reduce_scatter_tensor"]
    steps = []
    for a, b in zip(ends, ends[1:]):
        gathers = [c[2] for c in trace[a + 1:b] if c[0] == "all_gather_into_tensor"]
        steps.append({"all_gather_bytes": sum(gathers), "all_gather_calls": len(gathers)})
    return steps


def predicted(model: str, micro: int, wb: int, trainable: int, overhead: float, checkpointing: bool) -> dict:
    from deepprompt import memory

    bb = memory.load_backbone(str(model))
    w = memory.Workload(world=2, micro_batch=micro, seq=128, prompt_length=16, weight_bytes=wb, mask_bytes=wb,
                        trainable=trainable, layout="flat", ranks_per_node=2, overhead=overhead,
                        checkpointing=checkpointing, grad_bytes=4)
    est = memory.estimate(bb, w)
    transfers = memory.layout_of(w).transfers(bb, w)
    return {"estimate": est, "gather_bytes_per_step": sum(t.bytes_per_step for t in transfers if t.op == "all_gather"),
            "transfers": [vars(t) for t in transfers]}


def minilm_frozen(runs: Path) -> list[dict]:
    """all-MiniLM-L6-v2, prefix P = 128 with reparam, 2 ranks, 2 steps: the old and the new threshold."""
    from deepprompt.models.loading import resolve_model_path

    hidden, r, layers, p = 384, 512, 6, 128
    largest = r * layers * 2 * hidden  # the reparam MLP's output matrix
    old = dict(json.loads((REPO / "ds_configs/zero3.json").read_text()))
    old["zero_optimization"]["stage3_param_persistence_threshold"] = max(10 * hidden, largest + 1)
    (runs / "minilm_old_threshold.json").write_text(json.dumps(old, indent=1))
    rows = []
    for name, ds in (("before (old auto threshold)", str(runs / "minilm_old_threshold.json")),
                     ("after (auto = 10 h)", "ds_configs/zero3.json")):
        out = runs / ("minilm_before" if "before" in name else "minilm_after")
        res = launch(out, ds, ["prompt.reparam=true", f"prompt.length={p}", "train.max_steps=2", "train.eval_every=0",
                               "train.save_every=0", "train.batch_size=32", "train.micro_batch_size=16"])
        held = [tuple(int(x.replace(",", "")) for x in part.split(" + "))
                for part in layout_line(out).split(", ") if " + " in part]
        total = res["params"]["total"] - res["params"]["trainable"]
        rows.append({"name": name, "threshold": json.loads((out / "ds_config.json").read_text())["zero_optimization"]
                     ["stage3_param_persistence_threshold"], "frozen_total": total,
                     "held_per_rank": [s + w for s, w in held], "shard_per_rank": [s for s, _ in held],
                     "whole_per_rank": [w for _, w in held], "peak_rss_mib_per_rank": res["peak_rss_mb_per_rank"],
                     "model": str(resolve_model_path("all-minilm-l6-v2"))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/glm_scale")
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--dtype", choices=list(DS), default="bf16")
    ap.add_argument("--rows", default="without,with,without_plain",
                    help="rows: with/without activation checkpointing; _plain = glibc's default malloc (RSS keeps freed heap)")
    ap.add_argument("--skip-minilm", action="store_true")
    args = ap.parse_args()
    runs = REPO / args.runs
    runs.mkdir(parents=True, exist_ok=True)
    wb = 2 if args.dtype == "bf16" else 4
    data = task_dir(runs / "data")
    big = glm_dir(runs / "glm-xlarge")
    tiny = glm_dir(runs / "glm-tiny", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=512)
    overheads = {}
    for live in (True, False):
        base = launch(runs / f"tiny_{args.dtype}{'_mmap' if live else ''}", DS[args.dtype],
                      glm_overrides(tiny, data, args.micro_batch, args.steps, False), live=live)
        overheads[live] = max(base["peak_rss_mb_per_rank"]) * MIB
    rows = []
    for row in args.rows.split(","):
        ckpt, live = row.split("_")[0] == "with", not row.endswith("plain")
        overhead = overheads[live]
        out = runs / f"xlarge_{args.dtype}_mb{args.micro_batch}_{row.split('_')[0]}_ckpt{'_mmap' if live else ''}"
        res = launch(out, DS[args.dtype], glm_overrides(big, data, args.micro_batch, args.steps, ckpt), count=True,
                     live=live)
        pred = predicted(big, args.micro_batch, wb, res["params"]["trainable"], overhead, ckpt)
        vols = step_volumes(out)
        rows.append({"activation_checkpointing": ckpt, "rss": "live (fixed mmap threshold)" if live else "plain glibc",
                     "overhead_mib": overhead / MIB, "precision": res["precision"], "steps": res["steps"],
                     "peak_rss_mib_per_rank": res["peak_rss_mb_per_rank"],
                     "predicted_total_mib": pred["estimate"]["total"] / MIB,
                     "predicted_terms_mib": {k: v / MIB for k, v in pred["estimate"].items()},
                     "ratio_measured_over_predicted": max(res["peak_rss_mb_per_rank"]) * MIB / pred["estimate"]["total"],
                     "frozen_numel_per_rank": res["params"]["frozen_numel_per_rank"],
                     "frozen_total": res["params"]["total"] - res["params"]["trainable"],
                     "trainable": res["params"]["trainable"], "throughput": res["throughput"],
                     "wall_time_s": res["wall_time_s"], "gathers_per_step": vols,
                     "predicted_gather_bytes_per_step": pred["gather_bytes_per_step"],
                     "predicted_transfers": pred["transfers"], "run": str(out.relative_to(REPO))})
    minilm = [] if args.skip_minilm else minilm_frozen(runs)
    print(f"\nGLM-xlarge, 2 CPU ranks, ZeRO-3 ({DS[args.dtype]}), {args.dtype}, micro batch {args.micro_batch} x seq 128, "
          f"P = 16, {args.steps} steps; overhead = the tiny-GLM run's peak RSS\n")
    print_table(("activation checkpointing", "RSS", "peak RSS / rank (MiB)", "calculator (MiB)", "measured / calculator",
                 "frozen elements held / rank", "of", "tokens/s", "all-gather GB / step (measured, steady)",
                 "model"),
                [("yes" if r["activation_checkpointing"] else "no", r["rss"], " / ".join(f"{m:.0f}" for m in r["peak_rss_mib_per_rank"]),
                  f"{r['predicted_total_mib']:.0f}", f"{r['ratio_measured_over_predicted']:.3f}",
                  " / ".join(f"{n:,}" for n in r["frozen_numel_per_rank"]), f"{r['frozen_total']:,}",
                  f"{r['throughput']['tokens_per_s']:.1f}", f"{r['gathers_per_step'][-1]['all_gather_bytes'] / 1e9:.2f}",
                  f"{r['predicted_gather_bytes_per_step'] / 1e9:.2f}") for r in rows])
    if minilm:
        print("\nall-MiniLM-L6-v2, prompt.reparam=true, P = 128, 2 ranks\n")
        print_table(("", "persistence threshold", "frozen held / rank (shard + whole)", "of", "old report (shard only)"),
                    [(m["name"], f"{m['threshold']:,}", " / ".join(f"{s:,} + {w:,}" for s, w in zip(m["shard_per_rank"], m["whole_per_rank"])),
                      f"{m['frozen_total']:,}", " / ".join(f"{s:,}" for s in m["shard_per_rank"])) for m in minilm])
    out = write_json("glm_scale.json", {
        "machine": "2 CPU cores (AMD EPYC, avx512_bf16), 2 ranks, OMP_NUM_THREADS=1", "dtype": args.dtype,
        "ds_config": DS[args.dtype], "micro_batch": args.micro_batch, "seq": 128, "prompt_length": 16,
        "steps": args.steps, "overhead_mib": {"live": overheads[True] / MIB, "plain": overheads[False] / MIB},
        "overhead_from": f"{args.runs}/tiny_{args.dtype}[_mmap]", "live_env": LIVE,
        "command": f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/glm_scale.py --micro-batch {args.micro_batch} "
                   f"--steps {args.steps} --dtype {args.dtype} --rows {args.rows}",
        "glm_xlarge": rows, "minilm_reparam_p128": minilm})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
