"""Errors that mean "the user's input is wrong" (the CLI prints them as one line and exits 2), failures at
run time that the CLI prints as one line with exit 1, and `first_line`, the one line of any error that a
message quotes."""


class UserError(Exception):
    """Bad input (config, data, URI, arguments, checkpoint); message names the key or path."""


class ConfigError(UserError):
    """A config key has a bad value; `str()` is `<key>: <what is wrong>`."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


class RunFailure(Exception):
    """A run failed at run time for a reason one line says (a full disk, say); the CLI exits 1 with it."""


def first_line(exc_or_text: BaseException | str) -> str:
    """The first non-blank line of an exception's message or of a text, stripped: what a one-line error shows.
    An exception with no message gives its type's name (`first_line(OSError())` is "OSError"), a blank text ""."""
    text = str(exc_or_text)
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not line and isinstance(exc_or_text, BaseException):
        return type(exc_or_text).__name__
    return line
