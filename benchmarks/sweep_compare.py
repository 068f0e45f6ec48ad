#!/usr/bin/env python
"""FT vs P-Tuning v2 from finished sweeps: each sweep's final (dev-chosen, confirmed) configuration,
its confirmation runs' LAST and BEST-DEV dev/test (mean ± std over fresh seeds × folds), and its
difference from the first sweep's (the reference, e.g. fine-tuning) two ways:
- paired, the comparison to read: the runs matched by (fold, seed), since both sweeps confirm on the
  same folds and seeds; the mean difference with its 95 % t-interval (``runs.paired_difference``);
- unpaired (Welch: sqrt(s1²/n1 + s2²/n2), the runs taken as independent), kept for reference. It
  counts the spread between folds as noise.
Each input is a sweep directory (its ``report/report.json``), a sweep's report.json itself (e.g. the
copy kept under docs/benchmarks/), or a directory of finished runs of one configuration (each
``<name>/results.json`` with its ``run_config.json``: its fold and seed are ``task.fold`` and
``train.seed``), e.g. a shipped recipe confirmed outside a sweep. Where the inputs hold different
(fold, seed) runs, all are compared on the runs every input holds, and it says so.
With ``--margin M`` it also says whether the paired 95 % interval lies above −M (e.g. "within 1 F1
of fine-tuning"). Prints a table and writes sweep_<name>.json and sweep_<name>.png (each run's LAST
dev and test per sweep, a line joining the runs of one (fold, seed)) under ``--out``
(docs/benchmarks/).

    .venv/bin/python benchmarks/sweep_compare.py --name wnut16 runs/sweep/wnut16_finetune runs/sweep/wnut16_prefix
"""
import argparse
import json
import math
import sys
from pathlib import Path

from _bench import REPO, print_table

from deepprompt.config import flatten
from deepprompt.errors import ConfigError
from deepprompt.fileio import load_json, read_text
from deepprompt.sweep import runs as R


def final_runs(path: Path) -> tuple[dict, list[dict]]:
    """(the configuration compared, its runs ``[{"fold", "seed", "dir", "scores"}]``) of one input."""
    report_file = path if path.is_file() else path / "report" / "report.json"
    if report_file.is_file():
        report = load_json(read_text(report_file, ConfigError), report_file, ConfigError)
        chosen = next((c for c in report["confirmed"] if c["number"] == report["final"]), None)
        if chosen is None or report.get("final_by") != "confirmation":
            runs = report.get("confirmation_runs", {})
            sys.exit(f"sweep_compare: {path}: the confirmation is not complete yet "
                     f"({runs.get('done', 0)} of {runs.get('planned', 0)} runs)")
        return {"final": report["final"], "params": chosen["params"]}, chosen["runs"]
    per_run, base = [], None
    for res in sorted(path.glob("*/results.json")):
        cfg_path = res.parent / "run_config.json"
        if not cfg_path.is_file():
            sys.exit(f"sweep_compare: {res.parent}: a results.json without its run_config.json (which fold and seed?)")
        cfg = load_json(read_text(cfg_path, ConfigError), cfg_path, ConfigError)
        # one configuration run on several folds and seeds: every other key must agree
        flat = {k: v for k, v in flatten(cfg).items() if k not in ("task.fold", "train.seed", "output_dir")}
        if base is None:
            base = (res.parent, flat)
        elif flat != base[1]:
            differ = sorted(k for k in flat.keys() | base[1].keys() if flat.get(k) != base[1].get(k))
            sys.exit(f"sweep_compare: {path}: runs of different configurations ({base[0].name} and "
                     f"{res.parent.name} differ in {', '.join(differ)}); one directory holds one configuration")
        per_run.append({"fold": cfg["task"].get("fold"), "seed": cfg["train"]["seed"], "dir": str(res.parent),
                        "scores": R.scores(R.read_results(res))})
    if not per_run:
        sys.exit(f"sweep_compare: {path}: neither a sweep (report/report.json), a report.json, nor finished runs "
                 f"(<name>/results.json)")
    params = {k: base[1][k] for k in ("prompt.method", "train.lr")}
    return {"final": None, "params": params}, per_run


def common_runs(per_input: list[list[dict]], names: list[str]) -> list[list[dict]]:
    """Each input's runs restricted to the (fold, seed) pairs every input holds (a line on stderr when
    that drops any), so the means and the paired difference rest on the same runs."""
    keys = set.intersection(*({(r["fold"], r["seed"]) for r in rs} for rs in per_input))
    if not keys:
        sys.exit("sweep_compare: the inputs share no (fold, seed) run")
    for name, rs in zip(names, per_input):
        if len(rs) > len(keys):
            print(f"sweep_compare: {name}: compared on the {len(keys)} (fold, seed) runs every input holds "
                  f"(of its {len(rs)})", file=sys.stderr)
    return [[r for r in rs if (r["fold"], r["seed"]) in keys] for rs in per_input]


