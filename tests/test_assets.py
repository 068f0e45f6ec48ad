"""fetch-assets: which assets come by default, and how the SQuAD source archive is unpacked (pip is
replaced by a fake that leaves what the real one leaves: the archive, or only its unpacked copy)."""
import io
import tarfile
from pathlib import Path

import pytest

from deepprompt import assets
from deepprompt.errors import ConfigError

SHIFTS = "bigbench-1.0.0/bigbench/benchmark_tasks/squad_shifts/"
FILES = {SHIFTS + "nyt_v1.0.json": b'{"data": []}', SHIFTS + "squaddev_v1.1.json": b'{"version": "1.1"}',
         SHIFTS + "task.py": b"# not data", "bigbench-1.0.0/setup.py": b"", "bigbench-1.0.0/bigbench/other.json": b"{}"}


def fake_pip(leave_archive: bool):
    def run(cmd, env, **kw):
        dest = Path(cmd[cmd.index("--dest") + 1])
        assert "--no-deps" in cmd and ":all:" in cmd and cmd[-1] == "bigbench==1.0.0"
        if leave_archive:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tf:
                for name, data in FILES.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
            (dest / "bigbench-1.0.0.tar.gz").write_bytes(buf.getvalue())
        else:  # metadata refused: only the unpacked copy that --no-clean keeps in TMPDIR
            for name, data in FILES.items():
                path = Path(env["TMPDIR"]) / "pip-download-x1" / name.replace("bigbench-1.0.0", "bigbench_abc", 1)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    return run


@pytest.mark.parametrize("leave_archive", [True, False])
def test_squad_asset_keeps_only_the_squad_shifts_json(tmp_path, monkeypatch, leave_archive):
    monkeypatch.setenv("DEEPPROMPT_ASSETS", str(tmp_path))
    monkeypatch.setattr(assets.subprocess, "run", fake_pip(leave_archive))
    assets.fetch(["squad"], log=lambda msg: None)
    assert sorted(p.name for p in (tmp_path / "squad").iterdir()) == ["nyt_v1.0.json", "squaddev_v1.1.json"]
    assert (tmp_path / "squad" / "squaddev_v1.1.json").read_bytes() == b'{"version": "1.1"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["squad"]  # the 1.8 GB scratch copy is gone


def test_default_fetch_is_the_demo_assets_only(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPPROMPT_ASSETS", str(tmp_path))
    for name in ("all-minilm-l6-v2", "wnut16"):
        (tmp_path / name).mkdir()
    seen = []
    assets.fetch(log=seen.append)  # nothing to download: squad is not a default asset
    assert seen == [f"all-minilm-l6-v2: present at {tmp_path / 'all-minilm-l6-v2'}",
                    f"wnut16: present at {tmp_path / 'wnut16'}"]
    with pytest.raises(ConfigError, match="fetch-assets: unknown asset 'squadd'"):
        assets.fetch(["squadd"])
