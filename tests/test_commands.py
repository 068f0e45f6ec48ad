"""``deepprompt train|evaluate|predict`` and ``launcher/*.py`` parse with the same parser and make
the same library call; ``--deepspeed`` and ``--deepspeed_config`` are ``--ds_config``."""
import sys

import pytest

from deepprompt import commands
from deepprompt.__main__ import main


@pytest.mark.parametrize("flag", commands.DS_CONFIG_FLAGS)
@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_ds_config_aliases(name, flag):
    extra = ["--artifact", "a"] if name == "evaluate" else []
    args = commands.parser(name).parse_args([*extra, flag, "my.json", "train.lr=1"])
    assert args.ds_config == "my.json" and args.overrides == ["train.lr=1"]


def calls(monkeypatch, module: str, function: str) -> list:
    seen = []
    monkeypatch.setattr(f"{module}.{function}", lambda *a: seen.append(a))
    return seen


def test_train_subcommand_and_launcher_make_the_same_call(monkeypatch):
    from deepprompt.config import load_config

    seen = calls(monkeypatch, "deepprompt.engine.trainer", "train")
    argv = ["--deepspeed_config", "ds.json", "--local_rank=0", "prompt.length=8"]
    main(["train", *argv])
    monkeypatch.setattr(sys, "argv", ["launcher/train.py", *argv])
    commands.main("train")  # what launcher/train.py runs
    assert len(seen) == 2 and seen[0] == seen[1] == (load_config(None, ["prompt.length=8"]), "ds.json")


def test_evaluate_subcommand_calls_evaluate_artifact(monkeypatch):
    seen = calls(monkeypatch, "deepprompt.engine.inference", "evaluate_artifact")
    main(["evaluate", "--artifact", "runs/x/artifact", "--deepspeed", "ds.json", "--splits", "dev", "output_dir=o"])
    assert seen == [("runs/x/artifact", "ds.json", ["output_dir=o"], ("dev",))]


def test_predict_subcommand_is_the_launchers(monkeypatch, tmp_path):
    seen = calls(monkeypatch, "deepprompt.engine.serving", "build_server")
    monkeypatch.setattr("deepprompt.artifacts.load_artifact", lambda path: f"loaded {path}")
    monkeypatch.setattr("deepprompt.engine.serving.predict", lambda server, rows, batch: [{"rows": rows, "batch": batch}])
    monkeypatch.setattr("deepprompt.engine.serving.read_jsonl", lambda path: f"rows of {path}")
    out = tmp_path / "out.jsonl"
    main(["predict", "--artifact", "a1", "--artifact", "a2", "--input", "in.jsonl", "--output", str(out),
          "--batch_size", "4"])
    import torch
    assert seen == [(["loaded a1", "loaded a2"], None, "cpu", torch.float32)]
    assert out.read_text() == '{"rows": "rows of in.jsonl", "batch": 4}\n'


def test_a_user_error_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "prompt.lenght=3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "deepprompt: error: prompt.lenght: unknown config key (did you mean prompt.length?)" in err
    assert "Traceback" not in err
