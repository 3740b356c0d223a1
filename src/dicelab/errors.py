"""Errors that the CLI turns into one-line messages.

Every error raised for bad user input derives from :class:`DicelabError`; the CLI prints
``error: <message>`` on one line and exits with :attr:`DicelabError.exit_code` (2 for usage errors).
"""


class DicelabError(Exception):
    """Bad input or an unusable environment, reported to the user in one line."""

    exit_code = 1


class ConfigError(DicelabError, ValueError):
    """A config file, field or override is wrong. The message names the field."""

    exit_code = 2


class DatasetError(DicelabError):
    """A dataset is unknown, missing or corrupt. The message names the dataset or file."""

    exit_code = 2
