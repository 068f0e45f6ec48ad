"""tweet_sentiment: the real classification corpus (one CSV) turned into splits that never share a
tweet, a deterministic sample, the confidence filter, and bad rows as one line naming file:line."""
import logging

import pytest

from deepprompt.config import TaskConfig, load_config
from deepprompt.engine.preflight import check_names
from deepprompt.errors import ConfigError, DataError
from deepprompt.tasks import build_task
from tests.tasks.word_tokenizer import bert_tokenizer
from tests.tiny import FIXTURES

HEADER = "sentiment,confidence,text\n"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return bert_tokenizer(tmp_path_factory.mktemp("tok"), "great flight my phone died new store".split())


def corpus(tmp_path, n=40, extra=()):
    """``n`` distinct tweets (label i % 3, confidence i / n) in the asset's format, then ``extra`` rows."""
    labels = ("negative", "neutral", "positive")
    rows = [f"{labels[i % 3]},{i / n:.4f},tweet number {i}\n" for i in range(n)]
    (tmp_path / "tweets.csv").write_text(HEADER + "".join(rows) + "".join(extra))
    return tmp_path


def splits(task):
    return {s: task.read_examples(s) for s in ("train", "dev", "test")}


def test_the_corpus_is_split_80_10_10_without_a_tweet_in_two_splits(tok, tmp_path, caplog):
    data = corpus(tmp_path, extra=[
        "negative,1,Tweet  NUMBER 3\n",  # a repeat (case, spacing) with the same label as tweet 3: kept once
        "negative,0.9,tweet number 7\n",  # tweet 7 is neutral: both copies dropped
    ])
    with caplog.at_level(logging.INFO, logger="deepprompt"):
        got = splits(build_task(TaskConfig(name="tweet_sentiment", data_dir=str(data)), tok))
    texts = {s: [r["text"] for r in rows] for s, rows in got.items()}
    assert [len(texts[s]) for s in ("train", "dev", "test")] == [31, 4, 4]  # 39 distinct, 10 % = 4
    every = texts["train"] + texts["dev"] + texts["test"]
    assert sorted(every) == sorted(f"tweet number {i}" for i in range(40) if i != 7)
    for rows in got.values():  # each split in the file's order, numbered from 0
        assert [r["id"] for r in rows] == list(range(len(rows)))
        assert [int(r["text"].split()[-1]) for r in rows] == sorted(int(r["text"].split()[-1]) for r in rows)
        assert all(r["label"] == ("negative", "neutral", "positive")[int(r["text"].split()[-1]) % 3] for r in rows)
    assert "42 rows; 1 repeats of a text dropped, and 2 rows whose copies disagree on the label; 39 tweets" in caplog.text
    # the same split on every read, and the same part of the file for any data_dir naming it
    again = splits(build_task(TaskConfig(name="tweet_sentiment", data_dir=str(data / "tweets.csv")), tok))
    assert again == got


def test_a_sample_is_deterministic_and_a_prefix_of_the_shuffle(tok, tmp_path):
    data = corpus(tmp_path, n=200)
    small = splits(build_task(TaskConfig(name="tweet_sentiment", data_dir=str(data), sample=50), tok))
    assert [len(small[s]) for s in ("train", "dev", "test")] == [40, 5, 5]
    twice = splits(build_task(TaskConfig(name="tweet_sentiment", data_dir=str(data), sample=50), tok))
    assert twice == small
    whole = splits(build_task(TaskConfig(name="tweet_sentiment", data_dir=str(data)), tok))
    assert {r["text"] for r in small["train"] + small["dev"] + small["test"]} < {
        r["text"] for r in whole["train"] + whole["dev"] + whole["test"]}
    with pytest.raises(ConfigError, match=r"^task.sample: 500 is more than the 200 distinct tweets of .*tweets.csv$"):
        build_task(TaskConfig(name="tweet_sentiment", data_dir=str(data), sample=500), tok).read_examples("train")


def test_min_confidence_drops_rows_below_it_and_keeps_unrated_ones(tok, tmp_path, caplog):
    data = corpus(tmp_path, n=40, extra=["positive,,an unrated tweet\n"])
    with caplog.at_level(logging.INFO, logger="deepprompt"):
        got = splits(build_task(TaskConfig(name="tweet_sentiment", data_dir=str(data), min_confidence=0.5), tok))
    kept = {r["text"] for rows in got.values() for r in rows}
    assert kept == {f"tweet number {i}" for i in range(20, 40)} | {"an unrated tweet"}
    assert "41 rows (20 below task.min_confidence=0.5 dropped)" in caplog.text
    assert "1 rows have no confidence and are kept" in caplog.text


def test_split_files_are_read_as_they_are(tok):
    task = build_task(TaskConfig(name="tweet_sentiment", data_dir=str(FIXTURES / "tweet_sentiment")), tok)
    assert task.labels == ["negative", "neutral", "positive"] and task.main_metric == "accuracy"
    got = splits(task)
    assert [len(got[s]) for s in ("train", "dev", "test")] == [6, 3, 3]
    assert got["train"][1]["text"] == "Loving the new update, battery lasts all day now!"  # a quoted comma
    assert [f["labels"] for f in task.features("dev")] == [2, 0, 1]


def test_min_confidence_on_split_files_says_what_it_dropped(tok, caplog):
    with caplog.at_level(logging.INFO, logger="deepprompt"):
        task = build_task(TaskConfig(name="tweet_sentiment", data_dir=str(FIXTURES / "tweet_sentiment"),
                                     min_confidence=0.7), tok)
        train = task.read_examples("train")
    assert [r["text"][:12] for r in train] == ["I just don't", "Loving the n", "@united than", "RT @news: Go"]
    assert "tweet_sentiment/train: 2 rows below task.min_confidence=0.7 dropped" in caplog.text


@pytest.mark.parametrize("row, says", [
    ("Positive,0.9,caps label\n", "unknown label 'Positive'"),
    ("positive,high,a word for a confidence\n", "confidence must be a number in [0, 1], got 'high'"),
    ("positive,1.5,too confident\n", "confidence must be a number in [0, 1], got '1.5'"),
    ("positive,nan,not a number\n", "confidence must be a number in [0, 1], got 'nan'"),
    ("positive,0.9,\n", "missing field 'text'"),
    ("positive,0.9,one,cell too many\n", "more cells than the 3 header columns"),
])
def test_a_bad_row_is_one_line_naming_file_and_line(tok, tmp_path, row, says):
    data = corpus(tmp_path, n=30, extra=[row])
    with pytest.raises(DataError) as e:
        splits(build_task(TaskConfig(name="tweet_sentiment", data_dir=str(data)), tok))
    assert str(e.value).startswith(f"{data / 'tweets.csv'}:32: ") and says in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override, says", [
    ("task.sample=5", "task.sample: must be >= 10"),
    ("task.min_confidence=1.2", r"task.min_confidence: must be in \[0, 1\], got 1.2"),
    ("task.confidence=0.5", r"task.confidence: unknown config key \(did you mean task.min_confidence\?\)"),
])
def test_bad_options_are_refused_at_start_up(override, says):
    with pytest.raises(ConfigError, match=says):
        check_names(load_config(None, ["task.name=tweet_sentiment", override]))
