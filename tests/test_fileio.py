"""Reading user files: a file that is not UTF-8, not readable or not whole is one line naming it."""
import gzip

import pytest
import torch
from safetensors.torch import save_file

from deepprompt import fileio
from deepprompt.fileio import load_json
from deepprompt.errors import ConfigError, DataError


def test_text_that_is_not_utf8_names_line_and_byte_offset_on_disk(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"\xef\xbb\xbfok\nstill ok\nna\xefve\n")  # a BOM, then Latin-1 on line 3
    with pytest.raises(DataError) as e:
        fileio.read_text(f)
    assert str(e.value) == f"{f}:3: not UTF-8 text (byte 0xef at byte offset 17); save it as UTF-8"
    with pytest.raises(ConfigError):  # config files raise the config kind of error
        fileio.read_text(f, ConfigError)


def test_bom_is_dropped_and_line_ends_are_those_of_a_file(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"\xef\xbb\xbfa\r\nb\n")
    assert fileio.read_text(f) == "a\r\nb\n"
    assert list(fileio.text_lines(f)) == ["a\n", "b\n"]
    assert list(fileio.text_lines(f, newline="")) == ["a\r\n", "b\n"]


def test_gzip_is_read_through(tmp_path):
    f = tmp_path / "a.words.gz"
    f.write_bytes(gzip.compress("w\u00f6rd\n".encode()))
    assert fileio.read_text(f) == "w\u00f6rd\n"
    f.write_bytes(gzip.compress(b"x" * 100)[:20])
    with pytest.raises(DataError, match=r"a.words.gz: not a readable gzip file"):
        fileio.read_text(f)


def test_missing_directory_and_unreadable(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"nope: file not found$"):
        fileio.read_text(tmp_path / "nope")
    with pytest.raises(DataError, match=r": is a directory, expected a file$"):
        fileio.read_text(tmp_path)
    f = tmp_path / "locked"
    f.write_text("x")

    def denied(self):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(type(f), "read_bytes", denied)  # (the tests run as root: chmod would not stop them)
    with pytest.raises(DataError, match=r"locked: cannot read it \(Permission denied\)$"):
        fileio.read_text(f)


def test_truncated_safetensors_names_the_file(tmp_path):
    f = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(100), "b": torch.ones(3)}, str(f))
    assert set(fileio.load_safetensors(f)) == {"a", "b"} and fileio.first_broken_safetensors(tmp_path) is None
    f.write_bytes(f.read_bytes()[:-50])
    with pytest.raises(ConfigError) as e:
        fileio.load_safetensors(f, ConfigError)
    assert str(e.value).startswith(f"{f}: not a readable safetensors file (incomplete metadata")
    assert "\n" not in str(e.value) and "copy or download it again" in str(e.value)
    assert fileio.first_broken_safetensors(tmp_path).startswith(f"{f}: not a readable")
    f.write_bytes(b"")
    with pytest.raises(DataError, match=r"w.safetensors: not a readable safetensors file \(header too small\)"):
        fileio.open_safetensors(f)


def test_a_whole_file_names_the_line_of_the_error(tmp_path):
    assert load_json('[1,\n 2]', "x.json") == [1, 2]
    with pytest.raises(DataError, match=r"^x\.json:2: not valid JSON \(Expecting value at column 4\)$"):
        load_json('[1,\n 2,]', "x.json")
    with pytest.raises(DataError, match=r"^x\.json: not valid JSON \(arrays/objects nested too deeply"):
        load_json("[" * 100_000, "x.json")
    with pytest.raises(DataError, match=r"^x\.json: not valid JSON \(opt.lr is -inf, not a finite number; write a "):
        load_json('{"opt": {"lr": -Infinity}}', "x.json")
    with pytest.raises(DataError, match=r"^x\.json: not valid JSON \(nan, not a finite number"):
        load_json("NaN", "x.json")
    assert load_json("[" * 900 + "1" + "]" * 900, "x.json") is not None  # deep but finite: the walk is no recursion
    assert load_json('{"loss": NaN}', "state.json", allow_nan=True)["loss"] != 0  # the package's own files (a diverged loss)


    with pytest.raises(DataError, match=r"^x\.json: not valid JSON \(key 'a' is given twice in one object: only the last would count\)$"):
        load_json('{"a": 1,\n "a": 2}', "x.json")
    with pytest.raises(DataError, match=r"^x\.jsonl:7: bad line \(key 'a' is given twice"):  # one line of a JSONL file
        load_json('{"a": 1, "a": 2}', "x.jsonl", line=7, what="bad line")
