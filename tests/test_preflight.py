"""Preflight: each bad case is one line that names what is wrong and where (rank and host)."""
import subprocess
import sys

import pytest

from deepprompt.config import load_config
from deepprompt.engine import preflight
from deepprompt.engine.preflight import RankReport, disagreement, first_problem
from deepprompt.errors import ConfigError
from deepprompt.models.loading import resolve_backbone
from tests.tiny import FIXTURES, REPO, save_tiny_bert, launch_env


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def report(rank, host, run=None, ds=None, problems=(), **fp):
    run = run if run is not None else {"train": {"lr": 0.01}, "output_dir": "runs/x"}
    ds = ds if ds is not None else {"zero_optimization": {"stage": 3}}
    base = {"code": "c0de", "git commit": "abc123", "libraries": "torch 2.13", "run config": preflight._digest(run),
            "ds config": preflight._digest(ds)}
    base.update(fp)
    return RankReport(f"rank {rank}@{host}", {k: v for k, v in base.items() if v is not None}, run, ds, list(problems))


def test_agreeing_ranks():
    assert disagreement([report(0, "a"), report(1, "a"), report(2, "b")]) is None


def test_code_mismatch_names_the_ranks_and_hosts():
    msg = disagreement([report(0, "a"), report(1, "a"), report(2, "b", code="beef"), report(3, "b", code="beef")])
    assert msg.startswith("preflight: ranks disagree on the code: rank 2@b, rank 3@b differ from rank 0@a: c0de vs beef")
    assert "\n" not in msg


def test_config_mismatch_names_the_first_key():
    other = {"train": {"lr": 0.02}, "output_dir": "runs/x"}
    msg = disagreement([report(0, "a"), report(1, "b", run=other)])
    assert "disagree on the run config: rank 1@b differs from rank 0@a: train.lr (0.01 vs 0.02)" in msg
    msg = disagreement([report(0, "a"), report(1, "b", ds={"zero_optimization": {"stage": 2}})])
    assert "disagree on the ds config" in msg and "zero_optimization.stage (3 vs 2)" in msg


def test_library_mismatch():
    msg = disagreement([report(0, "a"), report(1, "b", libraries="torch 2.12")])
    assert "disagree on the libraries: rank 1@b differs from rank 0@a: torch 2.13 vs torch 2.12" in msg


def test_git_commit_compared_only_where_known():
    # a node running an installed copy (no .git) with the same sources is fine
    assert disagreement([report(0, "a"), report(1, "b", **{"git commit": None})]) is None
    assert "git commit" in disagreement([report(0, "a"), report(1, "b", **{"git commit": "fff000"})])


def test_local_problem_names_the_host():
    msg = first_problem([report(0, "a"), report(1, "b", problems=["model.path: /m: cannot read x"]),
                         report(2, "c", problems=["model.path: /m: cannot read x"])])
    assert msg == "model.path: /m: cannot read x (on rank 1@b) (+1 more on other ranks)"


