#!/usr/bin/env python
"""Side by side on the default data: finetune vs prompt (Lester) vs ptuning (v1) vs prefix (P-Tuning v2).

Each method is one 2-rank ZeRO-3 run of the default recipe (all-MiniLM-L6-v2, WNUT-16, same steps,
batch and seed; only the learning rate is the method's own). Runs whose results.json already exists
are reused. Prints a table and writes docs/benchmarks/methods_wnut16.json.

    .venv/bin/python benchmarks/methods_wnut16.py [--steps 600] [--seed 42] [--methods prefix,finetune]
"""
import argparse
import sys

from _launch import LR, REPO, launch, print_table, write_json


def run(method: str, steps: int, seed: int, out) -> dict:
    return launch(out, [f"prompt.method={method}", f"train.lr={LR[method]}", f"train.max_steps={steps}",
                        f"train.seed={seed}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--methods", default="finetune,prompt,ptuning,prefix")
    ap.add_argument("--runs", default="runs/methods_wnut16", help="where the runs go (reused if present)")
    args = ap.parse_args()
    rows = []
    for method in args.methods.split(","):
        r = run(method, args.steps, args.seed, REPO / args.runs / f"{method}-s{args.seed}-{args.steps}")
        t = r["tasks"]["wnut16"]
        rows.append({"method": method, "lr": float(LR[method]), "trainable": r["params"]["trainable"],
                     "trainable_percent": r["params"]["trainable_percent"],
                     "optimizer_state_numel": r["params"]["optimizer_state_numel"],
                     "last_dev_f1": t["last"]["dev_f1"], "last_test_f1": t["last"]["test_f1"],
                     "best_dev_f1": t["best_dev"]["dev_f1"], "best_dev_test_f1": t["best_dev"]["test_f1"],
                     "best_dev_step": t["best_dev"]["step"], "wall_time_s": r["wall_time_s"]})
    print_table(("method", "trainable %", "opt. state", "LAST dev F1", "LAST test F1", "BEST-DEV dev F1",
                 "BEST-DEV test F1 (step)", "train s"),
                [(x["method"], f"{x['trainable_percent']:.3f}", f"{x['optimizer_state_numel']:,}",
                  f"{x['last_dev_f1']:.2f}", f"{x['last_test_f1']:.2f}", f"{x['best_dev_f1']:.2f}",
                  f"{x['best_dev_test_f1']:.2f} ({x['best_dev_step']})", f"{x['wall_time_s']:.0f}") for x in rows])
    out = write_json("methods_wnut16.json", {"steps": args.steps, "seed": args.seed, "world_size": 2,
                                             "backbone": "all-minilm-l6-v2", "task": "wnut16", "rows": rows})
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
