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


@pytest.mark.parametrize("argv", [
    ["train.lr=0.5", "--config", "{cfg}", "train.seed=3"],  # overrides before and after a flag
    ["--config", "{cfg}", "train.lr=0.5", "--ds_config", "ds.json", "train.seed=3"],
])
def test_overrides_may_stand_between_the_flags(monkeypatch, tmp_path, argv):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("train:\n  max_steps: 5\n")
    seen = calls(monkeypatch, "deepprompt.engine.trainer", "train")
    argv = [a.format(cfg=cfg) for a in argv]
    main(["train", *argv])  # was: "unrecognized arguments: train.seed=3"
    monkeypatch.setattr(sys, "argv", ["launcher/train.py", *argv])
    commands.main("train")
    run = seen[0][0]
    assert len(seen) == 2 and seen[0] == seen[1] and (run.train.lr, run.train.seed, run.train.max_steps) == (0.5, 3, 5)


@pytest.mark.parametrize("argv, says", [
    (["train", "--config", "a.yaml", "--config", "b.yaml"],
     "argument --config: given twice (--config a.yaml, then --config b.yaml); give it once"),
    (["train", "--ds_config", "a.json", "--deepspeed", "b.json"],
     "given twice (--ds_config a.json, then --deepspeed b.json); give it once"),
    (["sweep", "--dir", "a", "--dir", "b"], "argument --dir: given twice"),
    (["predict", "--artifact", "a", "--input", "x", "--batch_size", "0"],
     "argument --batch_size: expected a positive integer, got '0'"),
])
def test_a_flag_that_would_be_silently_replaced_or_a_batch_of_zero_is_refused(monkeypatch, capsys, argv, says):
    ran = [calls(monkeypatch, m, f) for m, f in (("deepprompt.engine.trainer", "train"),
                                                 ("deepprompt.sweep.study", "run_sweep"),
                                                 ("deepprompt.engine.serving", "build_server"))]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and says in capsys.readouterr().err and ran == [[], [], []]


def test_unbalanced_deepspeed_args_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--space", "train.lr=uniform(0.1,0.2)", "--deepspeed-args", "--hostfile 'my hosts"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "deepprompt: error: --deepspeed-args \"--hostfile 'my hosts\": no closing quotation" in err
    assert "Traceback" not in err
