#!/usr/bin/env python
"""Step time and per-rank peak memory with 1, 2 and 4 ranks for a FIXED global batch.

Each world size is one ZeRO-3 run of P-Tuning v2 on all-MiniLM-L6-v2 / WNUT-16 (real assets:
``make assets``) through the DeepSpeed launcher: global batch 32 = micro (32 / ranks) x 1 x ranks,
max_seq_length 128, prefix length 16, ``--steps`` steps (default 30), no evaluation until the end.
Step time is the steady-state mean (steps 11..N, from rank 0's log); peak RSS is each rank's own
``ru_maxrss`` (results.json ``peak_rss_mb_per_rank``). OMP_NUM_THREADS = max(1, cores / ranks).
Runs whose results.json exists are reused. Prints a table (ratios vs 1 rank) and writes
docs/benchmarks/scaling.json.

    .venv/bin/python benchmarks/scaling.py [--ranks 1,2,4] [--steps 30] [--batch 32]
"""
import argparse
import os
import re
import socket
import sys

from _bench import REPO, launch, print_table, write_json


def run(ranks: int, steps: int, batch: int, seq: int, out) -> dict:
    threads = max(1, (os.cpu_count() or 1) // ranks)
    r = launch(out, ["prompt.method=prefix", "prompt.length=16", f"task.max_seq_length={seq}",
                     f"train.max_steps={steps}", f"train.batch_size={batch}", f"train.micro_batch_size={batch // ranks}",
                     "train.eval_every=0", "train.save_every=0", "train.log_every=10", "train.verify_frozen=false",
                     "train.resume=never"], ranks=ranks, threads=threads)
    # "step 10/30 | loss .. | lr .. | 0.53 s/step": the mean since the loop started, at steps 10 and N
    marks = {int(m.group(1)): float(m.group(2)) for m in
             re.finditer(r"step (\d+)/\d+ \| loss \S+ \| lr \S+ \| ([\d.]+) s/step", (out / "logs" / "rank0.log").read_text())}
    first = min(k for k in marks if k >= 10)
    steady = (marks[steps] * steps - marks[first] * first) / (steps - first)
    return {"ranks": ranks, "omp_threads": threads, "micro_batch": batch // ranks, "step_s": steady,
            "step_s_incl_first": marks[steps], "peak_rss_mib_per_rank": r["peak_rss_mb_per_rank"],
            "wall_s": r["wall_time_s"]}


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
    print_table(("ranks", "micro x ranks", "OMP threads", "s/step", "vs 1 rank", "peak RSS / rank (MiB)", "vs 1 rank",
                 "RSS all ranks (MiB)"),
                [(r["ranks"], f"{r['micro_batch']} x {r['ranks']}", r["omp_threads"], f"{r['step_s']:.3f}",
                  f"{r['step_ratio']:.2f}", f"{max(r['peak_rss_mib_per_rank']):.0f}", f"{r['peak_rss_ratio']:.2f}",
                  f"{sum(r['peak_rss_mib_per_rank']):.0f}") for r in rows])
    out = write_json("scaling.json", {"backbone": "all-minilm-l6-v2", "task": "wnut16", "method": "prefix",
                                      "prompt_length": 16, "global_batch": args.batch, "max_seq_length": args.seq,
                                      "steps": args.steps, "cpus": os.cpu_count(), "host": socket.gethostname(),
                                      "note": args.note, "rows": rows})
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
