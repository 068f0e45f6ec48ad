"""Rank discovery: each launcher's variables give the same RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* that
torch.distributed reads; the first matching source (by priority) wins."""
import pytest

from deepprompt.engine import rank_env
from deepprompt.engine.rank_env import discover, expand_hostlist, tasks_on_node
from deepprompt.errors import ConfigError


def test_deepspeed_launcher_variables():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_SIZE": "2", "MASTER_ADDR": "10.0.0.1",
           "MASTER_PORT": "29511"}
    r = discover(env)
    assert (r.source, r.rank, r.world_size, r.local_rank, r.local_size, r.master_addr, r.master_port) == \
        ("launcher", 3, 4, 1, 2, "10.0.0.1", 29511)


def test_torchrun_local_world_size():
    r = discover({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                  "MASTER_ADDR": "h", "MASTER_PORT": "1234"})
    assert (r.local_size, r.master_addr) == (2, "h")


def test_openmpi_variables_with_exported_master():
    env = {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "MASTER_ADDR": "node1", "MASTER_PORT": "29600"}
    r = discover(env)
    assert (r.source, r.rank, r.world_size, r.local_rank, r.local_size, r.master_addr, r.master_port) == \
        ("openmpi", 5, 8, 1, 4, "node1", 29600)


def test_mpich_hydra_variables():
    env = {"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2",
           "MASTER_ADDR": "n0", "MASTER_PORT": "29700"}
    r = discover(env)
    assert (r.source, r.rank, r.world_size, r.local_rank, r.local_size) == ("mpich", 2, 4, 0, 2)


def test_single_node_mpi_without_master_needs_no_mpi4py(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mpi4py(name, *a, **kw):
        if name.startswith("mpi4py"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpi4py)
    base = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "OMPI_MCA_ess_base_jobid": "77"}
    r0 = discover({**base, "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_LOCAL_RANK": "0"})
    r1 = discover({**base, "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1"})
    assert r0.master_addr == r1.master_addr == "127.0.0.1"
    assert r0.master_port == r1.master_port and 20000 <= r0.master_port < 40000  # agreed without talking
    # several nodes and no way to agree on a master: one clear line
    with pytest.raises(ConfigError, match="span several nodes but MASTER_ADDR/MASTER_PORT are not set and mpi4py"):
        discover({**base, "OMPI_COMM_WORLD_LOCAL_SIZE": "1", "OMPI_COMM_WORLD_RANK": "1",
                  "OMPI_COMM_WORLD_LOCAL_RANK": "0"})


def test_slurm_srun_task():
    env = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2",
           "SLURM_STEP_TASKS_PER_NODE": "2(x4)", "SLURM_STEP_NODELIST": "gpu[007-010]", "SLURM_JOB_ID": "4242",
           "SLURM_STEP_ID": "0"}
    r = discover(env)
    assert (r.source, r.rank, r.world_size, r.local_rank, r.local_size, r.master_addr) == \
        ("slurm", 5, 8, 1, 2, "gpu007")
    # every task of the step derives the same port from the job and step ids
    assert discover({**env, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}).master_port == r.master_port
    assert discover({**env, "MASTER_PORT": "29555"}).master_port == 29555


def test_batch_script_itself_is_one_rank():
    # sbatch's script has SLURM_PROCID=0 and the job's task count, but no step: plain python = 1 rank
    r = discover({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "1", "SLURM_NODELIST": "n[1-2]"})
    assert (r.source, r.world_size) == ("single", 1)


def test_launcher_variables_win_over_slurm_and_mpi():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "a", "MASTER_PORT": "1",
           "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1", "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1"}
    assert discover(env).source == "launcher"


def test_plain_python_is_one_rank_on_loopback():
    r = discover({})
    assert (r.source, r.rank, r.world_size, r.master_addr) == ("single", 0, 1, "127.0.0.1") and r.master_port > 0


def test_inconsistent_variables_are_one_line():
    with pytest.raises(ConfigError, match="inconsistent rank variables: rank 4, world size 4"):
        discover({"RANK": "4", "WORLD_SIZE": "4", "MASTER_ADDR": "a", "MASTER_PORT": "1"})
    with pytest.raises(ConfigError, match="OMPI_COMM_WORLD_RANK='x' is not an integer"):
        discover({"OMPI_COMM_WORLD_RANK": "x", "OMPI_COMM_WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1",
                  "OMPI_COMM_WORLD_LOCAL_RANK": "0"})


def test_export_sets_what_torch_reads():
    env = {}
    rank_env.export(discover({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "7"}), env)
    assert env == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_SIZE": "2", "MASTER_ADDR": "h",
                   "MASTER_PORT": "7"}


@pytest.mark.parametrize("nodelist, hosts", [
    ("node1", ["node1"]),
    ("gpu[001-003,7],login-a", ["gpu001", "gpu002", "gpu003", "gpu7", "login-a"]),
    ("a[1-2]-ib,b", ["a1-ib", "a2-ib", "b"]),
    # two bracket groups in one name (the hand-written parser of old made 2 wrong names of this)
    ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
])
def test_slurm_hostlist_without_scontrol(nodelist, hosts, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the python-hostlist parser
    assert expand_hostlist(nodelist) == hosts


def test_scontrol_is_asked_first(monkeypatch, tmp_path):
    fake = tmp_path / "scontrol"  # SLURM's own answer wins, even where a parser would say otherwise
    fake.write_text("#!/bin/sh\necho from-scontrol-1\necho from-scontrol-2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert expand_hostlist("rack[1-2]-node[01-02]") == ["from-scontrol-1", "from-scontrol-2"]
    assert rank_env.first_host("anything") == "from-scontrol-1"


def test_a_bad_node_list_is_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match=r"cannot read the node list 'gpu\[1-2'"):
        expand_hostlist("gpu[1-2")


def test_tasks_per_node():
    assert [tasks_on_node("2(x3),1", i) for i in range(4)] == [2, 2, 2, 1]
    assert tasks_on_node("garbage", 0) is None


def test_sources_are_registered_by_name():
    assert {"launcher", "openmpi", "mpich", "slurm", "single"} <= set(rank_env.SOURCES.names())
