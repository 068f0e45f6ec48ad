#!/usr/bin/env python
"""Is a backbone's slow fine-tuning ours or the backbone's? deepprompt's ``finetune`` (PromptedModel +
token head) against stock ``AutoModelForTokenClassification`` on the SAME WNUT-16 batches: AdamW at
one learning rate, gradient clipping 1.0, one process, no DeepSpeed. Every ``--every`` steps it
records the loss and the share of real tokens predicted as an entity (0 = the "all O" plateau).

    .venv/bin/python benchmarks/finetune_vs_hf.py --model all-mpnet-base-v2 [--lr 1e-4] [--steps 60]

Prints a table and writes docs/benchmarks/finetune_vs_hf_<model>.json.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from speed import IGNORE, REPO, build_task, load_config, load_tokenizer_and_config, ours, resolve_model_path
from _bench import print_table, write_json


def batches(task, batch: int, n: int) -> list[dict]:
    """``n`` batches of ``batch`` training sentences in file order, as the trainer collates them."""
    feats = task.features("train")
    return [task.collate([feats[(b * batch + i) % len(feats)] for i in range(batch)]) for b in range(n)]


def stock(path: str, num_labels: int):
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return AutoModelForTokenClassification.from_pretrained(path, num_labels=num_labels).train()


def trajectory(model, forward, data: list[dict], lr: float, every: int) -> list[dict]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    points, start = [], time.time()
    for step, b in enumerate(data, 1):
        out = forward(b)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step % every == 0:
            real = b["labels"] != IGNORE
            points.append({"step": step, "loss": out.loss.item(),
                           "entity_pred": (out.logits.argmax(-1)[real] != 0).float().mean().item(),
                           "entity_gold": (b["labels"][real] != 0).float().mean().item(),
                           "elapsed_s": time.time() - start})
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="all-mpnet-base-v2", help="asset name or local path")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = load_config(None)  # the embedded default task: WNUT-16
    path = resolve_model_path(args.model)
    tokenizer, _ = load_tokenizer_and_config(path, run.model.family)
    task = build_task(run.task, tokenizer)
    data = batches(task, args.batch, args.steps)
    curves = {}
    for name, build, forward in (
            ("deepprompt finetune", lambda: ours("finetune", run, path, len(task.labels))[0], lambda m, b: m(b, "t")),
            ("HF AutoModelForTokenClassification", lambda: stock(path, len(task.labels)), lambda m, b: m(**b))):
        torch.manual_seed(0)
        model = build()
        curves[name] = trajectory(model, lambda b: forward(model, b), data, args.lr, args.every)
        del model
    names = list(curves)
    print_table(("step", *(f"{n}: loss / entity share" for n in names), "gold entity share"),
                [(p["step"], *(f"{curves[n][i]['loss']:.3f} / {curves[n][i]['entity_pred']:.3f}" for n in names),
                  f"{p['entity_gold']:.3f}") for i, p in enumerate(curves[names[0]])])
    slug = args.model.rstrip("/").split("/")[-1]
    out = write_json(f"finetune_vs_hf_{slug}.json", {"model": args.model, "lr": args.lr, "batch": args.batch,
                                                    "steps": args.steps, "threads": args.threads, "curves": curves})
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
