#!/usr/bin/env python
"""MPT-2 vs single-task P-Tuning v2 on WNUT-16 at the same TOTAL budget of optimizer steps.

Single task: launcher/configs/wnut16.yaml for ``--steps`` steps. MPT-2: stage 1 =
launcher/configs/mpt2_wnut16_squad_stage1.yaml (one prompt over WNUT-16 NER + SQuADShifts QA, a head
each) for half the steps, stage 2 = mpt2_wnut16_squad_stage2.yaml (WNUT-16 from stage 1's prompt
and wnut16 head) for the other half. 2 ranks under ZeRO-3 through the real launcher; runs whose
results.json exists are reused.

    .venv/bin/python benchmarks/mpt2.py [--steps 300] [--seed 42] [--weights wnut16=2,squad=1]

Prints a table and writes docs/benchmarks/mpt2_wnut16.json.
"""
import argparse
import sys

from _bench import REPO, launch, print_table, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="total optimizer steps of each side")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--weights", default="wnut16=2,squad=1",
                    help="stage-1 mixer weights (a QA step costs ~10x a WNUT-16 step on a CPU); '' = the config's policy")
    ap.add_argument("--runs", default="runs/mpt2")
    args = ap.parse_args()
    root = REPO / args.runs / f"s{args.seed}-{args.steps}"
    half = args.steps // 2
    common = [f"train.seed={args.seed}"]
    single = launch(root / "single", [*common, f"train.max_steps={args.steps}", f"train.eval_every={half // 3 or 1}"],
                    config="launcher/configs/wnut16.yaml")
    mix = []
    if args.weights:
        pairs = ", ".join(f"{k}: {v}" for k, v in (kv.split("=") for kv in args.weights.split(",")))
        mix = ["mixer.policy=weights", f"mixer.weights={{{pairs}}}"]
    stage1 = launch(root / "stage1", [*common, f"train.max_steps={half}", *mix],
                    config="launcher/configs/mpt2_wnut16_squad_stage1.yaml")
    stage2 = launch(root / "stage2", [*common, f"train.max_steps={args.steps - half}",
                                      f"train.eval_every={half // 3 or 1}", f"prompt.init_from={root / 'stage1' / 'artifact'}"],
                    config="launcher/configs/mpt2_wnut16_squad_stage2.yaml")
    rows = []
    for name, r in (("single-task P-Tuning v2", single), ("MPT-2 stage 2", stage2)):
        t = r["tasks"]["wnut16"]
        rows.append({"run": name, "steps": r["steps"], "last_dev_f1": t["last"]["dev_f1"], "last_test_f1": t["last"]["test_f1"],
                     "best_dev_f1": t["best_dev"]["dev_f1"], "best_dev_test_f1": t["best_dev"]["test_f1"],
                     "best_dev_step": t["best_dev"]["step"], "wall_time_s": r["wall_time_s"]})
    s1 = {name: t["last"] for name, t in stage1["tasks"].items()}
    print_table(("run", "steps", "LAST dev F1", "LAST test F1", "BEST-DEV dev F1 (step)", "its test F1"),
                [(x["run"], x["steps"] if x["run"].startswith("single") else f"{half} + {x['steps']}",
                  f"{x['last_dev_f1']:.2f}", f"{x['last_test_f1']:.2f}", f"{x['best_dev_f1']:.2f} ({x['best_dev_step']})",
                  f"{x['best_dev_test_f1']:.2f}") for x in rows])
    print(f"stage 1 ({half} steps, drawn {stage1['mixture']['steps']}): " +
          "; ".join(f"{k}: " + ", ".join(f"{m} {v:.2f}" for m, v in d.items()) for k, d in s1.items()))
    out = write_json("mpt2_wnut16.json", {"steps": args.steps, "seed": args.seed, "stage1_weights": args.weights,
                                          "world_size": 2, "rows": rows, "stage1": {"last": s1, "mixture": stage1["mixture"]}})
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
