#!/usr/bin/env python
"""Predict from raw JSONL with one or several prompt artifacts (``deepprompt predict`` is the same command).

    python launcher/predict.py --artifact runs/ner/artifact [--artifact ...] --input in.jsonl [--output out.jsonl]

Arguments and their parser: ``deepprompt/commands.py``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepprompt.cli import run_user_errors  # noqa: E402
from deepprompt.commands import main  # noqa: E402

if __name__ == "__main__":
    run_user_errors(lambda: main("predict"))
