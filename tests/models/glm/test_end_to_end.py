"""P-Tuning v2 on a tiny GLM through the real launcher: 2 ranks under ZeRO-3, WNUT-16 fixtures."""
import json
import os
import subprocess

import pytest

from tests.engine.test_end_to_end import VENV_BIN, common_args
from tests.tiny import free_port, launch_env
from tests.models.glm.tiny_glm import save_tiny_glm
from tests.tiny import REPO


@pytest.mark.multirank
def test_two_rank_zero3_prefix_run_on_glm(tmp_path):
    model_dir, model = save_tiny_glm(tmp_path / "glm", mp=2, initializer_range=0.2, hidden_dropout=0.1,
                                     attention_dropout=0.1)
    out = tmp_path / "run"
    cmd = [os.path.join(VENV_BIN, "deepspeed"), "--hostfile", "hostfile.example", "--no_ssh_check",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "launcher/train.py",
           "--ds_config", "ds_configs/zero3.json", *common_args(model_dir, out, steps=20)]
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    c = model.config
    assert r["world_size"] == 2 and r["steps"] == 20 and r["method"] == "prefix"
    p = r["params"]
    labels = 21  # WNUT-16: 10 entity types x B/I + O
    assert p["trainable"] == 4 * c.num_hidden_layers * 2 * c.hidden_size + (c.hidden_size + 1) * labels
    assert p["total"] - p["trainable"] == c.num_params()
    assert r["frozen_backbone"]["unchanged"] is True
    assert all(0.45 * c.num_params() <= n <= 0.55 * c.num_params() for n in p["frozen_numel_per_rank"])
    assert r["train_loss"]["last"] < r["train_loss"]["first"]
    assert {"dev_f1", "test_f1"} <= set(r["tasks"]["wnut16"]["last"])
    desc = json.loads((out / "artifact" / "prompts.json").read_text())
    assert desc["backbone"]["family"] == "glm" and desc["backbone"]["model_type"] == "glm-original"
