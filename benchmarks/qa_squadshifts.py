#!/usr/bin/env python
"""Extractive QA out of domain: finetune vs prefix (P-Tuning v2) on all-MiniLM-L6-v2, trained on the
four SQuADShifts sets (new_wiki, nyt, reddit, amazon_reviews) and scored on SQuAD v1.1 dev.

Both methods get the same budget (steps, global batch, max_seq_length/doc_stride, seed, dev
questions); only the method and its learning rate differ (launcher/configs/squadshifts_*.yaml).
Each run is 2 CPU ranks under ZeRO-3 through the real DeepSpeed launcher; runs whose results.json
exists are reused. Prints a table and writes docs/benchmarks/qa_squadshifts.json.

    python -m deepprompt fetch-assets squad         # once: SQuAD v1.1 dev + SQuADShifts
    [nice -n 5] .venv/bin/python benchmarks/qa_squadshifts.py [--steps 150] [--batch 16] [--dev 1000] [--seed 42]
"""
import argparse
import json
import sys

from _bench import REPO, launch, print_table, seconds_per_step, write_json

LR = {"prefix": "1e-2", "finetune": "1e-4"}


def run(method: str, args, out) -> dict:
    return launch(out, [f"train.lr={LR[method]}", f"train.max_steps={args.steps}", f"train.batch_size={args.batch}",
                        f"train.micro_batch_size={args.batch // 2}", f"train.seed={args.seed}",
                        f"task.max_eval_examples={args.dev}", "train.log_every=10"],
                  config=f"launcher/configs/squadshifts_{method}.yaml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=16, help="global batch (2 ranks x batch/2)")
    ap.add_argument("--dev", type=int, default=1000, help="score the first N SQuAD v1.1 dev questions (file order)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--methods", default="prefix,finetune")
    ap.add_argument("--runs", default="runs/qa_squadshifts", help="where the runs go (reused if present)")
    ap.add_argument("--note", default="", help="free text stored with the numbers (e.g. machine load)")
    args = ap.parse_args()
    rows = []
    for method in args.methods.split(","):
        out = REPO / args.runs / f"{method}-s{args.seed}-{args.steps}x{args.batch}-dev{args.dev}"
        r = run(method, args, out)
        last = r["tasks"]["squad"]["last"]
        cfg = json.loads((out / "run_config.json").read_text())
        rows.append({"method": method, "lr": float(LR[method]), "trainable": r["params"]["trainable"],
                     "total": r["params"]["total"], "trainable_percent": r["params"]["trainable_percent"],
                     "dev_exact_match": last["dev_exact_match"], "dev_f1": last["dev_f1"],
                     "train_loss_first": r["train_loss"]["first"], "train_loss_last": r["train_loss"]["last"],
                     "s_per_step": seconds_per_step(out), "wall_time_s": r["wall_time_s"],
                     "max_seq_length": cfg["task"]["max_seq_length"], "doc_stride": cfg["task"]["doc_stride"],
                     "frozen_backbone_unchanged": (r["frozen_backbone"] or {}).get("unchanged")})
    print_table(("method", "lr", "trainable", "trainable %", "EM", "F1", "loss first -> last", "s/step", "wall s"),
                [(x["method"], f"{x['lr']:g}", f"{x['trainable']:,}", f"{x['trainable_percent']:.3f}",
                  f"{x['dev_exact_match']:.2f}", f"{x['dev_f1']:.2f}",
                  f"{x['train_loss_first']:.3f} -> {x['train_loss_last']:.3f}",
                  f"{x['s_per_step'] or float('nan'):.2f}", f"{x['wall_time_s']:.0f}") for x in rows])
    out = write_json("qa_squadshifts.json", {
        "backbone": "all-minilm-l6-v2", "task": "squad", "world_size": 2, "zero_stage": 3,
        "train": "SQuADShifts new_wiki + nyt + reddit + amazon_reviews (37,636 questions)",
        "eval": f"SQuAD v1.1 dev, the first {args.dev} questions in file order (bigbench squaddev_v1.1.json)",
        "steps": args.steps, "global_batch": args.batch, "seed": args.seed, "note": args.note, "rows": rows})
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
