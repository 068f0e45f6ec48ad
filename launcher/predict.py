#!/usr/bin/env python
"""Predict from raw text with one or several prompt artifacts made on the same backbone.

    python launcher/predict.py --artifact runs/ner/artifact [--artifact runs/other/artifact ...] \
        --input in.jsonl [--output out.jsonl] [--batch_size 32] [--device cpu] [--model_path DIR]

Each input line is {"task": "<task name>", "text": "..."} or {"task": ..., "words": [...]} (QA:
{"task": "squad", "question": ..., "context": ...}); each output line is that object plus the
prediction (token tasks: "words" and one tag per word in "tags"; QA: "answer", "answer_start",
"score"). Batches mix tasks: one backbone forward serves every artifact. One process, no DeepSpeed.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepprompt.cli import run_user_errors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", action="append", required=True, help="artifact directory (repeatable)")
    parser.add_argument("--input", required=True, help="JSONL: one {\"task\", \"text\" | \"words\"} per line")
    parser.add_argument("--output", default="-", help="JSONL predictions (default: stdout)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--model_path", default=None, help="the backbone, if it moved since training")
    args = parser.parse_args()

    import torch

    from deepprompt.artifacts import load_artifact
    from deepprompt.cli import setup_logging
    from deepprompt.engine.serving import build_server, predict, read_jsonl

    setup_logging(0)

    server = build_server([load_artifact(a) for a in args.artifact], args.model_path, args.device,
                          getattr(torch, args.dtype))
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in predict(server, read_jsonl(args.input), args.batch_size)]
    if args.output == "-":
        sys.stdout.writelines(lines)
    else:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.writelines(lines)


if __name__ == "__main__":
    run_user_errors(main)
