"""`first_line`: the one line of an error that raygan's messages quote, safe on an empty message."""

import pytest

from raygan.errors import UserError, first_line


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (OSError("bucket not found\ndetails: 404\n"), "bucket not found"),
        (ValueError("\n  \n  the reason  \nmore"), "the reason"),  # leading blank lines skipped, stripped
        ("first\nsecond", "first"),
    ],
)
def test_the_first_line_is_the_first_non_blank_one(given, expected):
    assert first_line(given) == expected


@pytest.mark.parametrize("error", [OSError(), RuntimeError(""), EOFError("\n \n")])
def test_an_exception_with_no_message_gives_its_type_name_instead_of_an_index_error(error):
    assert first_line(error) == type(error).__name__


def test_a_blank_text_gives_an_empty_line():
    assert first_line("") == "" and first_line("\n  \n") == ""


def test_a_subclass_keeps_its_own_name():
    assert first_line(UserError()) == "UserError"
