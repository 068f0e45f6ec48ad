"""Preemption and resume: SIGTERM saves and exits 75; re-running the same command continues exactly;
kill -9 loses only the work since the last save; a checkpoint resumes on another number of ranks."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from deepprompt.engine import checkpoint
from deepprompt.engine.signals import EXIT_PREEMPTED
from tests.tiny import FIXTURES, REPO, save_tiny, free_port, launch_env

VENV_BIN = os.path.dirname(sys.executable)
STEPS = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # no dropout anywhere, so runs on different world sizes can be compared value by value
    return save_tiny("bert", tmp_path_factory.mktemp("bert"), dropout=0.0)


def args(model, out, *extra):
    return [f"model.path={model}", f"task.data_dir={FIXTURES / 'wnut16'}", "prompt.length=4",
            "task.max_seq_length=32", f"train.max_steps={STEPS}", "train.batch_size=8", "train.micro_batch_size=4",
            "train.eval_every=0", "train.lr=3e-2", "train.save_every=3", "prompt.dropout=0.0",
            "task.head_dropout=0.0", f"output_dir={out}", *extra]


def command(model, out, ranks, *extra):
    script = ["launcher/train.py", "--ds_config", "ds_configs/zero3.json", *args(model, out, *extra)]
    if ranks == 1:
        return [sys.executable, *script]
    return [os.path.join(VENV_BIN, "deepspeed"), "--num_gpus", str(ranks), "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), *script]


def run(cmd, timeout=400):
    return subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=timeout)


def run_until_step(cmd, out, step, sig, timeout=300):
    """Start ``cmd``, send ``sig`` to its whole process group (as SLURM or a shell's job control do)
    once train_log.jsonl shows ``step``; return the exit code of ``cmd``."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    log = out / "train_log.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= step:
            os.killpg(proc.pid, sig)
            break
        time.sleep(0.05)
    output, _ = proc.communicate(timeout=120)
    return proc.returncode, output


def losses(out):
    return [json.loads(l)["loss"] for l in (out / "train_log.jsonl").read_text().splitlines()]


def final_state(out):
    return load_file(str(checkpoint.find_latest(out) / checkpoint.TENSORS))


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    proc = run(command(model_dir, out, 1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_sigterm_saves_exits_75_and_resume_is_bit_identical(model_dir, reference, tmp_path):
    out = tmp_path / "run"
    code, output = run_until_step(command(model_dir, out, 1), out, 5, signal.SIGTERM)
    assert code == EXIT_PREEMPTED, output[-3000:]
    stopped = int((out / "PREEMPTED").read_text())
    assert 5 <= stopped < STEPS and checkpoint.find_latest(out).name == f"step_{stopped:08d}"
    proc = run(command(model_dir, out, 1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["resumed_from"] == stopped and not (out / "PREEMPTED").exists()
    assert losses(out) == losses(reference)  # every step, before and after the resume, bit for bit
    ref, got = final_state(reference), final_state(out)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_kill_9_loses_only_work_since_the_last_save(model_dir, reference, tmp_path):
    out = tmp_path / "run"
    stop_at = random.randint(4, 13)  # any step, a save in progress included
    code, _ = run_until_step(command(model_dir, out, 1), out, stop_at, signal.SIGKILL)
    assert code == -signal.SIGKILL, f"kill -9 at step {stop_at}"
    saved = checkpoint.find_latest(out)
    assert saved is not None and int(saved.name.split("_")[1]) % 3 == 0  # a periodic save, complete
    proc = run(command(model_dir, out, 1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["resumed_from"] == int(saved.name.split("_")[1])
    assert losses(out) == losses(reference)
    ref, got = final_state(reference), final_state(out)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_a_partial_checkpoint_is_never_picked_up(tmp_path):
    from safetensors.torch import save_file

    root = tmp_path / checkpoint.CKPT_DIR
    (root / "step_00000003").mkdir(parents=True)
    save_file({"param/x": torch.zeros(2)}, str(root / "step_00000003" / checkpoint.TENSORS))
    (root / "step_00000003" / checkpoint.STATE).write_text('{"step": 3, "signature": {}}')
    (root / checkpoint.LATEST).write_text("step_00000003\n")
    (root / ".tmp-step_00000006").mkdir()  # killed while writing step 6
    (root / ".tmp-step_00000006" / checkpoint.TENSORS).write_text("partial")
    assert checkpoint.find_latest(tmp_path).name == "step_00000003"
    (root / checkpoint.LATEST).write_text("step_00000009\n")  # pointer to something incomplete: the newest whole one
    assert checkpoint.find_latest(tmp_path).name == "step_00000003"


def test_an_emptied_latest_and_a_truncated_checkpoint_resume_from_the_last_good_one(model_dir, reference, tmp_path):
    """Before: an unreadable or empty ``latest`` restarted at step 0 silently and pruned the old checkpoints."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    root = out / checkpoint.CKPT_DIR
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000015", "step_00000016"]
    (root / checkpoint.LATEST).write_text("")  # e.g. written on a full disk
    tensors = root / "step_00000016" / checkpoint.TENSORS
    tensors.write_bytes(tensors.read_bytes()[:-100])  # e.g. a copy cut short
    damaged = tensors.read_bytes()
    proc = run(command(model_dir, out, 1))
    assert proc.returncode == 0, proc.stderr[-3000:]
    warning = next(l for l in proc.stderr.splitlines() if "resume: " in l)
    assert f"{root / checkpoint.LATEST}: empty; {tensors}: not a readable safetensors file" in warning, warning
    assert warning.endswith(f"resuming from {root / 'step_00000015'}"), warning
    assert json.loads((out / "results.json").read_text())["resumed_from"] == 15
    assert losses(out) == losses(reference)
    ref, got = final_state(reference), final_state(out)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    # nothing lost: the checkpoint resumed from is kept, the damaged one is set aside byte for byte
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000015", "step_00000016",
                                                           "step_00000016.unreadable"]
    assert (root / "step_00000016.unreadable" / checkpoint.TENSORS).read_bytes() == damaged


def test_changed_config_is_refused_and_resume_never_starts_fresh(model_dir, reference, tmp_path):
    out = tmp_path / "run"
    code, _ = run_until_step(command(model_dir, out, 1), out, 4, signal.SIGTERM)
    assert code == EXIT_PREEMPTED
    proc = run(command(model_dir, out, 1, "prompt.length=8"), timeout=120)
    assert proc.returncode == 2
    assert "prompt.length (4 -> 8) changed since it was saved" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(command(model_dir, out, 1, "train.resume=never"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["resumed_from"] is None
    assert losses(out) == losses(reference)


@pytest.mark.multirank
def test_two_ranks_sigterm_through_the_launcher_then_resume_exactly(model_dir, tmp_path):
    ref = tmp_path / "ref"
    proc = run(command(model_dir, ref, 2))
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = tmp_path / "run"
    code, output = run_until_step(command(model_dir, out, 2), out, 5, signal.SIGTERM)
    assert (out / "PREEMPTED").exists(), output[-3000:]  # the ranks saved; the launcher itself exits 1
    proc = run(command(model_dir, out, 2))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert losses(out) == losses(ref)
    a, b = final_state(ref), final_state(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.multirank
def test_resume_on_a_different_number_of_ranks(model_dir, tmp_path):
    ref = tmp_path / "ref"
    assert run(command(model_dir, ref, 2)).returncode == 0
    out = tmp_path / "run"
    for ranks, stop_at in ((2, 5), (1, 10)):  # 2 -> 1 -> 2 ranks, same global batch of 8
        code, output = run_until_step(command(model_dir, out, ranks), out, stop_at, signal.SIGTERM)
        assert (out / "PREEMPTED").exists(), output[-3000:]
    proc = run(command(model_dir, out, 2))
    assert proc.returncode == 0, proc.stdout[-3000:]
    # the same examples at every step and the same fp32 state; only the order of floating-point
    # reductions differs between world sizes
    assert losses(out) == pytest.approx(losses(ref), rel=1e-4)
    a, b = final_state(ref), final_state(out)
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)


def test_a_train_log_line_torn_by_a_kill_does_not_stop_the_resume(tmp_path):
    from deepprompt.engine.run_log import TrainLog as _TrainLog

    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0, "lr": 0.1}\n{"step": 2, "loss": 1.5, "lr": 0.1}\n\n{"step": 3, "lo')
    _TrainLog(log, start_step=2, enabled=True)
    assert [json.loads(l)["step"] for l in log.read_text().splitlines()] == [1, 2]
