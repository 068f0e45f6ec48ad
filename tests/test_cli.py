"""When a rank fails, what it prints names the rank and the host; a collective broken by another
rank's death is one line naming the rank that is gone (when it ran on this host)."""
import logging
import socket
import subprocess
import sys
import time

import pytest

from deepprompt import cli
from deepprompt.engine import world


def gloo_reset():
    return RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:64176: "
                        "Connection reset by peer. This is typically caused by a remote worker hanging. GLHF!")


def test_peer_loss_is_recognised():
    assert cli.is_peer_loss(gloo_reset())
    # a stopped (hung) peer: ZeRO-3's all-gather handle.wait() after train.dist_timeout_s, no source path
    assert cli.is_peer_loss(RuntimeError("Application timeout caused pair closure"))
    assert not cli.is_peer_loss(RuntimeError("shape mismatch"))
    assert not cli.is_peer_loss(ValueError("gloo/ in a value error is not a collective"))


def test_lost_peer_is_one_line_naming_the_dead_rank(monkeypatch, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    monkeypatch.setattr(world, "_PEERS", [world.Peer(0, host, 1, 0), world.Peer(1, host, dead.pid, 1)])
    monkeypatch.setattr(world.os, "getpid", lambda: 1)
    monkeypatch.setenv("RANK", "0")
    cli.setup_logging(0, tmp_path / "logs")
    try:
        try:
            raise gloo_reset()
        except RuntimeError as e:
            text = cli.failure_report(e, wait_s=0)
    finally:
        for h in list(logging.getLogger("deepprompt").handlers):
            if isinstance(h, logging.FileHandler):
                logging.getLogger("deepprompt").removeHandler(h)
                h.close()
    assert text.count("\n") == 1 and "Traceback" not in text
    assert text.startswith(f"deepprompt: rank 0@{host} lost contact with other ranks: RuntimeError: ")
    assert "Connection reset by peer." in text and "GLHF" not in text
    assert text.rstrip().endswith(f"gone: rank 1@{host} (pid {dead.pid}, exited)")
    log = (tmp_path / "logs" / "rank0.log").read_text()
    assert "Traceback" in log and f"rank0@{host}" in log  # the full story stays in the rank's own log


def test_a_bug_keeps_its_traceback_and_names_the_rank(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    try:
        raise KeyError("oops")
    except KeyError as e:
        text = cli.failure_report(e)
    assert "Traceback" in text and text.rstrip().endswith(f"deepprompt: rank 3@{socket.gethostname()} failed: "
                                                          f"KeyError: 'oops'")


def test_process_states():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert world.process_state(p.pid) == "running"
        p.kill()
        deadline = time.time() + 5
        while world.process_state(p.pid) != "exited" and time.time() < deadline:
            time.sleep(0.05)
        assert world.process_state(p.pid) == "exited"  # a zombie (not reaped yet) counts as exited
    finally:
        p.wait()
    assert world.process_state(p.pid) == "exited"


def test_layout_line():
    peers = [world.Peer(r, h, 100 + r, lr) for r, (h, lr) in enumerate([("a", 0), ("a", 1), ("b", 0), ("b", 1)])]
    assert world.layout(peers) == "2 node(s) x 2 rank(s): a [0-1], b [2-3]"
    uneven = peers[:3]
    assert world.layout(uneven) == "2 node(s) x 1-2 rank(s): a [0-1], b [2]"
