#!/usr/bin/env python
"""P-Tuning v2 ablations on one task, plotted as the paper does: prompt LENGTH (prefix tokens per
layer) and prompt DEPTH (how many layers get a prefix, added from the top down and from the bottom
up). Every run is the base recipe (default: all-MiniLM-L6-v2 + WNUT-16, 2 ranks, ZeRO-3) with only
``prompt.length`` or ``prompt.layers`` changed; runs whose results.json exists are reused.

    .venv/bin/python benchmarks/ablation.py [--lengths 4,8,16,32,64] [--depths 1,2,4,6] [--steps 600] [--seed 42]

Prints two tables and writes docs/benchmarks/ablation_<name>.json, ablation_<name>_length.png and
ablation_<name>_depth.png.
"""
import argparse
import json
import sys

from _bench import LR, REPO, launch, method_run, print_table, save_plot, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="wnut16")
    ap.add_argument("--config", default=None)
    ap.add_argument("--lengths", default="4,8,16,32,64")
    ap.add_argument("--depths", default="1,2,4,6", help="layers with a prefix (of the backbone's --layers)")
    ap.add_argument("--layers", type=int, default=6, help="the backbone's layer count")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lr", default=LR["prefix"])
    ap.add_argument("--runs", default="runs/ablation")
    ap.add_argument("--base-runs", default="runs/quality",
                    help="where quality.py keeps its runs: the base point (default length, all layers) is its "
                         "prefix run of this seed, reused")
    args = ap.parse_args()
    base_out, base = method_run(args.base_runs, args.name, "prefix", args.seed, args.steps, args.lr)

    def score(out, overrides):
        r = launch(out, base + overrides, config=args.config)
        (_, t), = r["tasks"].items()
        m = t["main_metric"]
        return {"metric": m, "last_dev": t["last"][f"dev_{m}"], "last_test": t["last"][f"test_{m}"],
                "best_dev": t["best_dev"][f"dev_{m}"], "trainable": r["params"]["trainable"],
                "run": str(out.relative_to(REPO))}

    def variant(tag, override):
        return score(REPO / args.runs / args.name / f"{tag}-s{args.seed}-{args.steps}", [override])

    base_point = score(base_out, [])
    base_length = json.loads((base_out / "run_config.json").read_text())["prompt"]["length"]
    lengths = [{"length": n, **(base_point if n == base_length else variant(f"len{n}", f"prompt.length={n}"))}
               for n in map(int, args.lengths.split(","))]
    depths = []
    for k in map(int, args.depths.split(",")):
        for order, layers in (("top-down", list(range(args.layers - k, args.layers))), ("bottom-up", list(range(k)))):
            tag = f"{'top' if order == 'top-down' else 'bottom'}{k}"
            point = base_point if k == args.layers else variant(tag, f"prompt.layers=[{','.join(map(str, layers))}]")
            depths.append({"depth": k, "order": order, "layers": layers, **point})
    m = lengths[0]["metric"]
    print_table(("prompt length", "trainable", f"LAST dev {m}", f"LAST test {m}"),
                [(x["length"], f"{x['trainable']:,}", f"{x['last_dev']:.2f}", f"{x['last_test']:.2f}") for x in lengths])
    print_table(("depth", "order", "layers", f"LAST dev {m}", f"LAST test {m}"),
                [(x["depth"], x["order"], x["layers"], f"{x['last_dev']:.2f}", f"{x['last_test']:.2f}") for x in depths])
    out = write_json(f"ablation_{args.name}.json", {"name": args.name, "config": args.config, "steps": args.steps,
                                                    "seed": args.seed, "lr": args.lr, "base_length": base_length, "lengths": lengths, "depths": depths})

    def draw_length(ax):
        ax.plot([x["length"] for x in lengths], [x["last_dev"] for x in lengths], "o-", label="dev (last)")
        ax.plot([x["length"] for x in lengths], [x["last_test"] for x in lengths], "s--", label="test (last)")
        ax.set_xscale("log", base=2)
        ax.set_xticks([x["length"] for x in lengths], [str(x["length"]) for x in lengths])
        ax.set_title(f"{args.name}: prompt length (seed {args.seed}, {args.steps} steps)")
        ax.set_xlabel("prompt length (prefix tokens per layer)")
        ax.set_ylabel(m)
        ax.legend()

    def draw_depth(ax):
        for order, color in (("top-down", "C0"), ("bottom-up", "C1")):
            pts = [x for x in depths if x["order"] == order]
            for split, style in (("dev", "o-"), ("test", "s:")):
                ax.plot([x["depth"] for x in pts], [x[f"last_{split}"] for x in pts], style, color=color,
                        label=f"{order} ({split}, last)")
        ax.set_xlabel(f"layers with a prefix (of {args.layers})")
        ax.set_xticks([x["depth"] for x in depths[::2]])
        ax.set_title(f"{args.name}: prompt depth, P={base_length} (seed {args.seed}, {args.steps} steps)")
        ax.set_ylabel(m)
        ax.legend()
    save_plot(f"ablation_{args.name}_length.png", draw_length)
    save_plot(f"ablation_{args.name}_depth.png", draw_depth)
    print(f"wrote {out.relative_to(REPO)} and its plots", file=sys.stderr)


if __name__ == "__main__":
    main()