def test_source_digest_sees_every_change(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    before = preflight.source_digest(pkg)
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert preflight.source_digest(pkg) != before
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    assert preflight.source_digest(pkg) == before


def test_unreadable_model_weights(tiny_model, tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()
    for f in tiny_model.iterdir():
        (broken / f.name).symlink_to(f)
    (broken / "model.safetensors").unlink()
    (broken / "model.safetensors").symlink_to(tmp_path / "gone.safetensors")  # e.g. an unmounted share
    with pytest.raises(ConfigError, match=r"model.path: .*model: cannot read model.safetensors \(No such file"):
        preflight.check_model_path(str(broken))
    preflight.check_model_path(str(tiny_model))  # the good one passes


def test_trainable_estimate_matches_the_method_formula(tiny_model):
    from transformers import AutoModel

    run = load_config(None, [f"model.path={tiny_model}", "prompt.length=4"])
    est = preflight.estimate_trainable_numel(run, resolve_backbone(str(tiny_model)))
    heads = 2 * 32 * 64
    layers, hidden = 2, 32
    assert est - heads == 4 * layers * 2 * hidden  # P x layers x (key, value) x hidden
    ft = load_config(None, [f"model.path={tiny_model}", "prompt.method=finetune"])
    backbone = sum(p.numel() for p in AutoModel.from_pretrained(tiny_model).parameters())
    assert preflight.estimate_trainable_numel(ft, resolve_backbone(str(tiny_model))) - heads == backbone  # counted on meta


def test_disk_need_counts_kept_checkpoints():
    run = load_config(None, ["train.max_steps=1000", "train.save_every=100", "train.keep_checkpoints=2"])
    need, count = preflight.checkpoint_bytes_needed(run, 1000)
    # 2 kept + the best dev step's + 1 being written, 3 tensors each, + the last and best artifacts
    assert count == 4 and need == 1000 * 4 * (3 * 4 + 2)
    keep_all = load_config(None, ["train.max_steps=1000", "train.save_every=100", "train.keep_checkpoints=0"])
    assert preflight.checkpoint_bytes_needed(keep_all, 1000)[1] == 12
    by_epochs = load_config(None, ["train.max_steps=null", "train.epochs=3", "train.keep_checkpoints=2"])
    assert preflight.checkpoint_bytes_needed(by_epochs, 1000)[1] == 4  # steps unknown yet: as many as are kept


def test_not_enough_disk_is_one_line(tiny_model, tmp_path):
    run = load_config(None, [f"model.path={tiny_model}", f"output_dir={tmp_path / 'out'}", "train.disk_margin=1e12"])
    with pytest.raises(ConfigError) as e:
        preflight.check_disk(run, resolve_backbone(str(tiny_model)))
    msg = str(e.value)
    assert msg.startswith(f"output_dir: {tmp_path / 'out'} has ") and "train.disk_margin=0 to skip" in msg
    backbone = resolve_backbone(str(tiny_model))
    preflight.check_disk(load_config(None, [f"model.path={tiny_model}", f"output_dir={tmp_path}",
                                            "train.disk_margin=0"]), backbone)  # skipped: no error
    preflight.check_disk(load_config(None, [f"model.path={tiny_model}", f"output_dir={tmp_path}"]), backbone)  # fits


@pytest.mark.parametrize("override, message", [
    ("train.disk_margin=1e12", "has"),  # filled below with the output dir
    ("ds_config=missing.json", "--ds_config: file not found: missing.json (on rank 0@"),
])
def test_preflight_stops_the_run_before_any_weights_load(tiny_model, tmp_path, override, message):
    out = tmp_path / "run"
    ds = "ds_configs/zero3.json"
    args = [f"model.path={tiny_model}", f"task.data_dir={FIXTURES / 'wnut16'}", "train.max_steps=2",
            "train.batch_size=8", "train.micro_batch_size=4", "task.max_seq_length=32", f"output_dir={out}"]
    if override.startswith("ds_config="):
        ds = override.split("=", 1)[1]
    else:
        args.append(override)
    proc = subprocess.run([sys.executable, "launcher/train.py", "--ds_config", ds, *args], cwd=REPO, env=launch_env(),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith("deepprompt: error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "preflight ok" not in proc.stderr and not (out / "run_config.json").exists()
    assert "error:" in (out / "logs" / "rank0.log").read_text()  # the rank's own log says it too


def test_launcher_hostfile_is_checked_against_the_world(tmp_path, monkeypatch):
    import deepprompt.hostfile as hostfile

    hf = tmp_path / "hostfile"
    hf.write_text("node-a slots=1\nnode-b slots=1\n")
    monkeypatch.setattr(hostfile, "launcher_hostfile", lambda: hf)
    preflight.check_hostfile(2)
    with pytest.raises(ConfigError, match=r"hostfile: 2 slot\(s\) in all but the job has 4 ranks"):
        preflight.check_hostfile(4)
    hf.write_text("node-a slots=1\nnode-b slots=0\n")
    with pytest.raises(ConfigError, match=r"hostfile:2: node-b has slots=0"):
        preflight.check_hostfile(1)
    monkeypatch.setattr(hostfile, "launcher_hostfile", lambda: None)
    preflight.check_hostfile(64)  # no launcher hostfile visible on this node: nothing to check


# ------------------------------------------------------------------ bad input found before any weights load

def test_a_truncated_weight_file_is_named(tiny_model, tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()
    for f in tiny_model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes((broken / "model.safetensors").read_bytes()[:-64])
    with pytest.raises(ConfigError) as e:
        preflight.check_model_path(str(broken))
    assert str(e.value).startswith(f"model.path: {broken / 'model.safetensors'}: not a readable safetensors file "
                                   f"(incomplete metadata")


def test_a_model_path_that_is_a_file_says_so(tiny_model):
    with pytest.raises(ConfigError) as e:
        preflight.check_model_path(str(tiny_model / "config.json"))
    assert str(e.value).startswith(f"model.path: {tiny_model / 'config.json'} is a file; it must be a checkpoint "
                                   f"directory")


@pytest.mark.parametrize("method", ["finetune", "prefix", "prompt", "ptuning"])
def test_max_seq_length_beyond_the_positions_is_refused_for_every_method(tiny_model, method):
    # the tiny BERT has 64 positions
    fits = load_config(None, [f"model.path={tiny_model}", f"prompt.method={method}", "prompt.length=4",
                              "task.max_seq_length=60"])
    preflight.check_positions(fits, resolve_backbone(fits.model.path))
    too_long = load_config(None, [f"model.path={tiny_model}", f"prompt.method={method}", "prompt.length=4",
                                  "task.max_seq_length=65"])
    with pytest.raises(ConfigError) as e:
        preflight.check_positions(too_long, resolve_backbone(too_long.model.path))
    if method in ("prompt", "ptuning"):  # the prompt takes positions too
        assert str(e.value) == (f"prompt.length: 4 prompt tokens + task.max_seq_length 65 = 69 exceeds the backbone's "
                                f"64 positions (method {method!r} puts the prompt at the input)")
    else:
        assert str(e.value) == (f"task.max_seq_length: 65 exceeds the backbone's 64 positions ({tiny_model}); "
                                f"set it to at most 64")


def test_max_seq_length_is_checked_per_task_and_not_for_relative_positions(tiny_model, tmp_path):
    from tests.tiny import save_tiny

    multi = load_config(None, [f"model.path={tiny_model}", "task.max_seq_length=32",
                               "tasks=[{name: wnut16}, {name: rte, max_seq_length: 100}]"])
    with pytest.raises(ConfigError, match=r"^tasks\[1\].max_seq_length: 100 exceeds the backbone's 64 positions"):
        preflight.check_positions(multi, resolve_backbone(multi.model.path))
    deberta = save_tiny("deberta-v2", tmp_path / "deberta")  # relative positions: no table to overflow
    relative = load_config(None, [f"model.path={deberta}", "task.max_seq_length=1000"])
    preflight.check_positions(relative, resolve_backbone(str(deberta)))


def test_output_dir_under_a_regular_file_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError) as e:
        preflight.check_output_dir(str(tmp_path / "notes.txt" / "run"))
    assert str(e.value) == (f"output_dir: {tmp_path / 'notes.txt' / 'run'}: is under {tmp_path / 'notes.txt'}, a "
                            f"file, not a directory to write the run's output into; give another path")
    with pytest.raises(ConfigError, match=r"notes.txt: is a file, not a directory to write the run's output into; "
                                          r"give another path$"):
        preflight.check_output_dir(str(tmp_path / "notes.txt"))
    preflight.check_output_dir(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir()


@pytest.mark.parametrize("entry, make, says", [
    ("artifact", "file", "is a file, but the run writes a directory there"),
    ("checkpoints", "file", "is a file, but the run writes a directory there"),
    ("results.json", "dir", "is a directory, but the run writes a file there"),
])
def test_an_output_entry_of_the_other_kind_is_one_line_before_the_run(tmp_path, entry, make, says):
    """output_dir/artifact as a file failed only when the artifact was written, after all the
    training; the trainer names what it writes (trainer.OUTPUT_DIRS/OUTPUT_FILES) and it is checked first."""
    from deepprompt.engine.trainer import OUTPUT_DIRS, OUTPUT_FILES

    (tmp_path / entry).mkdir() if make == "dir" else (tmp_path / entry).write_text("mine")
    with pytest.raises(ConfigError, match=rf"^output_dir: {tmp_path / entry} {says}; move it away or choose another "
                                          r"output_dir$"):
        preflight.check_output_dir(str(tmp_path), dirs=OUTPUT_DIRS, files=OUTPUT_FILES)
    assert (tmp_path / entry).exists()  # left as it was

def test_a_ds_batch_number_taken_over_a_run_config_default_is_recorded(tiny_model, tmp_path):
    from deepprompt.engine import comm

    comm.init_distributed()
    ds = tmp_path / "ds.json"
    ds.write_text('{"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 3}}')
    run = load_config(None, [f"model.path={tiny_model}", f"output_dir={tmp_path / 'out'}", "task.max_seq_length=32"])
    preflight.run(run, str(ds))
    assert (run.train.batch_size, run.train.micro_batch_size) == (8, 4)  # what run_config.json will say
    clash = load_config(None, [f"model.path={tiny_model}", f"output_dir={tmp_path / 'out'}", "task.max_seq_length=32",
                               "train.batch_size=16"])
    with pytest.raises(ConfigError, match=r"train_batch_size 8 disagrees with train.batch_size 16 of the run config"):
        preflight.run(clash, str(ds))


@pytest.mark.parametrize("case", ["output_dir under a file", "max_seq_length", "model.path is a file"])
def test_bad_input_stops_the_launched_run_in_one_line(tiny_model, tmp_path, case):
    (tmp_path / "notes.txt").write_text("x")
    out = tmp_path / "notes.txt" / "run" if case == "output_dir under a file" else tmp_path / "run"
    model = tiny_model / "config.json" if case == "model.path is a file" else tiny_model
    args = [f"model.path={model}", f"task.data_dir={FIXTURES / 'wnut16'}", "train.max_steps=2", "train.batch_size=8",
            "train.micro_batch_size=4", f"output_dir={out}", "prompt.method=finetune",
            f"task.max_seq_length={100 if case == 'max_seq_length' else 32}"]
    proc = subprocess.run([sys.executable, "launcher/train.py", "--ds_config", "ds_configs/zero3.json", *args],
                          cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith("deepprompt: error:")]
    want = {"output_dir under a file": "output_dir: ", "max_seq_length": "task.max_seq_length: 100 exceeds the backbone's 64",
            "model.path is a file": "model.path: "}[case]
    assert len(lines) == 1 and lines[0].startswith(f"deepprompt: error: {want}"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
