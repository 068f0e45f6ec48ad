#!/usr/bin/env python
"""Training speed of finetune vs prefix (P-Tuning v2) vs prompt (Lester) vs HF PEFT prefix tuning,
in ONE process on the same backbone, data, batch and sequence length.

Every method trains the same token-classification objective (WNUT-16 train sentences, padded to a
fixed length so every step does identical work) with AdamW for ``--steps`` timed steps after
``--warmup`` untimed ones; the row reports the median step time and padded tokens/s. Plain PyTorch
on one process (no DeepSpeed), so PEFT -- which cannot run inside deepprompt's engine -- is timed
under exactly the same conditions. Theory for a frozen backbone: no weight gradients, so a step
costs about 2/3 of a fine-tuning step (forward 2N + input-gradient 2N vs 2N + 2N + 2N FLOPs/token).

    .venv/bin/python benchmarks/speed.py [--batch 32] [--seq 128] [--steps 10] [--threads 2]

Prints a table and writes docs/benchmarks/speed.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepprompt.config import load_config  # noqa: E402
from deepprompt.models.backbones.base import family_for_model_type  # noqa: E402
from deepprompt.models.heads import IGNORE  # noqa: E402
from deepprompt.models.loading import load_tokenizer_and_config, resolve_model_path  # noqa: E402
from deepprompt.models.assembly import HeadSpec, assemble  # noqa: E402
from deepprompt.tasks import build_task  # noqa: E402
import deepprompt.models.backbones  # noqa: E402,F401
import deepprompt.prompts  # noqa: E402,F401

METHODS = ("finetune", "prefix", "prompt", "peft-prefix")


def fixed_batches(task, tokenizer, batch: int, seq: int, n: int) -> list[dict]:
    """``n`` batches of ``batch`` training sentences, each padded (or cut) to exactly ``seq`` tokens."""
    feats = task.features("train")
    out = []
    for b in range(n):
        rows = [feats[(b * batch + i) % len(feats)] for i in range(batch)]
        ids = torch.full((batch, seq), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, seq), IGNORE, dtype=torch.long)
        for i, r in enumerate(rows):
            k = min(seq, len(r["input_ids"]))
            ids[i, :k] = torch.tensor(r["input_ids"][:k])
            labels[i, :k] = torch.tensor(r["labels"][:k])
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def ours(method: str, run, path: str, num_labels: int):
    from transformers import AutoModel

    cfg = run.prompt.__class__(**{**vars(run.prompt), "method": method})
    _, hf_config = load_tokenizer_and_config(path)
    family = family_for_model_type(hf_config.model_type, run.model.family)
    backbone = AutoModel.from_pretrained(path, **family.load_kwargs)
    adapter = family(backbone)
    torch.manual_seed(0)
    model = assemble(backbone, adapter, cfg, [HeadSpec("t", "token", num_labels)]).train()
    return model, lambda batch: model(batch, "t").loss


def peft_prefix(run, path: str, num_labels: int):
    import peft
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(path, add_pooling_layer=False)
    cfg = peft.PrefixTuningConfig(task_type=peft.TaskType.FEATURE_EXTRACTION, num_virtual_tokens=run.prompt.length)
    model = peft.get_peft_model(backbone, cfg).train()
    head = nn.Linear(backbone.config.hidden_size, num_labels)
    model.add_module("bench_head", head)

    def loss(batch):
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return nn.functional.cross_entropy(head(hidden).flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE)
    return model, loss


def time_method(model, loss_fn, batches, warmup: int, steps: int) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    times = []
    for i in range(warmup + steps):
        batch = batches[i % len(batches)]
        t0 = time.perf_counter()
        loss = loss_fn(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    total = sum(p.numel() for p in model.parameters())
    return {"step_s": statistics.median(times), "step_s_all": times,
            "trainable": sum(p.numel() for p in params), "total": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = load_config(None)  # the embedded default: all-MiniLM-L6-v2 + WNUT-16, prefix length 16
    path = resolve_model_path(run.model.path)
    tokenizer, _ = load_tokenizer_and_config(path, run.model.family)
    task = build_task(run.task, tokenizer)
    batches = fixed_batches(task, tokenizer, args.batch, args.seq, 4)
    rows = []
    for method in args.methods.split(","):
        build = (lambda: peft_prefix(run, path, len(task.labels))) if method == "peft-prefix" \
            else (lambda m=method: ours(m, run, path, len(task.labels)))
        model, loss_fn = build()
        r = time_method(model, loss_fn, batches, args.warmup, args.steps)
        r.update(method=method, tokens_per_s=args.batch * args.seq / r["step_s"])
        rows.append(r)
        print(f"{method}: {r['step_s']:.3f} s/step", file=sys.stderr)
        del model, loss_fn
    ft = next((r["step_s"] for r in rows if r["method"] == "finetune"), None)
    for r in rows:
        r["ratio_vs_finetune"] = r["step_s"] / ft if ft else None
    head = ("method", "trainable", "s/step (median)", "tokens/s", "step time / finetune")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        ratio = f"{r['ratio_vs_finetune']:.2f}" if r["ratio_vs_finetune"] else "-"
        print(f"| {r['method']} | {r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f} %) | "
              f"{r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | {ratio} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"backbone": run.model.path, "task": run.task.name, "batch": args.batch,
                               "seq": args.seq, "steps": args.steps, "warmup": args.warmup,
                               "threads": args.threads, "prefix_length": run.prompt.length,
                               "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                               "rows": rows}, indent=2))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
