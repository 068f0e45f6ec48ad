#!/usr/bin/env python
"""Quality side by side: finetune vs prompt (Lester) vs ptuning (v1) vs prefix (P-Tuning v2), over
several seeds at one fixed budget, on one task. Reports mean ± std of the LAST checkpoint and of the
BEST-DEV checkpoint (its test score is the test at the step with the best dev), clearly apart.

Each (method, seed) is one 2-rank ZeRO-3 run through the real launcher: the task's base config
(``--config``; none = the embedded default, all-MiniLM-L6-v2 + WNUT-16) with only the method, its
learning rate, the seed and the steps overridden. Runs whose results.json exists are reused, so an
interrupted benchmark continues where it stopped.

    .venv/bin/python benchmarks/quality.py --name wnut16 [--seeds 42,43,44] [--steps 600]
    .venv/bin/python benchmarks/quality.py --name squadshifts --config launcher/configs/squadshifts_prefix.yaml \\
        --lr prefix=1e-2,finetune=1e-4

Prints a table and writes docs/benchmarks/quality_<name>.json and quality_<name>.png.
"""
import argparse
import sys

from _bench import LR, REPO, launch, mean_std, method_run, print_table, save_plot, write_json

COLUMNS = (("last", "dev"), ("last", "test"), ("best_dev", "dev"), ("best_dev", "test"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="wnut16", help="names the runs and the output files")
    ap.add_argument("--config", default=None, help="base run config (default: the embedded default)")
    ap.add_argument("--methods", default="finetune,prompt,ptuning,prefix")
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", default="", help="per-method learning rates, e.g. prefix=1e-2,finetune=1e-4")
    ap.add_argument("--set", default="", help="extra overrides for every run, comma-separated key=value")
    ap.add_argument("--runs", default="runs/quality", help="where the runs go (reused if present)")
    args = ap.parse_args()
    lrs = {**LR, **dict(kv.split("=", 1) for kv in args.lr.split(",") if kv)}
    extra = [kv for kv in args.set.split(",") if kv]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, metric = [], None
    for method in args.methods.split(","):
        per_seed = []
        for seed in seeds:
            out, overrides = method_run(args.runs, args.name, method, seed, args.steps, lrs[method])
            r = launch(out, overrides + extra, config=args.config)
            (task, t), = r["tasks"].items()
            metric = t["main_metric"]
            per_seed.append({"seed": seed, "last": t["last"], "best_dev": t["best_dev"],
                             "trainable_percent": r["params"]["trainable_percent"], "wall_time_s": r["wall_time_s"]})
        row = {"method": method, "lr": float(lrs[method]), "task": task, "metric": metric, "runs": per_seed,
               "trainable_percent": per_seed[0]["trainable_percent"]}
        for which, split in COLUMNS:
            row[f"{which}_{split}"] = mean_std([s[which][f"{split}_{metric}"] for s in per_seed])
        rows.append(row)

    def fmt(ms):
        return f"{ms[0]:.2f} ± {ms[1]:.2f}"
    print_table(("method", "trainable %", f"LAST dev {metric}", f"LAST test {metric}", f"BEST-DEV dev {metric}",
                 f"BEST-DEV test {metric}"),
                [(x["method"], f"{x['trainable_percent']:.3f}", *(fmt(x[f"{w}_{s}"]) for w, s in COLUMNS)) for x in rows])
    out = write_json(f"quality_{args.name}.json", {"name": args.name, "config": args.config, "steps": args.steps,
                                                   "seeds": seeds, "world_size": 2, "overrides": extra, "rows": rows})

    def draw(ax):
        width = 0.2
        for k, (which, split) in enumerate(COLUMNS):
            xs = [i + (k - 1.5) * width for i in range(len(rows))]
            ax.bar(xs, [x[f"{which}_{split}"][0] for x in rows], width, yerr=[x[f"{which}_{split}"][1] for x in rows],
                   capsize=3, label=f"{'LAST' if which == 'last' else 'BEST-DEV'} {split}")
        ax.set_xticks(range(len(rows)), [x["method"] for x in rows])
        ax.set_ylabel(f"{metric} (mean ± std over {len(seeds)} seeds)")
        ax.set_title(f"{args.name}: {args.steps} steps")
        ax.legend(fontsize=8)
    save_plot(f"quality_{args.name}.png", draw)
    print(f"wrote {out.relative_to(REPO)} and its .png", file=sys.stderr)


if __name__ == "__main__":
    main()