def main() -> None:
    try:
        compare()
    except ConfigError as e:  # a results.json or run_config.json that cannot be read: its one line
        sys.exit(f"sweep_compare: {e}")


def compare() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("dirs", nargs="+", help="sweep directories, report.json files or run directories (the first "
                    "is the reference, e.g. fine-tuning)")
    ap.add_argument("--margin", type=float, default=1.0, help="the goal: within this many points of the reference "
                    "(paired LAST test, 95 %% interval; default: %(default)s)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks", help="where the JSON and the plot go")
    args = ap.parse_args()
    rows, out, verdicts, all_runs = [], [], [], []
    ref = ref_runs = None
    loaded = [final_runs(Path(d)) for d in args.dirs]
    for d, (what, _), per_run in zip(args.dirs, loaded, common_runs([rs for _, rs in loaded], args.dirs)):
        all_runs.append(per_run)
        agg = R.aggregate([r["scores"] for r in per_run])
        n = len(per_run)
        entry = {"dir": d, **what, "runs": n, "scores": agg}
        if ref is None:
            ref, ref_runs = entry, per_run
        for w in R.WHICH:
            for split in ("dev", "test"):
                if split in agg[w]:
                    m, s = agg[w][split]
                    rm, rs = ref["scores"][w][split]
                    se = math.sqrt(s ** 2 / n + rs ** 2 / ref["runs"])
                    entry[f"{w}_{split}_minus_ref"] = (m - rm, se)
                    entry[f"{w}_{split}_minus_ref_paired"] = R.paired_difference(per_run, ref_runs, w, split)
        out.append(entry)
        paired = entry.get("last_test_minus_ref_paired")
        if entry is not ref and paired:
            lo, hi = paired["ci95"]
            entry["within_margin"] = lo > -args.margin
            verdicts.append(f"{d} − {args.dirs[0]}, LAST test, paired over {paired['n']} (fold, seed) runs: "
                            f"{paired['mean']:+.2f} (95 % interval {lo:+.2f} … {hi:+.2f}): within {args.margin:g} "
                            f"{'shown' if entry['within_margin'] else 'NOT shown'} at 95 %")
        rows.append((d, entry["params"], n, *(R.fmt(agg[w][s], n) for w in R.WHICH for s in ("dev", "test")),
                     "—" if entry is ref else "{:+.2f} ± {:.2f}".format(*entry["last_test_minus_ref"]),
                     "—" if entry is ref or not paired else "{:+.2f} [{:+.2f}, {:+.2f}]".format(
                         paired["mean"], *paired["ci95"])))
    print_table(("sweep", "final configuration", "runs", "LAST dev", "LAST test", "BEST-DEV dev", "BEST-DEV test",
                 "LAST test − first (± s.e., unpaired)", "LAST test − first, paired [95 %]"), rows)
    for line in verdicts:
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sweep_{args.name}.json"
    path.write_text(json.dumps({"name": args.name, "margin": args.margin, "sweeps": out}, indent=2))
    print(f"wrote {path} and {plot(args.dirs, all_runs, args.out / f'sweep_{args.name}.png')}", file=sys.stderr)


def plot(names: list[str], per_sweep: list[list[dict]], path: Path) -> Path:
    """Per split (dev, test): each sweep's runs (LAST) at its own x, a grey line joining the runs of
    one (fold, seed) across sweeps, the mean as a bar: the pairing the paired interval rests on, seen."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8.0, 4.0), dpi=110, sharey=True)
    keys = sorted({(r["fold"], r["seed"]) for rs in per_sweep for r in rs}, key=str)
    for ax, split in zip(axes, ("dev", "test")):
        by_key = [{(r["fold"], r["seed"]): r["scores"]["last"].get(split) for r in rs} for rs in per_sweep]
        for k in keys:
            ax.plot(range(len(per_sweep)), [b.get(k) for b in by_key], "-", color="grey", alpha=0.4, lw=0.8)
        for i, b in enumerate(by_key):
            vals = [v for v in b.values() if v is not None]
            ax.plot([i] * len(vals), vals, "o", alpha=0.8)
            if vals:
                ax.hlines(sum(vals) / len(vals), i - 0.2, i + 0.2, color="black", lw=2)
        labels = [(Path(n).parent if Path(n).is_file() else Path(n)).name for n in names]  # a report.json: its folder
        ax.set_xticks(range(len(per_sweep)), labels, fontsize=8)
        ax.set_title(f"LAST {split}, per (fold, seed) run")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("main metric")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
