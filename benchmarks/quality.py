#!/usr/bin/env python
"""Quality side by side: finetune vs prompt (Lester) vs ptuning (v1) vs prefix (P-Tuning v2), over
several seeds at one fixed budget, on one task. Reports mean ± std of the LAST checkpoint and of the
BEST-DEV checkpoint (its test score is the test at the step with the best dev), clearly apart.

Each (method, seed) — with ``--folds k``, each (method, fold, seed) — is one 2-rank ZeRO-3 run
through the real launcher: the task's base config (``--config``; none = the embedded default,
all-MiniLM-L6-v2 + WNUT-16) with only the method, its learning rate, the seed (and the fold) and the
steps overridden. Runs whose results.json exists are reused, so an interrupted benchmark continues
where it stopped. Launching, scores and mean ± std are ``deepprompt.sweep.runs``, the code every
``deepprompt sweep`` trial runs through; a search over learning rates etc. is ``deepprompt sweep``.

    .venv/bin/python benchmarks/quality.py --name wnut16 [--seeds 42,43,44] [--steps 600]
    .venv/bin/python benchmarks/quality.py --name squadshifts --config launcher/configs/squadshifts_prefix.yaml \\
        --steps 150 --lr prefix=1e-2,finetune=1e-4 --metrics exact_match,f1 --set train.log_every=10

Prints a table (every metric of ``--metrics`` on every split the task has; SQuAD has no test) and
writes docs/benchmarks/quality_<name>.json and quality_<name>.png.
"""
import argparse
import sys

from _bench import LR, REPO, fmt_mean_std, launch, method_run, print_table, runs, save_plot, write_json

WHICH = {"last": "LAST", "best_dev": "BEST-DEV"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="wnut16", help="names the runs and the output files")
    ap.add_argument("--config", default=None, help="base run config (default: the embedded default)")
    ap.add_argument("--methods", default="finetune,prompt,ptuning,prefix")
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--folds", type=int, default=None, help="k-fold re-split (task.folds): every seed on every fold")
    ap.add_argument("--lr", default="", help="per-method learning rates, e.g. prefix=1e-2,finetune=1e-4")
    ap.add_argument("--metrics", default="", help="metrics to tabulate, e.g. exact_match,f1 (default: the main one)")
    ap.add_argument("--set", default="", help="extra overrides for every run, comma-separated key=value")
    ap.add_argument("--runs", default="runs/quality", help="where the runs go (reused if present)")
    args = ap.parse_args()
    lrs = {**LR, **dict(kv.split("=", 1) for kv in args.lr.split(",") if kv)}
    extra = [kv for kv in args.set.split(",") if kv]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, columns = [], None
    for method in args.methods.split(","):
        per_seed = []
        for fold, seed in runs.plan(args.folds, seeds):  # fold-major, as a sweep trial
            out, overrides = method_run(args.runs, args.name, method, seed, args.steps, lrs[method])
            if args.folds:
                out = out.with_name(f"{out.name}-{runs.run_name(fold, seed)}")
            r = launch(out, overrides + runs.run_overrides(args.folds, fold, seed) + extra, config=args.config)
            (task, t), = r["tasks"].items()
            metrics = args.metrics.split(",") if args.metrics else [t["main_metric"]]
            per_seed.append({"seed": seed, "fold": fold, **runs.scores(r, metrics), "trainable": r["params"]["trainable"],
                             "trainable_percent": r["params"]["trainable_percent"], "train_loss": r["train_loss"],
                             "wall_time_s": r["wall_time_s"]})
        if columns is None:  # (which, split, metric) for every split the task scores
            columns = [(w, split, m) for m in metrics for w in WHICH for split in ("dev", "test")
                       if f"{split}_{m}" in per_seed[0]["last"]]
        agg = runs.aggregate(per_seed)  # mean ± std over seeds, LAST and BEST-DEV apart
        row = {"method": method, "lr": float(lrs[method]), "task": task, "metric": t["main_metric"], "runs": per_seed,
               "trainable_percent": per_seed[0]["trainable_percent"]}
        for w, split, m in columns:
            row[f"{w}_{split}_{m}"] = agg[w][f"{split}_{m}"]
        rows.append(row)

    def fmt(ms):
        return fmt_mean_std(ms, len(seeds) * (args.folds or 1))
    print_table(("method", "trainable %", *(f"{WHICH[w]} {split} {m}" for w, split, m in columns)),
                [(x["method"], f"{x['trainable_percent']:.3f}", *(fmt(x[f"{w}_{s}_{m}"]) for w, s, m in columns))
                 for x in rows])
    out = write_json(f"quality_{args.name}.json", {"name": args.name, "config": args.config, "steps": args.steps,
                                                   "seeds": seeds, "folds": args.folds, "world_size": 2, "overrides": extra, "rows": rows})

    def draw(ax):
        width = 0.8 / len(columns)
        for k, (w, split, m) in enumerate(columns):
            xs = [i + (k - (len(columns) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(xs, [x[f"{w}_{split}_{m}"][0] for x in rows], width, yerr=[x[f"{w}_{split}_{m}"][1] for x in rows],
                   capsize=3, label=f"{WHICH[w]} {split} {m}")
        ax.set_xticks(range(len(rows)), [x["method"] for x in rows])
        ax.set_ylabel(f"mean ± std over {len(seeds)} seed(s)" + (f" × {args.folds} folds" if args.folds else ""))
        ax.set_title(f"{args.name}: {args.steps} steps")
        ax.legend(fontsize=8)
    save_plot(f"quality_{args.name}.png", draw)
    print(f"wrote {out.relative_to(REPO)} and its .png", file=sys.stderr)


if __name__ == "__main__":
    main()
