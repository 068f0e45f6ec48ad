"""``--space`` parsing: every distribution, every mistake a one-line error naming the argument."""
import subprocess
import sys

import pytest

from deepprompt.config import load_config
from deepprompt.errors import ConfigError
from deepprompt.sweep.space import check_against, parse_dimension, parse_space
from tests.tiny import REPO, launch_env


def test_each_distribution_parses_and_makes_a_valid_override():
    lr, length, reparam, drop, layers = parse_space([
        "train.lr=loguniform(3e-3,1e-1)", "prompt.length=choice(16, 32,64)", "prompt.reparam=choice(false,true)",
        "prompt.dropout=uniform(0,0.3)", "prompt.reparam_hidden=intlog(64,1024)"])
    assert (lr.kind, lr.args) == ("loguniform", (3e-3, 1e-1))
    assert length.args == (16, 32, 64) and reparam.args == (False, True)
    assert parse_dimension("train.lr=choice(1e-2,1e-7)").args == (0.01, 1e-7)  # YAML 1.1 reads 1e-7 as a string
    assert drop.args == (0.0, 0.3) and layers.kind == "intlog" and layers.args == (64, 1024)
    cfg = load_config(None, [lr.override(0.02), reparam.override(True), length.override(32)])
    assert cfg.train.lr == 0.02 and cfg.prompt.reparam is True and cfg.prompt.length == 32
    check_against([lr, length, reparam, drop, layers], lambda extra: load_config(None, extra))


@pytest.mark.parametrize("text, says", [
    ("train.lr", "expected key=distribution(args)"),
    ("train.lr=logunif(1e-3,1e-1)", "unknown distribution 'logunif'"),
    ("train.lr=loguniform(1e-3)", "takes two numbers"),
    ("train.lr=loguniform(0,1e-1)", "needs low > 0"),
    ("train.lr=uniform(0.2,0.1)", "low must be < high"),
    ("train.lr=uniform(a,b)", "takes two numbers"),
    ("prompt.length=int(8,1e2)", "takes two integers"),
    ("prompt.length=choice()", "at least one value"),
    ("prompt.length=choice(16,16)", "listed twice"),
    ("prompt.length=choice(16,,32)", "empty argument"),
])
def test_bad_syntax_is_one_line_naming_the_argument(text, says):
    with pytest.raises(ConfigError) as e:
        parse_dimension(text)
    msg = str(e.value)
    assert msg.startswith(f"--space {text!r}: ") and says in msg and "\n" not in msg


def test_values_are_checked_against_the_run_config():
    load = lambda extra: load_config(None, extra)  # noqa: E731
    for text, says in (("prompt.lenght=choice(4,8)", "did you mean prompt.length"),
                       ("prompt.length=choice(4,many)", "expected int"),
                       ("prompt.dropout=uniform(0.5,1.5)", "prompt.dropout: must be in [0, 1)")):
        with pytest.raises(ConfigError, match=r"^--space .*is not a valid setting") as e:
            check_against(parse_space([text]), load)
        assert says in str(e.value)
    with pytest.raises(ConfigError, match="searched twice"):
        parse_space(["train.lr=uniform(0.1,0.2)", "train.lr=choice(0.1)"])


def test_the_command_prints_one_line_and_exits_2(tmp_path):
    out = subprocess.run([sys.executable, "-m", "deepprompt", "sweep", "--dir", str(tmp_path / "s"),
                          "--space", "train.lr=loguniform(1e-3,", "train.max_steps=10"],
                         cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=120)
    lines = [l for l in out.stderr.splitlines() if "[WARNING]" not in l]
    assert out.returncode == 2 and lines == ["deepprompt: error: --space 'train.lr=loguniform(1e-3,': expected "
                                             "key=distribution(args), e.g. train.lr=loguniform(3e-3,1e-1) or "
                                             "prompt.length=choice(16,32,64); distributions: loguniform, uniform, "
                                             "int, intlog, choice"], out.stderr
    assert not (tmp_path / "s").exists()  # refused before anything is written
