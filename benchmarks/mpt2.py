#!/usr/bin/env python
"""MPT-2 vs single-task P-Tuning v2 at the same TOTAL budget of optimizer steps, on WNUT-16 NER or
on QA (SQuADShifts -> SQuAD v1.1 dev).

Stage 1 (shared by both targets) = launcher/configs/mpt2_wnut16_squad_stage1.yaml: one prompt over
WNUT-16 + SQuADShifts, a head each, for half the steps. Stage 2 = the target alone from stage 1's
prompt and that target's head, for the other half. Single task = the target's own config for all
the steps. 2 ranks under ZeRO-3 through the real launcher; runs whose results.json exists are reused.

    .venv/bin/python benchmarks/mpt2.py [--target wnut16|squad] [--steps 300] [--seeds 42,43,44]

Prints a table (mean ± std over the seeds, LAST and BEST-DEV) and writes docs/benchmarks/mpt2_<target>.json.
"""
import argparse
import sys
from dataclasses import dataclass

from _bench import REPO, fmt_mean_std, launch, mean_std, print_table, write_json

STAGE1 = "launcher/configs/mpt2_wnut16_squad_stage1.yaml"


@dataclass(frozen=True)
class Target:
    single: str                 # the single-task config (and its batch size)
    stage2: str                 # the stage-2 config (same batch as single)
    keys: tuple                 # (which checkpoint, metric) columns
    periodic_eval: bool         # evaluate during training (BEST-DEV picks a step) or once at the end
    runs: tuple[str, str]       # run-folder names under runs/mpt2/s<seed>-<steps>/: (single, stage 2)


TARGETS = {
    "wnut16": Target("launcher/configs/wnut16.yaml", "launcher/configs/mpt2_wnut16_squad_stage2.yaml",
                     (("last", "dev_f1"), ("last", "test_f1"), ("best_dev", "dev_f1"), ("best_dev", "test_f1")),
                     True, ("single", "stage2")),
    # SQuAD has no test split: one evaluation at the end, on dev, so LAST is BEST-DEV
    "squad": Target("launcher/configs/squadshifts_prefix.yaml", "launcher/configs/mpt2_wnut16_squad_stage2_qa.yaml",
                    (("last", "dev_exact_match"), ("last", "dev_f1")), False, ("single_qa", "stage2_qa")),
}
LABELS = {"dev_f1": "dev F1", "test_f1": "test F1", "dev_exact_match": "dev EM"}


def one_seed(args, target: Target, seed: int) -> dict:
    """Single-task and MPT-2 runs of one seed; their target scores and stage 1's."""
    root = REPO / args.runs / f"s{seed}-{args.steps}"
    half = args.steps // 2
    common = [f"train.seed={seed}"]
    evals = [f"train.eval_every={half // 3 or 1}"] if target.periodic_eval else []
    single = launch(root / target.runs[0], [*common, f"train.max_steps={args.steps}", *evals],
                    config=target.single)
    mix = []
    if args.weights:
        pairs = ", ".join(f"{k}: {v}" for k, v in (kv.split("=") for kv in args.weights.split(",")))
        mix = ["mixer.policy=weights", f"mixer.weights={{{pairs}}}"]
    stage1 = launch(root / "stage1", [*common, f"train.max_steps={half}", *mix], config=STAGE1)
    stage2 = launch(root / target.runs[1], [*common, f"train.max_steps={args.steps - half}", *evals,
                                            f"prompt.init_from={root / 'stage1' / 'artifact'}"],
                    config=target.stage2)
    scores = {}
    for name, r in (("single", single), ("mpt2", stage2)):
        t = r["tasks"][args.target]
        scores[name] = {f"{w}_{k}": t[w][k] for w, k in target.keys} | {"best_dev_step": t["best_dev"]["step"],
                                                                         "wall_time_s": r["wall_time_s"]}
    scores["stage1"] = {"last": {name: t["last"] for name, t in stage1["tasks"].items()},
                        "mixture": stage1["mixture"], "wall_time_s": stage1["wall_time_s"]}
    return {"seed": seed, **scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=sorted(TARGETS), default="wnut16", help="the task stage 2 tunes for")
    ap.add_argument("--steps", type=int, default=300, help="total optimizer steps of each side")
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--weights", default="wnut16=2,squad=1",
                    help="stage-1 mixer weights (a QA step costs ~10x a WNUT-16 step on a CPU); '' = the config's policy")
    ap.add_argument("--runs", default="runs/mpt2")
    args = ap.parse_args()
    target = TARGETS[args.target]
    seeds = [int(s) for s in args.seeds.split(",")]
    half = args.steps // 2
    per_seed = [one_seed(args, target, seed) for seed in seeds]
    rows = []
    for side, label, steps in (("single", "single-task P-Tuning v2", str(args.steps)),
                               ("mpt2", "MPT-2 (stage 1 + stage 2)", f"{half} + {args.steps - half}")):
        rows.append({"run": label, "steps": steps,
                     **{f"{w}_{k}": mean_std([s[side][f"{w}_{k}"] for s in per_seed]) for w, k in target.keys}})
    print_table(("run", "steps", *(f"{'LAST' if w == 'last' else 'BEST-DEV'} {LABELS[k]}" for w, k in target.keys)),
                [(x["run"], x["steps"], *(fmt_mean_std(x[f"{w}_{k}"], len(seeds)) for w, k in target.keys))
                 for x in rows])
    print(f"mean ± sample std over seeds {seeds}; stage 1 ({half} steps) per seed: " + " | ".join(
        f"s{s['seed']} " + "; ".join(f"{k} " + ", ".join(f"{m} {v:.2f}" for m, v in d.items()
                                                       if m.startswith("dev") and not m.endswith(("precision", "recall")))
                                      for k, d in s["stage1"]["last"].items()) for s in per_seed))
    out = write_json(f"mpt2_{args.target}.json", {"target": args.target, "steps": args.steps, "seeds": seeds,
                                                  "stage1_weights": args.weights, "world_size": 2,
                                                  "rows": rows, "runs": per_seed})
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
