"""The inputs of ``deepprompt predict``, fast (one process, a tiny backbone, no ranks): each bad input
file, flag or field is one line naming it; what is cut, or replaced, is logged with a count; line N
of the predictions answers line N of the input; the predictions file is written whole."""
from __future__ import annotations

import json
import logging

import pytest

from deepprompt.__main__ import main
from deepprompt.artifacts import load_artifact, save_artifact
from deepprompt.config import TaskConfig
from deepprompt.engine.serving import build_server, parse_device, predict, read_jsonl
from deepprompt.errors import ConfigError, DataError
from deepprompt.tasks import build_task
from tests.artifact_utils import plain_model, run_config
from tests.decoder_tiny import tiny_tokenizer
from tests.tiny import save_tiny_bert


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """wnut16 (task.max_seq_length=32) on the tiny BERT, untrained: only the plumbing is checked."""
    root = tmp_path_factory.mktemp("serving-inputs")
    path = save_tiny_bert(root / "bert")
    run = run_config(path)
    model, task = plain_model(run)
    return build_server([load_artifact(save_artifact(model, run, [task], str(path), root / "wnut16"))])


def write(tmp_path, text: str):
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    return path


def line(**fields) -> str:
    return json.dumps({"task": "wnut16", **fields}) + "\n"


def test_a_blank_line_between_objects_is_refused_it_would_shift_every_later_answer(tmp_path):
    with pytest.raises(DataError, match=r"in.jsonl:2: blank line; every line up to the last must be a JSON object"):
        read_jsonl(write(tmp_path, line(text="a") + "  \n" + line(text="b")))
    assert len(read_jsonl(write(tmp_path, line(text="a") + line(text="b") + "\n \n"))) == 2  # at the end: fine


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_an_input_without_any_object_is_refused(tmp_path, text):
    with pytest.raises(DataError, match=r"in.jsonl: no examples \(empty file\)$"):
        read_jsonl(write(tmp_path, text))


