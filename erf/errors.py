"""User-facing errors: one line that says what is wrong and how to fix it.

The CLI prints ``erf: error: <message>`` for any ``ErfError`` and exits with code 2.
"""


class ErfError(Exception):
    """Base class for every error caused by bad input (model, size, config, file)."""


class ModelError(ErfError):
    """A model spec, factory, checkpoint or layer name that cannot be used."""


class TraceError(ErfError):
    """The forward pass could not be followed to compute a receptive field."""


class UnsupportedOpError(TraceError):
    """An op whose receptive-field rule is unknown (opt in with ``treat_as``)."""


class AlignmentError(TraceError):
    """Paths into a node disagree on jump or centre: the RF is not well defined."""


class ConfigError(ErfError):
    """An experiment config that is malformed or has bad keys or values."""


class TraceInvariantError(TraceError):
    """Internal: a traced row's boxes reach further than the ops before it allow (a bug in erf's rules)."""
