#!/usr/bin/env python
"""FT vs P-Tuning v2 from finished sweeps: each sweep's final (dev-chosen, confirmed) configuration,
its confirmation runs' LAST and BEST-DEV dev/test (mean ± std over fresh seeds × folds), the
difference of the means and its standard error (Welch: sqrt(s1²/n1 + s2²/n2), the runs taken as
independent). Prints a table and writes docs/benchmarks/sweep_<name>.json.

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
    if chosen is None or len(chosen["runs"]) < chosen["expected_runs"]:
        sys.exit(f"sweep_compare: {sweep_dir}: no complete confirmation of the final trial yet")
    return report, chosen["runs"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("dirs", nargs="+", help="sweep directories (the first is the reference, e.g. fine-tuning)")
    args = ap.parse_args()
    rows, out = [], []
    ref = None
    for d in args.dirs:
        report, per_run = final_runs(Path(d))
        agg = R.aggregate([r["scores"] for r in per_run])
        n = len(per_run)
        entry = {"dir": d, "final": report["final"], "params": next(t["params"] for t in report["trials"]
                                                                       if t["number"] == report["final"]),
                 "runs": n, "scores": agg}
        ref = ref or entry
        for w in R.WHICH:
            for split in ("dev", "test"):
                if split in agg[w]:
                    m, s = agg[w][split]
                    rm, rs = ref["scores"][w][split]
                    se = math.sqrt(s ** 2 / n + rs ** 2 / ref["runs"])
                    entry[f"{w}_{split}_minus_ref"] = (m - rm, se)
        out.append(entry)
        rows.append((d, entry["params"], n, *(R.fmt(agg[w][s], n) for w in R.WHICH for s in ("dev", "test")),
                     "—" if entry is ref else "{:+.2f} ± {:.2f}".format(*entry["last_test_minus_ref"])))
    print_table(("sweep", "final configuration", "runs", "LAST dev", "LAST test", "BEST-DEV dev", "BEST-DEV test",
                 "LAST test − first (± s.e.)"), rows)
    print(f"wrote {write_json(f'sweep_{args.name}.json', {'name': args.name, 'sweeps': out})}", file=sys.stderr)


if __name__ == "__main__":
    main()
