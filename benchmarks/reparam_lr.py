#!/usr/bin/env python
"""Why a reparameterised prefix (``prompt.reparam``) trains its MLP at its own rate
(``prompt.reparam_lr_scale``): the same run at several scales of the MLP's rate, against the raw
prefix at the same ``train.lr``.

Adam moves every weight by about the learning rate per step, whatever its gradient's size. A raw
prefix value is one weight; a reparameterised one is a sum over the MLP's r hidden units, so at one
rate it can move up to r times faster, the keys and values grow until attention sees little but the
prefix, and the tagger falls back to the majority label. Each row is one real launcher run (2 ranks,
ZeRO-3) on WNUT-16, fold ``--fold`` of 3, seed 42; runs whose results.json exists are reused.

    .venv/bin/python benchmarks/reparam_lr.py [--scales 1,0.2,0.05,0.01] [--lr 1e-2] [--steps 150]

Prints dev F1 at every evaluation and the prefix's mean |value| at the end (its table, through the
MLP, read back from the run's artifact), and writes docs/benchmarks/reparam_lr_<name>.json.
"""
import argparse
import sys

from _bench import REPO, launch, print_table, write_json


def prefix_scale(artifact_dir) -> tuple[float, float]:
    """(mean, max) |value| of the trained prefix: the table the backbone sees, MLP applied."""
    import torch

    from deepprompt.artifacts import load_artifact
    from deepprompt.engine.serving import build_server

    server = build_server([load_artifact(artifact_dir)])
    with torch.no_grad():
        table = server.model.prompt.table().abs()
    return table.mean().item(), table.max().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="wnut16")
    ap.add_argument("--config", default="launcher/configs/wnut16.yaml")
    ap.add_argument("--scales", default="1,0.2,0.05,0.01", help="prompt.reparam_lr_scale values")
    ap.add_argument("--lr", default="1e-2")
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=512, help="prompt.reparam_hidden")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--runs", default="runs/reparam_lr")
    args = ap.parse_args()
    base = [f"train.lr={args.lr}", f"prompt.length={args.length}", f"train.max_steps={args.steps}",
            "train.eval_every=50", "task.folds=3", f"task.fold={args.fold}", "train.seed=42"]
    variants = [(f"reparam r={args.hidden}, MLP at lr x {s}", f"scale{s}",
                 ["prompt.reparam=true", f"prompt.reparam_hidden={args.hidden}", f"prompt.reparam_lr_scale={s}"])
                for s in args.scales.split(",")] + [("raw prefix", "raw", [])]
    rows, table = [], []
    for label, tag, overrides in variants:
        out = REPO / args.runs / args.name / f"{tag}-lr{args.lr}-P{args.length}-{args.steps}-fold{args.fold}"
        r = launch(out, base + overrides, config=args.config)
        (_, t), = r["tasks"].items()
        dev = {h["step"]: h["dev_mean_main"] for h in r["eval_history"]}
        mean_abs, max_abs = prefix_scale(out / "artifact")
        rows.append({"variant": label, "overrides": overrides, "dev_f1_by_step": dev,
                     "last_dev_f1": t["last"]["dev_f1"], "train_loss_last": r["train_loss"]["last"],
                     "prefix_mean_abs": mean_abs, "prefix_max_abs": max_abs, "run": str(out.relative_to(REPO))})
        table.append((label, *(f"{v:.2f}" for v in dev.values()), f"{r['train_loss']['last']:.3f}",
                      f"{mean_abs:.2f}", f"{max_abs:.1f}"))
    steps = list(rows[0]["dev_f1_by_step"])
    print_table(("variant", *(f"dev F1 @ {s}" for s in steps), "last train loss", "prefix mean |v|", "max |v|"), table)
    path = write_json(f"reparam_lr_{args.name}.json", {"protocol": {
        "task": f"{args.name}, fold {args.fold} of 3, seed 42", "ranks": 2, "steps": args.steps, "lr": args.lr,
        "length": args.length, "config": args.config, "metric": "dev F1 (LAST at each evaluation)"}, "rows": rows})
    print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
