"""Errors a user can cause. Each message names the cause and the fix.

Command-line entry points catch :class:`UserError`, print its message on one
line and exit with status 2, instead of showing a traceback.
"""


class UserError(ValueError):
    """A problem with the user's input: a file, a config, a flag or a request."""


class ConfigError(UserError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(UserError):
    """An input data file is missing, malformed, empty, or too small to use."""
