"""Errors about the user's input: the CLI prints their one-line message and exits with 2."""


class InputError(ValueError):
    """Bad input that no amount of computing fixes; the message says what is accepted."""


class ConfigError(InputError):
    """A configuration value outside what the method accepts."""


class UnknownModelError(InputError):
    """No model of that name in this package or in RecBole."""


class UnknownDatasetError(InputError):
    """Neither atomic files in data_path nor a bundled dataset of that name."""


class DatasetFormatError(InputError):
    """A dataset file that cannot be read; the message names file and line."""
