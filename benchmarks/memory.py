#!/usr/bin/env python
"""Memory of P-Tuning v2 (prefix) vs fine-tuning under ZeRO-3, on 1 and 2 ranks: optimizer-state
elements (read from the optimizer), peak RSS of every rank, checkpoint and artifact bytes.

Each cell is a short run of the default recipe (all-MiniLM-L6-v2 + WNUT-16, fp32, global batch 32)
through the real launcher that saves one checkpoint at its last step. Runs whose results.json
exists are reused.

    .venv/bin/python benchmarks/memory.py [--steps 20] [--ranks 1,2] [--methods prefix,finetune]

Prints a table and writes docs/benchmarks/memory.json.
"""
import argparse
import sys

from _bench import LR, REPO, dir_bytes, launch, print_table, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--methods", default="prefix,finetune")
    ap.add_argument("--runs", default="runs/memory", help="where the runs go (reused if present)")
    args = ap.parse_args()
    rows = []
    for method in args.methods.split(","):
        for ranks in map(int, args.ranks.split(",")):
            out = REPO / args.runs / f"{method}-r{ranks}-{args.steps}"
            r = launch(out, [f"prompt.method={method}", f"train.lr={LR[method]}", f"train.max_steps={args.steps}",
                             f"train.save_every={args.steps}", "train.eval_every=0", "train.keep_checkpoints=1"],
                       ranks=ranks)
            rows.append({"method": method, "ranks": ranks, "trainable": r["params"]["trainable"],
                         "total": r["params"]["total"], "optimizer_state": r["params"]["optimizer_state"],
                         "frozen_numel_per_rank": r["params"]["frozen_numel_per_rank"],
                         "peak_rss_mb_per_rank": r["peak_rss_mb_per_rank"],
                         "checkpoint_bytes": dir_bytes(out / "checkpoints"),
                         "artifact_bytes": dir_bytes(out / "artifact")})
    print_table(("method", "ranks", "trainable", "optimizer state (elements, all ranks)",
                 "frozen stored per rank", "peak RSS per rank (MiB)", "checkpoint", "artifact"),
                [(x["method"], x["ranks"], f"{x['trainable']:,}", f"{x['optimizer_state']['total']:,}",
                  ", ".join(f"{n:,}" for n in x["frozen_numel_per_rank"]),
                  ", ".join(f"{m:,.0f}" for m in x["peak_rss_mb_per_rank"]),
                  f"{x['checkpoint_bytes'] / 2**20:.2f} MiB", f"{x['artifact_bytes'] / 2**20:.2f} MiB") for x in rows])
    out = write_json("memory.json", {"steps": args.steps, "backbone": "all-minilm-l6-v2", "task": "wnut16",
                                     "precision": "fp32", "batch": 32, "rows": rows})
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
