"""Every error this package raises on purpose, in one place.

Errors about the user's input derive from :class:`InputError`: the CLI prints their one-line
message and exits with 2. :class:`NonFiniteLossError` is the CLI's exit 3.
"""


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


class CorruptFileError(InputError):
    """A saved round that cannot be read back."""


class OutputError(InputError):
    """The output directory cannot take what a run must write."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""