def test_an_input_that_is_a_directory_or_missing_names_the_flag(tmp_path):
    with pytest.raises(DataError, match=r"^--input: .* is a directory, expected a JSONL file$"):
        read_jsonl(tmp_path)
    with pytest.raises(DataError, match=r"^--input: .*nope.jsonl does not exist$"):
        read_jsonl(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("fields, says", [
    ({"text": "paris"}, r'in.jsonl:1: no "task" field \(served: wnut16\)'),
    ({"task": ["wnut16"], "text": "paris"}, r"in.jsonl:1: task \['wnut16'\] is not served"),  # was: a TypeError
    ({"task": "wnut16", "words": ["john"], "text": "paris london"},
     r'in.jsonl:1: task wnut16: give "words" or "text", not both'),  # was: the text ignored
])
def test_a_bad_record_is_one_line_naming_it(server, tmp_path, fields, says):
    with pytest.raises(DataError, match=says):
        predict(server, read_jsonl(write(tmp_path, json.dumps(fields) + "\n")))


def test_every_field_of_the_input_is_in_the_output_in_order(server, tmp_path):
    rows = read_jsonl(write(tmp_path, line(text="paris", _where="mine", id=1) + line(words=["john"], id=2)))
    out = predict(server, rows, batch_size=1)
    assert [(r["id"], r["_where"] if "_where" in r else None) for r in out] == [(1, "mine"), (2, None)]
    assert [r["words"] for r in out] == [["paris"], ["john"]] and all(len(r["tags"]) == len(r["words"]) for r in out)


def test_inputs_longer_than_max_seq_length_are_counted_in_the_log(server, tmp_path, caplog):
    rows = read_jsonl(write(tmp_path, line(text="paris") + line(text=" ".join(["paris"] * 60))))
    with caplog.at_level(logging.WARNING, logger="deepprompt"):
        out = predict(server, rows)
    assert len(out[1]["tags"]) == 60  # every word still gets a tag ...
    assert ("wnut16: 1 of 2 inputs are too long: their words past task.max_seq_length=32 tokens are tagged 'O' "
            "(first: ") in caplog.text and "in.jsonl:2)" in caplog.text  # ... and the log says so


def test_an_input_field_the_prediction_replaces_is_counted_in_the_log(server, tmp_path, caplog):
    rows = read_jsonl(write(tmp_path, line(text="paris", tags=["B-gold"]) + line(text="london")))
    with caplog.at_level(logging.WARNING, logger="deepprompt"):
        out = predict(server, rows)
    assert out[0]["tags"] != ["B-gold"]
    assert "1 of 2 inputs have a field 'tags', where the prediction goes" in caplog.text and "in.jsonl:1" in caplog.text


def test_generation_from_an_empty_prompt_is_one_line_and_a_cut_prompt_is_known(tmp_path):
    task = build_task(TaskConfig(name="generation", data_dir=str(tmp_path), max_seq_length=8), tiny_tokenizer())
    with pytest.raises(DataError, match=r"^in.jsonl:3: task generation: the prompt is empty \(no tokens\)"):
        task.raw_features({"prompt": ""}, "in.jsonl:3")  # was: a reshape RuntimeError inside the backbone
    (short,), (long,) = task.raw_features({"prompt": "a b"}), task.raw_features({"prompt": " ".join(["a"] * 20)})
    assert (task.input_cut(short), task.input_cut(long)) == (False, True)


def test_a_question_cut_to_max_query_length_is_known(server):
    tokenizer = server.tasks["wnut16"].tokenizer
    task = build_task(TaskConfig(name="squad", max_seq_length=48, options={"max_query_length": 8, "doc_stride": 8}),
                      tokenizer)
    short = task.raw_features({"question": "paris ?", "context": "john loves paris"})
    long = task.raw_features({"question": " ".join(["paris"] * 20), "context": "john loves paris"})
    assert [task.input_cut(f) for f in short + long] == [False] * len(short) + [True] + [False] * (len(long) - 1)


@pytest.mark.parametrize("name, says", [
    ("gpu", r"^--device: 'gpu' is not a device name \(cpu, cuda, cuda:1, ...\)$"),
    ("cuda:99", r"^--device: cuda:99 is not here \(\d+ CUDA device\(s\) visible\)$"),
])
def test_a_device_that_is_not_there_is_one_line(name, says):
    with pytest.raises(ConfigError, match=says):
        parse_device(name)


@pytest.fixture
def no_model(monkeypatch):
    """``deepprompt predict`` with the backbone and the prediction stubbed out: the calls made."""
    built = []
    monkeypatch.setattr("deepprompt.engine.serving.build_server", lambda *a: built.append(a))
    monkeypatch.setattr("deepprompt.artifacts.load_artifact", lambda path: path)
    monkeypatch.setattr("deepprompt.engine.serving.predict", lambda server, rows, batch: [dict(r) for r in rows])
    return built


def test_an_output_that_is_a_directory_or_under_a_file_is_one_line_before_the_model_loads(no_model, tmp_path,
                                                                                          capsys):
    src = write(tmp_path, line(text="paris"))
    (tmp_path / "afile").write_text("x")
    for output, says in ((tmp_path, "is a directory; give the path of the predictions file"),
                         (tmp_path / "afile" / "out.jsonl",
                          "afile: is a file, not a directory to write the predictions")):
        with pytest.raises(SystemExit) as e:
            main(["predict", "--artifact", "a", "--input", str(src), "--output", str(output)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and "Traceback" not in err  # was: IsADirectoryError and its traceback
    assert no_model == []


def test_the_predictions_are_written_whole_into_a_new_directory(no_model, tmp_path):
    src = write(tmp_path, line(text="paris") + line(text="london"))
    out = tmp_path / "new" / "preds.jsonl"
    main(["predict", "--artifact", "a", "--input", str(src), "--output", str(out)])
    assert [json.loads(r)["text"] for r in out.read_text().splitlines()] == ["paris", "london"]
    assert [p.name for p in out.parent.iterdir()] == ["preds.jsonl"]  # no temporary file left beside it
