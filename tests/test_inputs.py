from scoring_lib.inputs import count_lines, read_lines
from scoring_lib.errors import InputFileError

import pytest


def rows(path, max_bytes=1 << 20):
    return [(l.number, l.text, l.status, l.error) for l in read_lines(path, max_bytes)]


def test_crlf_and_lf_endings_are_stripped_and_last_line_without_newline_counts(make_input):
    path = make_input(b"alpha\r\nbeta\ngamma")
    assert [(n, t) for n, t, _, _ in rows(path)] == [(1, "alpha"), (2, "beta"), (3, "gamma")]
    assert count_lines(path) == 3


def test_empty_and_whitespace_lines_are_not_sent(make_input):
    path = make_input(b"a\n\n   \n\t\r\n\xc2\xa0\nb\n")
    got = rows(path)
    assert [s for _, _, s, _ in got] == [None, "empty", "empty", "empty", "empty", None]
    assert [t for _, t, _, _ in got if t is not None] == ["a", "b"]


def test_invalid_utf8_is_an_error_row_and_reading_goes_on(make_input):
    got = rows(make_input(b"ok\n\xff\xfe broken\nstill ok\n"))
    assert got[1][2] == "error" and "UTF-8" in got[1][3] and got[1][1] is None
    assert got[2][1] == "still ok"


def test_too_long_lines_are_errors_and_the_limit_itself_is_accepted(make_input):
    path = make_input(b"x" * 10 + b"\n" + b"y" * 11 + b"\r\n" + b"z" * 10 + b"\r\n" + b"w" * 5000 + b"\nafter")
    got = rows(path, max_bytes=10)
    assert [s for _, _, s, _ in got] == [None, "error", None, "error", None]
    assert "longer than 10 bytes" in got[1][3]
    assert got[2][1] == "z" * 10 and got[4] == (5, "after", None, None)
    assert count_lines(path) == 5


def test_whitespace_inside_a_line_is_kept(make_input):
    assert rows(make_input(b"  padded text  \n"))[0][1] == "  padded text  "


def test_utf8_bom_is_not_part_of_the_first_line(make_input):
    assert rows(make_input("\ufeffhello\n".encode()))[0][1] == "hello"


def test_a_first_line_of_the_limit_after_a_bom_is_accepted(make_input):
    """The byte-order mark is not part of the text, so it does not count toward --max-line-bytes
    (Hypothesis found a BOM plus a line of exactly the limit refused as too long)."""
    path = make_input(b"\xef\xbb\xbf" + b"x" * 10 + b"\r\n" + b"\xef\xbb\xbf" + b"y" * 8 + b"\n")
    assert [(t, s) for _, t, s, _ in rows(path, max_bytes=10)] == [("x" * 10, None), (None, "error")]


def test_missing_and_directory_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        list(read_lines(tmp_path / "nope.txt", 100))
    with pytest.raises(InputFileError, match="directory"):
        list(read_lines(tmp_path, 100))


def test_empty_file_has_no_lines(make_input):
    path = make_input(b"")
    assert rows(path) == [] and count_lines(path) == 0
