#!/usr/bin/env python
"""MPT-2 vs single-task P-Tuning v2 on WNUT-16 at the same TOTAL budget of optimizer steps.

Single task: launcher/configs/wnut16.yaml for ``--steps`` steps. MPT-2: stage 1 =
launcher/configs/mpt2_wnut16_squad_stage1.yaml (one prompt over WNUT-16 NER + SQuADShifts QA, a head
each) for half the steps, stage 2 = mpt2_wnut16_squad_stage2.yaml (WNUT-16 from stage 1's prompt
and wnut16 head) for the other half. 2 ranks under ZeRO-3 through the real launcher; runs whose
results.json exists are reused.

    .venv/bin/python benchmarks/mpt2.py [--steps 300] [--seeds 42,43,44] [--weights wnut16=2,squad=1]

Prints a table (mean ± std over the seeds, LAST and BEST-DEV) and writes docs/benchmarks/mpt2_wnut16.json.
"""
import argparse
import sys

from _bench import REPO, fmt_mean_std, launch, mean_std, print_table, write_json


KEYS = (("last", "dev_f1"), ("last", "test_f1"), ("best_dev", "dev_f1"), ("best_dev", "test_f1"))


def one_seed(args, seed: int) -> dict:
    """Single-task and MPT-2 runs of one seed; their WNUT-16 scores and stage 1's."""
    root = REPO / args.runs / f"s{seed}-{args.steps}"
    half = args.steps // 2
    common = [f"train.seed={seed}"]
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
    scores = {}
    for name, r in (("single", single), ("mpt2", stage2)):
        t = r["tasks"]["wnut16"]
        scores[name] = {f"{w}_{k}": t[w][k] for w, k in KEYS} | {"best_dev_step": t["best_dev"]["step"],
                                                                  "wall_time_s": r["wall_time_s"]}
    scores["stage1"] = {"last": {name: t["last"] for name, t in stage1["tasks"].items()},
                        "mixture": stage1["mixture"], "wall_time_s": stage1["wall_time_s"]}
    return {"seed": seed, **scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="total optimizer steps of each side")
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--weights", default="wnut16=2,squad=1",
                    help="stage-1 mixer weights (a QA step costs ~10x a WNUT-16 step on a CPU); '' = the config's policy")
    ap.add_argument("--runs", default="runs/mpt2")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    half = args.steps // 2
    per_seed = [one_seed(args, seed) for seed in seeds]
    rows = []
    for side, label, steps in (("single", "single-task P-Tuning v2", str(args.steps)),
                               ("mpt2", "MPT-2 (stage 1 + stage 2)", f"{half} + {args.steps - half}")):
        rows.append({"run": label, "steps": steps,
                     **{f"{w}_{k}": mean_std([s[side][f"{w}_{k}"] for s in per_seed]) for w, k in KEYS}})
    print_table(("run", "steps", "LAST dev F1", "LAST test F1", "BEST-DEV dev F1", "BEST-DEV test F1"),
                [(x["run"], x["steps"], *(fmt_mean_std(x[f"{w}_{k}"], len(seeds)) for w, k in KEYS))
                 for x in rows])
    print(f"mean ± sample std over seeds {seeds}; stage 1 ({half} steps) per seed: " + " | ".join(
        f"s{s['seed']} " + "; ".join(f"{k} " + ", ".join(f"{m} {v:.2f}" for m, v in d.items()
                                                       if m.startswith("dev") and not m.endswith(("precision", "recall")))
                                      for k, d in s["stage1"]["last"].items()) for s in per_seed))
    out = write_json("mpt2_wnut16.json", {"steps": args.steps, "seeds": seeds, "stage1_weights": args.weights,
                                          "world_size": 2, "rows": rows, "runs": per_seed})
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
