"""Multi-node launching on one machine (loopback only): two simulated nodes through the real
DeepSpeed launcher (``--no_ssh --node_rank``), Open MPI's mpirun with mpi4py discovery, a config that
differs between nodes, a SIGKILLed rank and a hung rank. The same 2-rank job gives the same losses
whichever way it was launched."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from tests.tiny import FIXTURES, REPO, save_tiny, free_port, launch_env

VENV_BIN = os.path.dirname(sys.executable)
DEEPSPEED = os.path.join(VENV_BIN, "deepspeed")
HOST = socket.gethostname()
pytestmark = pytest.mark.multirank


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny("bert", tmp_path_factory.mktemp("bert"), dropout=0.1)


def train_args(model, out, *extra, steps=8):
    return ["launcher/train.py", "--ds_config", "ds_configs/zero3.json", f"model.path={model}",
            f"task.data_dir={FIXTURES / 'wnut16'}", "prompt.length=4", "task.max_seq_length=32",
            f"train.max_steps={steps}", "train.batch_size=8", "train.micro_batch_size=4", "train.eval_every=0",
            "train.save_every=0", "train.lr=3e-2", f"output_dir={out}", *extra]


def losses(out):
    return [json.loads(l)["loss"] for l in (out / "train_log.jsonl").read_text().splitlines()]


def two_nodes(tmp_path, model, out, extra=((), ()), timeout=400):
    """Node 0 and node 1 of a 2-host hostfile, 1 rank each, each started by its own ``deepspeed
    --no_ssh --node_rank N`` (what a cluster without ssh runs on every node)."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=1\nnode-b slots=1\n")
    port = free_port()
    procs = [subprocess.Popen([DEEPSPEED, "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(n),
                               "--master_addr", "127.0.0.1", "--master_port", str(port),
                               *train_args(model, out, *extra[n])],
                              cwd=REPO, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for n in (0, 1)]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    return [p.returncode for p in procs], outputs


@pytest.fixture(scope="module")
def one_node_losses(model, tmp_path_factory):
    """The reference: one node, 2 local ranks."""
    out = tmp_path_factory.mktemp("one_node") / "run"
    proc = subprocess.run([DEEPSPEED, "--num_gpus", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                           *train_args(model, out)], cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return losses(out)


def test_two_simulated_nodes_match_one_node(model, tmp_path, one_node_losses):
    out = tmp_path / "run"
    codes, outputs = two_nodes(tmp_path, model, out)
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert losses(out) == pytest.approx(one_node_losses, rel=1e-6, abs=1e-7)
    r = json.loads((out / "results.json").read_text())
    assert r["world_size"] == 2 and len(r["params"]["frozen_numel_per_rank"]) == 2
    log0 = (out / "logs" / "rank0.log").read_text()
    assert "preflight ok on 2 rank(s)" in log0 and f"world 2 rank(s) = 1 node(s) x 2 rank(s): {HOST} [0-1]" in log0
    assert (out / "logs" / "rank1.log").is_file()


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI not installed (apt-get install openmpi-bin)")
def test_openmpi_mpirun_with_mpi4py_discovery(model, tmp_path, one_node_losses):
    pytest.importorskip("mpi4py")
    out = tmp_path / "run"
    cmd = ["mpirun", "--allow-run-as-root", "-np", "2", "--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include",
           "lo", "--mca", "oob_tcp_if_include", "lo", sys.executable, "-u", *train_args(model, out)]
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # no RANK/MASTER_* set: the ranks found each other from OMPI_COMM_WORLD_* and mpi4py (on loopback)
    assert losses(out) == pytest.approx(one_node_losses, rel=1e-6, abs=1e-7)
    assert "world 2 rank(s)" in (out / "logs" / "rank1.log").read_text()


def test_config_differing_between_nodes_stops_every_rank_with_one_line(model, tmp_path):
    out = tmp_path / "run"
    codes, outputs = two_nodes(tmp_path, model, out, extra=((), ("train.lr=2e-2",)), timeout=300)
    assert codes == [2, 2], outputs
    expected = (f"deepprompt: error: preflight: ranks disagree on the run config: rank 1@{HOST} differs from "
                f"rank 0@{HOST}: train.lr (0.03 vs 0.02)")
    for output in outputs:  # each node's console says it once, no traceback
        assert sum(l.startswith(expected) for l in output.splitlines()) == 1, output[-3000:]
        assert "Traceback" not in output
    assert not (out / "run_config.json").exists()  # nothing ran


def _rank_pid(launcher: subprocess.Popen, local_rank: int, timeout: float = 300) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in psutil.Process(launcher.pid).children(recursive=True):
            try:
                if f"--local_rank={local_rank}" in p.cmdline() and "launcher/train.py" in p.cmdline():
                    return p.pid
            except psutil.Error:
                pass
        time.sleep(0.2)
    raise AssertionError("rank process not found")


def _start_and_wait_for_steps(model, out, steps_seen, *extra):
    proc = subprocess.Popen([DEEPSPEED, "--num_gpus", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                             *train_args(model, out, *extra, steps=100_000)],
                            cwd=REPO, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log = out / "train_log.jsonl"
    deadline = time.time() + 300
    while not (log.is_file() and len(log.read_text().splitlines()) >= steps_seen):
        assert proc.poll() is None and time.time() < deadline, "training did not start"
        time.sleep(0.1)
    return proc


def test_a_killed_rank_ends_the_job_within_60_s_naming_it(model, tmp_path):
    out = tmp_path / "run"
    proc = _start_and_wait_for_steps(model, out, 3)
    try:
        victim = _rank_pid(proc, 1)
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        output = proc.communicate(timeout=90)[0]
        elapsed = time.time() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and elapsed < 60, (proc.returncode, elapsed)
    # the survivor's one line names itself and the rank that is gone
    line = next((l for l in output.splitlines() if "lost contact with other ranks" in l), output[-4000:])
    assert line.startswith(f"deepprompt: rank 0@{HOST}") and f"gone: rank 1@{HOST} (pid {victim}, exited)" in line, line
    assert "lost contact" in (out / "logs" / "rank0.log").read_text()


def test_a_hung_rank_ends_the_job_after_the_collective_timeout(model, tmp_path):
    """A stopped rank (a frozen node: no TCP reset) must not hang the others for torch's 30 min:
    train.dist_timeout_s bounds the wait, then the launcher ends everything."""
    out = tmp_path / "run"
    proc = _start_and_wait_for_steps(model, out, 3, "train.dist_timeout_s=8")
    try:
        victim = _rank_pid(proc, 1)
        os.kill(victim, signal.SIGSTOP)
        stopped = time.time()
        output = proc.communicate(timeout=120)[0]
        elapsed = time.time() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode != 0 and elapsed < 60, (proc.returncode, elapsed)
    line = next((l for l in output.splitlines() if "lost contact with other ranks" in l), output[-4000:])
    assert line.startswith(f"deepprompt: rank 0@{HOST}") and f"rank 1@{HOST} (pid {victim}, stopped)" in line, line
