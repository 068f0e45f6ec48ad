#!/usr/bin/env python
"""FT vs P-Tuning v2 from finished sweeps: each sweep's final (dev-chosen, confirmed) configuration,
its confirmation runs' LAST and BEST-DEV dev/test (mean ± std over fresh seeds × folds), and its
difference from the first sweep's (the reference, e.g. fine-tuning) two ways:
- paired, the comparison to read: the runs matched by (fold, seed), since both sweeps confirm on the
  same folds and seeds; the mean difference with its 95 % t-interval (``runs.paired_difference``);
- unpaired (Welch: sqrt(s1²/n1 + s2²/n2), the runs taken as independent), kept for reference. It
  counts the spread between folds as noise.
With ``--margin M`` it also says whether the paired 95 % interval lies above −M (e.g. "within 1 F1
of fine-tuning"). Prints a table and writes docs/benchmarks/sweep_<name>.json.

    .venv/bin/python benchmarks/sweep_compare.py --name wnut16 runs/sweep/wnut16_finetune runs/sweep/wnut16_prefix
"""
import argparse
import json
import math
import sys
from pathlib import Path

from _bench import print_table, write_json

from deepprompt.sweep import runs as R


def final_runs(sweep_dir: Path) -> tuple[dict, list[dict]]:
    report = json.loads((sweep_dir / "report" / "report.json").read_text())
    chosen = next((c for c in report["confirmed"] if c["number"] == report["final"]), None)
    if chosen is None or report.get("final_by") != "confirmation":
        runs = report.get("confirmation_runs", {})
        sys.exit(f"sweep_compare: {sweep_dir}: the confirmation is not complete yet "
                 f"({runs.get('done', 0)} of {runs.get('planned', 0)} runs)")
    return report, chosen["runs"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("dirs", nargs="+", help="sweep directories (the first is the reference, e.g. fine-tuning)")
    ap.add_argument("--margin", type=float, default=1.0, help="the goal: within this many points of the reference "
                    "(paired LAST test, 95 %% interval; default: %(default)s)")
    args = ap.parse_args()
    rows, out, verdicts = [], [], []
    ref = ref_runs = None
    for d in args.dirs:
        report, per_run = final_runs(Path(d))
        agg = R.aggregate([r["scores"] for r in per_run])
        n = len(per_run)
        entry = {"dir": d, "final": report["final"], "params": next(t["params"] for t in report["trials"]
                                                                       if t["number"] == report["final"]),
                 "runs": n, "scores": agg}
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
    print(f"wrote {write_json(f'sweep_{args.name}.json', {'name': args.name, 'margin': args.margin, 'sweeps': out})}", file=sys.stderr)


if __name__ == "__main__":
    main()
