#!/usr/bin/env python
"""MultiEmo (bigbench ``multiemo/all_sentence_en``) as ``custom_classification`` files: reads the
``multiemo`` asset's task.json (``python -m deepprompt fetch-assets multiemo``), keeps a deterministic
sample (shuffled with random.Random(0), the first ``--examples``), splits it 80/10/10 in that order
and writes ``<out>/train.jsonl``, ``dev.jsonl``, ``test.jsonl`` with ``{"text", "label"}`` lines (the
label: the target with score 1). With ``task.folds`` a sweep pools the three and rotates them.

    .venv/bin/python benchmarks/prepare_multiemo.py [--examples 6000] [--out .assets/multiemo_cls]
"""
import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task-json", default=str(REPO / ".assets" / "multiemo" / "task.json"))
    ap.add_argument("--examples", type=int, default=6000, help="sample size (0 = all 57,466)")
    ap.add_argument("--out", default=str(REPO / ".assets" / "multiemo_cls"))
    args = ap.parse_args()
    path = Path(args.task_json)
    if not path.is_file():
        sys.exit(f"prepare_multiemo: {path} not found: python -m deepprompt fetch-assets multiemo")
    rows = []
    for i, ex in enumerate(json.loads(path.read_text(encoding="utf-8"))["examples"]):
        gold = [k for k, v in ex["target_scores"].items() if v == 1]
        if len(gold) != 1 or not ex["input"].strip():
            sys.exit(f"prepare_multiemo: {path}: example {i} has no single gold label or no text")
        rows.append({"text": ex["input"].strip(), "label": gold[0]})
    random.Random(0).shuffle(rows)
    rows = rows[:args.examples] if args.examples else rows
    n = len(rows) // 10
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, part in (("test", rows[:n]), ("dev", rows[n:2 * n]), ("train", rows[2 * n:])):
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part),
                                            encoding="utf-8")
        print(f"{out / (split + '.jsonl')}: {len(part)} examples, labels {dict(Counter(r['label'] for r in part))}")


if __name__ == "__main__":
    main()
