#!/usr/bin/env python
"""Step time and per-rank peak memory with 1, 2 and 4 ranks for a FIXED global batch.

Each world size is one ZeRO-3 run of P-Tuning v2 on all-MiniLM-L6-v2 / WNUT-16 (real assets:
``make assets``) through the DeepSpeed launcher: global batch 32 = micro (32 / ranks) x 1 x ranks,
max_seq_length 128, prefix length 16, ``--steps`` steps (default 30), no evaluation until the end.
Step time is the steady-state mean (steps 11..N, from rank 0's log); peak RSS is sampled every
0.2 s for every rank process. OMP_NUM_THREADS = max(1, cores / ranks). Prints a table (ratios vs
1 rank) and writes docs/benchmarks/scaling.json.

    nice -n 5 .venv/bin/python benchmarks/scaling.py [--ranks 1,2,4] [--steps 30] [--batch 32]
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(ranks: int, steps: int, batch: int, seq: int, out: Path) -> dict:
    threads = max(1, (os.cpu_count() or 1) // ranks)
    shutil.rmtree(out, ignore_errors=True)  # the rank logs append: start clean
    cmd = [str(REPO / ".venv/bin/deepspeed"), "--num_gpus", str(ranks), "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), "launcher/train.py", "--ds_config", "ds_configs/zero3.json",
           "prompt.method=prefix", "prompt.length=16", f"task.max_seq_length={seq}", f"train.max_steps={steps}",
           f"train.batch_size={batch}", f"train.micro_batch_size={batch // ranks}", "train.eval_every=0",
           "train.save_every=0", "train.log_every=10", "train.verify_frozen=false", "train.resume=never",
           f"output_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO)}
    env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak: dict[int, int] = {}
    while proc.poll() is None:
        try:
            for p in psutil.Process(proc.pid).children(recursive=True):
                m = re.search(r"--local_rank=(\d+)", " ".join(p.cmdline()))
                if m:
                    r = int(m.group(1))
                    peak[r] = max(peak.get(r, 0), p.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    output = proc.stdout.read()
    if proc.returncode != 0:
        sys.exit(f"{ranks} rank(s) failed:\n{output[-3000:]}")
    # "step 10/30 | loss .. | lr .. | 0.53 s/step": the mean since the loop started, at steps 10 and N
    marks = {int(m.group(1)): float(m.group(2)) for m in
             re.finditer(r"step (\d+)/\d+ \| loss \S+ \| lr \S+ \| ([\d.]+) s/step", (out / "logs" / "rank0.log").read_text())}
    first = min(k for k in marks if k >= 10)
    steady = (marks[steps] * steps - marks[first] * first) / (steps - first)
    return {"ranks": ranks, "omp_threads": threads, "micro_batch": batch // ranks, "step_s": steady,
            "step_s_incl_first": marks[steps], "peak_rss_mib_per_rank": [round(peak[r] / 2**20) for r in sorted(peak)],
            "wall_s": time.time() - started, "command": " ".join(cmd[0:1] + [c for c in cmd[1:]])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", default="runs/scaling")
    ap.add_argument("--note", default="", help="free text stored with the numbers (e.g. 'machine shared')")
    args = ap.parse_args()
    rows = [run(n, args.steps, args.batch, args.seq, REPO / args.runs / f"ranks{n}") for n in map(int, args.ranks.split(","))]
    base = rows[0]
    for r in rows:
        r["step_ratio"] = r["step_s"] / base["step_s"]
        r["peak_rss_ratio"] = max(r["peak_rss_mib_per_rank"]) / max(base["peak_rss_mib_per_rank"])
    head = ("ranks", "micro x ranks", "OMP threads", "s/step", "vs 1 rank", "peak RSS / rank (MiB)", "vs 1 rank",
            "RSS all ranks (MiB)")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        rss = r["peak_rss_mib_per_rank"]
        print(f"| {r['ranks']} | {r['micro_batch']} x {r['ranks']} | {r['omp_threads']} | {r['step_s']:.3f} | "
              f"{r['step_ratio']:.2f} | {max(rss)} | {r['peak_rss_ratio']:.2f} | {sum(rss)} |")
    out = REPO / "docs" / "benchmarks" / "scaling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"backbone": "all-minilm-l6-v2", "task": "wnut16", "method": "prefix", "prompt_length": 16,
                               "global_batch": args.batch, "max_seq_length": args.seq, "steps": args.steps,
                               "cpus": os.cpu_count(), "host": socket.gethostname(), "note": args.note,
                               "rows": rows}, indent=2))
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
