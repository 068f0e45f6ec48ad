"""Hostfile and .deepspeed_env checks: what DeepSpeed's runner would choke on or silently misuse is
one line naming file:line; ``python -m deepprompt check-hostfile`` prints what a good file holds."""
import subprocess
import sys

import pytest

from deepprompt.errors import ConfigError
from deepprompt.hostfile import _hostfile_arg, describe, launcher_hostfile, parse_env_file, parse_hostfile
from tests.tiny import REPO


def write(tmp_path, text, name="hostfile"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_hostfile(tmp_path):
    p = write(tmp_path, "# two nodes\nnode-001 slots=8\n\nnode-002 slots=4 max_slots=4  # short node\n")
    assert list(parse_hostfile(p).items()) == [("node-001", 8), ("node-002", 4)]


@pytest.mark.parametrize("text, message", [
    ("node-1 slots=2\nnode-2 gpus=2\n", ":2: expected '<hostname> slots=<ranks on that node>', got 'node-2 gpus=2'"),
    ("node-1 slots=2 extra\n", ":1: expected '<hostname> slots="),
    ("node-1 slots=0\n", ":1: node-1 has slots=0; a node needs at least 1 slot"),
    ("a slots=1\nb slots=1\na slots=2\n", ":3: a is listed twice (first on line 1)"),
    ("localhost slots=2\nnode-2 slots=2\n", ":1: localhost next to other hosts"),
    ("node-2 slots=2\nLocalHost slots=2\n", ":2: LocalHost next to other hosts"),
    ("Node-1 slots=1\nnode-2 slots=1\nnode-1 slots=2\n", ":3: node-1 is listed twice (first on line 1 as Node-1)"),
    ("# nothing\n\n", ": no hosts"),
])
def test_bad_hostfile_is_one_line_with_file_and_line(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        parse_hostfile(p)
    assert str(e.value).startswith(str(p)) and message in str(e.value) and "\n" not in str(e.value)


def test_missing_hostfile(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        parse_hostfile(tmp_path / "nope")


def test_env_file(tmp_path):
    p = write(tmp_path, "GLOO_SOCKET_IFNAME=eth0\nPYTHONPATH=/src/deepprompt\nHF_HOME=\n", ".deepspeed_env")
    assert parse_env_file(p) == {"GLOO_SOCKET_IFNAME": "eth0", "PYTHONPATH": "/src/deepprompt", "HF_HOME": ""}


@pytest.mark.parametrize("text, message", [
    ("A=1\n\nB=2\n", ":2: expected KEY=VALUE, got a blank line"),
    ("# interfaces\nA=1\n", ":1: expected KEY=VALUE, got a comment"),
    ("A=1\nexport B=2\n", ":2: expected KEY=VALUE, got 'export B=2'"),
    ("A=1\nB=2\nA = 3\n", ":3: A is set twice \\(first on line 1\\); keep one"),
])
def test_bad_env_file(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        parse_env_file(write(tmp_path, text, ".deepspeed_env"))


def test_shipped_examples_are_valid():
    assert list(parse_hostfile(REPO / "hostfile.example")) == ["localhost"]
    env = parse_env_file(REPO / "deepspeed_env.example")
    assert {"GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "PYTHONPATH", "HF_HOME"} <= set(env)


def test_check_hostfile_command(tmp_path):
    good = write(tmp_path, "node-a slots=2\nnode-b slots=2\n")
    env = write(tmp_path, "A=1\n", "envfile")
    cmd = [sys.executable, "-m", "deepprompt", "check-hostfile"]
    proc = subprocess.run([*cmd, str(good), "--env-file", str(env)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "2 node(s), 4 rank(s): node-a slots=2, node-b slots=2" in proc.stdout
    assert f"{env}: A" in proc.stdout
    bad = write(tmp_path, "node-a slots=x\n", "bad")
    proc = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and f"{bad}:1:" in proc.stderr


def test_hostfile_found_in_launcher_arguments():
    assert _hostfile_arg(["/v/bin/python", "/v/bin/deepspeed", "--hostfile", "h", "train.py"]) == "h"
    assert _hostfile_arg(["/v/bin/python", "/v/bin/deepspeed", "--hostfile=h2", "train.py"]) == "h2"
    assert _hostfile_arg(["mpirun", "-np", "2", "-hostfile", "h3", "python"]) == "h3"
    assert _hostfile_arg(["python", "train.py", "--hostfile", "x"]) is None  # not a launcher


def test_launcher_hostfile_of_this_process_tree(tmp_path):
    # a fake "deepspeed" runner (a script by that name) whose child asks for its launcher's hostfile
    hf = write(tmp_path, "node-a slots=1\n")
    runner = tmp_path / "deepspeed"
    runner.write_text("import subprocess, sys\nsys.exit(subprocess.call([sys.executable, '-c', "
                      "'from deepprompt.hostfile import launcher_hostfile; print(launcher_hostfile())']))\n")
    proc = subprocess.run([sys.executable, str(runner), "--hostfile", "hostfile"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert proc.stdout.strip() == str(hf), proc.stderr
    assert launcher_hostfile() is None  # pytest was not started by a launcher with a hostfile


def test_describe_lists_env_files(tmp_path):
    hf = write(tmp_path, "n1 slots=1\n")
    assert describe(hf, []) == f"{hf}: 1 node(s), 1 rank(s): n1 slots=1"


def test_hostfile_and_env_file_that_are_not_utf8_or_carry_a_bom_are_one_line(tmp_path):
    from deepprompt.hostfile import parse_env_file, parse_hostfile

    hf, env = tmp_path / "hostfile", tmp_path / ".deepspeed_env"
    hf.write_bytes(b"node-a slots=2\nn\xf6de-b slots=2\n")
    with pytest.raises(ConfigError, match=r"hostfile:2: not UTF-8 text \(byte 0xf6 at byte offset 16\); save it as UTF-8$"):
        parse_hostfile(hf)
    env.write_bytes(b"\xef\xbb\xbfNCCL_DEBUG=INFO\n")  # DeepSpeed's runner would read the key as '\ufeffNCCL_DEBUG'
    with pytest.raises(ConfigError, match=r"\.deepspeed_env:1: starts with a byte-order mark"):
        parse_env_file(env)
