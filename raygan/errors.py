"""Errors that mean "the user's input is wrong": the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad input (config, data, URI, arguments, checkpoint); message names the key or path."""


class ConfigError(UserError):
    """A config key has a bad value; `str()` is `<key>: <what is wrong>`."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
