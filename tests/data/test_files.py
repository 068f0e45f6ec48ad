"""The shared readers of data files: every way the JSON parser fails is one line naming file:line."""
import pytest

from deepprompt.data.files import check_header, iter_jsonl
from deepprompt.errors import DataError

DEEP = "[" * 100_000  # json.loads raises RecursionError, not JSONDecodeError
HUGE = "9" * 5_000  # json.loads raises a plain ValueError (Python's 4300-digit limit on int())


@pytest.mark.parametrize("line, message", [
    ('{"text": "a", "label": ', r"malformed JSON line \(Expecting value at column 24\)$"),
    (DEEP, r"malformed JSON line \(arrays/objects nested too deeply to read\)$"),
    ('{"label": ' + HUGE + "}", r"malformed JSON line \(Exceeds the limit \(4300 digits\)"),
    ('{"text": "a", "label": NaN}', r"malformed JSON line \(label is nan, not a finite number; write a finite number, or null\)$"),
    ('{"spans": [[0, 1e400]]}', r"malformed JSON line \(spans\[0\]\[1\] is inf, not a finite number"),
])
def test_a_line_the_parser_refuses_is_one_line_naming_it(tmp_path, line, message):
    f = tmp_path / "train.jsonl"
    f.write_text('{"text": "ok"}\n\n' + line + "\n")
    with pytest.raises(DataError, match=f"^{f}:3: " + message) as e:
        list(iter_jsonl(f))
    assert "\n" not in str(e.value)


def test_a_header_naming_a_column_twice_is_refused():
    check_header(["text", "label", "", ""], "t.csv:1")  # spreadsheets' empty trailing columns may repeat
    with pytest.raises(DataError, match=r"^t\.csv:1: column 'text' appears twice in the header$"):
        check_header(["text", "label", "text"], "t.csv:1")
