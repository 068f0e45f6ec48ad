#!/usr/bin/env python
"""A real decoder (SmolLM2-135M-Instruct, Llama architecture, 9 query / 3 key-value heads) on a real
generation task: zero-shot (no training) vs P-Tuning v2 (prefix, P=16 and P=64) vs Lester prompt
tuning (prompt, P=16) vs finetune, at one fixed budget (same steps, batch, data, decoding).

Data (``--data``):
  * ``squad`` (the issue's protocol; needs ``python -m deepprompt fetch-assets squad``): task squad_gen,
    train = the SQuADShifts sets, dev = the first ``--dev`` questions of SQuAD v1.1 dev, EM/F1;
  * ``wnut16`` (real data that is always fetchable here): WNUT-16 tweets (the wnut16 task's own
    deterministic 80/10/10 split of the released file) turned into a generation task: the prompt asks
    for the tweet's named entities, the response lists them (``a ; b``) or says ``none``; EM/ROUGE-L.
Every trained run is one ZeRO-3 rank through the real launcher (runs reused when their results.json
exists); zero-shot runs the same task, generation code and metric in process with an empty prefix.

    .venv/bin/python -m deepprompt fetch-assets smollm2-135m-instruct
    .venv/bin/python benchmarks/decoder_qa.py --data wnut16 --steps 12 --batch 4 --micro 4 --dev 24 --seeds 42,43

Prints a table and writes docs/benchmarks/decoder_<data>.json and decoder_<data>.png.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _bench import REPO, print_table, save_plot, write_json

sys.path.insert(0, str(REPO))

METHODS = {  # name -> (overrides, lr)
    "prefix-P16": (["prompt.method=prefix", "prompt.length=16"], "2e-2"),
    "prefix-P64": (["prompt.method=prefix", "prompt.length=64"], "2e-2"),
    "prompt-P16": (["prompt.method=prompt", "prompt.length=16"], "3e-2"),
    "finetune": (["prompt.method=finetune"], "5e-5"),
}
NEW_TOKENS = 10
INSTRUCTION = ("List the named entities (people, places, companies, products, teams, shows ...) in this tweet, "
               "separated by ' ; '. Answer 'none' if there are none.\nTweet: {text}")


def wnut16_jsonl(root: Path) -> Path:
    """train/dev/test.jsonl of WNUT-16 as entity-list generation (the wnut16 task's split)."""
    from deepprompt.config import TaskConfig
    from deepprompt.tasks.ner import Wnut16

    root.mkdir(parents=True, exist_ok=True)
    reader = Wnut16.__new__(Wnut16)  # only its file reading and splitting; no tokenizer needed
    reader.cfg, reader._located = TaskConfig(name="wnut16"), set()
    for split in ("train", "dev", "test"):
        rows = []
        for s in reader.read_split(split):
            entities, current = [], []
            for word, tag in zip(s.words, s.tags):
                if tag.startswith("B-") or tag == "O" or (tag.startswith("I-") and not current):
                    if current:
                        entities.append(" ".join(current))
                    current = [word] if tag != "O" else []
                else:
                    current.append(word)
            if current:
                entities.append(" ".join(current))
            rows.append({"prompt": INSTRUCTION.format(text=" ".join(s.words)),
                         "response": " ; ".join(entities) if entities else "none"})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def entities(text: str) -> set[str]:
    """The entity set of an answer in the ``a ; b`` / ``none`` format (case and spacing ignored)."""
    items = {" ".join(e.lower().split()) for e in text.split(";")}
    return items - {"", "none"}


def entity_scores(predicted: list[str], gold: list[str]) -> dict:
    """Entity-level micro precision/recall/F1 over (tweet, entity) pairs, and exact match on the
    tweets that have an entity. Exact match over all tweets rewards answering ``none`` everywhere
    (about half the tweets have no entity); these do not."""
    tp = fp = fn = 0
    for p, g in zip(predicted, gold, strict=True):
        ps, gs = entities(p), entities(g)
        tp, fp, fn = tp + len(ps & gs), fp + len(ps - gs), fn + len(gs - ps)
    with_entity = [(p, g) for p, g in zip(predicted, gold) if entities(g)]
    precision = 100 * tp / (tp + fp) if tp + fp else 0.0
    recall = 100 * tp / (tp + fn) if tp + fn else 0.0
    return {"entity_precision": precision, "entity_recall": recall,
            "entity_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "exact_match_with_entity": 100 * sum(entities(p) == entities(g) for p, g in with_entity)
            / max(1, len(with_entity)), "tweets_with_entity": len(with_entity), "tweets": len(gold)}


def served_texts(artifact: Path, rows: dict[str, list[dict]]) -> dict[str, list[str]]:
    """What the saved artifact generates for each split's ``rows``' prompts, through the serving path
    (the backbone loaded once)."""
    from deepprompt.artifacts import load_artifact
    from deepprompt.engine.serving import build_server, predict

    server = build_server([load_artifact(artifact)])
    (name,) = server.tasks
    return {split: [r["text"] for r in predict(server, [{"task": name, "prompt": row["prompt"]} for row in part], 16)]
            for split, part in rows.items()}


def served_entity_scores(run_dir: Path, method: str, data_dir: Path, n: int, overrides: list[str],
                         eval_batch: int) -> dict:
    """entity_scores of the run's LAST model on the first ``n`` dev and test tweets (cached): its
    artifact through serving, or for finetune its last checkpoint's backbone."""
    cache = run_dir / "served_entities.json"
    if not cache.is_file():
        scores, splits = {}, ("dev", "test")
        rows = {split: first_rows(data_dir, split, n) for split in splits}
        texts = (served_texts(run_dir / "artifact", rows) if method != "finetune" else
                 plain_decoder_texts(overrides, eval_batch, splits, finetuned_state(run_dir))[0])
        for split in splits:
            scores.update({f"{split}_{k}": v
                           for k, v in entity_scores(texts[split], [r["response"] for r in rows[split]]).items()})
            scores[f"{split}_examples"] = texts[split][:5]
        cache.write_text(json.dumps(scores, indent=2))
    return {k: v for k, v in json.loads(cache.read_text()).items() if not k.endswith("_examples")}


def first_rows(data_dir: Path, split: str, n: int) -> list[dict]:
    return [json.loads(line) for line in (data_dir / f"{split}.jsonl").read_text().splitlines()[:n]]


def task_overrides(data: str, dev: int, data_dir: Path | None) -> list[str]:
    common = ["model.path=smollm2-135m-instruct", "task.use_chat_template=true", f"task.max_eval_examples={dev}",
              f"task.max_new_tokens={NEW_TOKENS}", "prompt.dropout=0.0"]
    if data == "squad":
        return common + ["task.name=squad_gen", "task.max_seq_length=256"]
    return common + ["task.name=generation", f"task.data_dir={data_dir}", "task.max_seq_length=128"]


def plain_decoder_texts(overrides: list[str], eval_batch: int, splits: tuple[str, ...],
                        backbone_state: dict | None = None) -> tuple[dict[str, list[str]], dict[str, dict], int]:
    """Greedy generations and task metrics per split (its first ``task.max_eval_examples``), and the
    backbone size, of the decoder with an empty prefix, loaded once: zero-shot, or with
    ``backbone_state`` the weights of a finetune run (whose artifact holds only heads, so serving
    cannot load it)."""
    import torch

    import deepprompt.models.backbones  # noqa: F401
    from deepprompt.config import PromptConfig, load_config
    from deepprompt.engine.generate import generate
    from deepprompt.models.backbones.decoder import DecoderAdapter
    from deepprompt.models.heads import LMHead
    from deepprompt.models.loading import load_tokenizer_and_config, resolve_model_path
    from deepprompt.models.prompted_model import PromptedModel
    from deepprompt.prompts.prefix import DeepPrefix
    from deepprompt.tasks import build_task

    run = load_config(None, overrides)
    path = resolve_model_path(run.model.path)
    tokenizer, _ = load_tokenizer_and_config(path)
    task = build_task(run.task, tokenizer)
    backbone = DecoderAdapter.load_model(path, torch.float32)
    if backbone_state is not None:
        missing, unexpected = backbone.load_state_dict(backbone_state, strict=False)
        tied = {"lm_head.weight"} if backbone.config.tie_word_embeddings else set()  # saved once, as the embedding
        assert not unexpected and set(missing) <= tied, (missing, unexpected)
    adapter = DecoderAdapter(backbone)
    spec = adapter.spec()
    model = PromptedModel(backbone, adapter, DeepPrefix(PromptConfig(method="prefix", length=0), spec),
                          {task.name: LMHead(spec.hidden)}).eval()
    texts, metrics = {}, {}
    for split in splits:
        feats, preds = task.features(split), []
        for i in range(0, len(feats), eval_batch):
            chunk = feats[i:i + eval_batch]
            preds += task.predict(generate(model, task.generation_prompts(chunk), task.name, sync=False,
                                           **task.generation_options()), chunk)
        texts[split], metrics[split] = [p["text"] for p in preds], task.metrics(preds, split)
    return texts, metrics, sum(p.numel() for p in backbone.parameters())


def zero_shot(overrides: list[str], eval_batch: int) -> dict:
    """The task's dev metrics with no training: the decoder with an empty prefix, same generation."""
    started = time.time()
    texts, metrics, total = plain_decoder_texts(overrides, eval_batch, ("dev",))
    return {"method": "zero-shot", "last": {f"dev_{k}": v for k, v in metrics["dev"].items()}, "trainable": 0,
            "trainable_percent": 0.0, "total": total, "eval_time_s": time.time() - started,
            "dev_texts": texts["dev"]}


def finetuned_state(run_dir: Path) -> dict:
    """The backbone weights of a finetune run's last checkpoint (``param/backbone.*``)."""
    from safetensors.torch import load_file

    from deepprompt.engine.checkpoint import TENSORS, find_latest

    tensors = load_file(str(find_latest(run_dir) / TENSORS))
    return {k[len("param/backbone."):]: v for k, v in tensors.items() if k.startswith("param/backbone.")}


def train_run(out: Path, overrides: list[str]) -> dict:
    if not (out / "results.json").is_file():
        cmd = [sys.executable, "launcher/train.py", "--ds_config", "ds_configs/zero3.json", *overrides,
               f"output_dir={out}"]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "TOKENIZERS_PARALLELISM": "false"}
        subprocess.run(cmd, cwd=REPO, check=True, env=env)
    return json.loads((out / "results.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("squad", "wnut16"), default="squad")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--dev", type=int, default=1000, help="dev examples scored (file order)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--seeds", default="42", help="comma-separated; each trained method runs once per seed")
    ap.add_argument("--methods", default="zero-shot," + ",".join(METHODS))
    ap.add_argument("--runs", default="runs/decoder_qa")
    args = ap.parse_args()
    runs = REPO / args.runs / args.data
    load = os.getloadavg()[0]  # recorded: other jobs on the machine slow s/step and tokens/s
    data_dir = wnut16_jsonl(runs / "data") if args.data == "wnut16" else None
    base = task_overrides(args.data, args.dev, data_dir)
    budget = [f"train.max_steps={args.steps}", f"train.batch_size={args.batch}", f"train.micro_batch_size={args.micro}",
              f"train.eval_batch_size={args.micro * 2}", "train.eval_every=0", "train.save_every=0",
              "train.warmup_ratio=0.06"]
    main_metrics = (("dev_exact_match", "dev_f1") if args.data == "squad" else
                    ("dev_exact_match", "dev_rougeL", "dev_entity_f1", "dev_exact_match_with_entity", "test_entity_f1"))
    seeds = [int(x) for x in args.seeds.split(",")]
    results = []
    for name in args.methods.split(","):
        if name == "zero-shot":  # deterministic (greedy, no training): one run
            cache = runs / f"zero-shot-dev{args.dev}.json"  # keyed by what it scored
            if not cache.is_file():
                cache.write_text(json.dumps(zero_shot(base, args.micro * 2), indent=2))
            zs = json.loads(cache.read_text())
            if data_dir is not None:
                gold = [r["response"] for r in first_rows(data_dir, "dev", args.dev)]
                zs["last"].update({f"dev_{k}": v for k, v in entity_scores(zs["dev_texts"], gold).items()})
            results.append({**zs, "examples": zs["dev_texts"][:5], "seeds": []})
            continue
        extra, lr = METHODS[name]
        per_seed = []
        for seed in seeds:
            out = runs / f"{name}-s{seed}-{args.steps}x{args.batch}-dev{args.dev}"
            r = train_run(out, base + budget + extra + [f"train.lr={lr}", f"train.seed={seed}"])
            (task, t), = r["tasks"].items()
            if data_dir is not None:  # entity-level scores of the LAST model
                t["last"].update(served_entity_scores(out, r["method"], data_dir, args.dev, base + extra,
                                                      args.micro * 2))
            per_seed.append({"seed": seed, "last": t["last"], "train_loss": r["train_loss"],
                             "step_time_s": r["throughput"]["step_time_s"],
                             "tokens_per_s": r["throughput"]["tokens_per_s"], "wall_time_s": r["wall_time_s"],
                             "trainable": r["params"]["trainable"], "trainable_percent": r["params"]["trainable_percent"],
                             "total": r["params"]["total"]})
        mean = {k: sum(p["last"][k] for p in per_seed) / len(per_seed) for k in per_seed[0]["last"]}
        spread = {k: (max(p["last"][k] for p in per_seed) - min(p["last"][k] for p in per_seed)) / 2
                  for k in per_seed[0]["last"]}
        results.append({"method": name, "last": mean, "half_range": spread, "seeds": per_seed,
                        "trainable": per_seed[0]["trainable"], "trainable_percent": per_seed[0]["trainable_percent"],
                        "total": per_seed[0]["total"],
                        "step_time_s": sum(p["step_time_s"] for p in per_seed) / len(per_seed),
                        "tokens_per_s": sum(p["tokens_per_s"] for p in per_seed) / len(per_seed)})
    rows = []
    for r in results:
        def cell(m):
            v = r["last"].get(m, float("nan"))
            return f"{v:.1f} ± {r['half_range'][m]:.1f}" if len(r["seeds"]) > 1 else f"{v:.1f}"
        rows.append((r["method"], *(cell(m) for m in main_metrics), f"{r['trainable']:,}",
                     f"{r['trainable_percent']:.3f}",
                     f"{r['step_time_s']:.2f}" if "step_time_s" in r else "-",
                     f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-"))
    print_table(("method", *main_metrics, "trainable", "trainable %", "s/step", "tokens/s"), rows)
    path = write_json(f"decoder_{args.data}.json", {
        "backbone": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantised to fp32)", "data": args.data,
        "protocol": {"steps": args.steps, "batch": args.batch, "micro_batch": args.micro, "dev_examples": args.dev,
                     "seeds": seeds, "decoding": f"greedy, max_new_tokens {NEW_TOKENS}, chat template",
                     "ranks": 1, "zero_stage": 3,
                     "device": f"CPU ({os.cpu_count()} cores, load average {load:.1f} at the start)",
                     "metric": "LAST checkpoint; ± = half the range over seeds"},
        "results": results})
    plotted = ("dev_exact_match", "dev_f1") if args.data == "squad" else ("dev_exact_match", "dev_entity_f1")

    def draw(ax):
        names = [r["method"] for r in results]
        width = 0.8 / len(plotted)
        for j, m in enumerate(plotted):
            ax.bar([i + (j - (len(plotted) - 1) / 2) * width for i in range(len(names))],
                   [r["last"].get(m, 0.0) for r in results], width, label=m,
                   yerr=[r.get("half_range", {}).get(m, 0.0) for r in results], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_ylabel("LAST checkpoint")
        ax.legend()
        ax.set_title(f"SmolLM2-135M-Instruct, {args.data}, {args.steps} steps x {args.batch}, {args.dev} dev")
    plot = save_plot(f"decoder_{args.data}.png", draw)
    print(f"wrote {path} and {plot}")


if __name__ == "__main__":
    main()
