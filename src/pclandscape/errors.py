"""Exceptions raised by pclandscape, each with a message that says what to do."""

from __future__ import annotations

__all__ = ["DivergenceError", "NotAtEquilibriumError", "DataNotFoundError", "DataError"]


class DivergenceError(FloatingPointError):
    """Inference or training produced non-finite values (NaN or inf).

    Attributes set where available: ``step`` (training step), ``history`` (the training
    history up to the last finite step) and ``net`` (the last finite network).
    """

    def __init__(self, message: str, *, step: int | None = None, history=None, net=None):
        super().__init__(message)
        self.step = step
        self.history = history
        self.net = net


class NotAtEquilibriumError(ValueError):
    """A formula that holds only at the inference equilibrium was asked for away from it."""


class DataNotFoundError(FileNotFoundError):
    """A data set's files are not on this machine and could not be downloaded; the message
    lists the files to place and where."""


class DataError(ValueError):
    """A data file exists but cannot be used: corrupt, truncated, of another format, not the
    data set it is named after (checksum or content), or unsafe (an archive member that is a
    link or leaves its folder). The message names the file and says what to do."""


INPUT_ERRORS = (DataNotFoundError, DivergenceError, NotAtEquilibriumError, ValueError)
"""What an experiment raises on bad input (a missing data set, a bad config value, a diverging
inference): the command line reports these as one line (exit 2), with no traceback."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name if it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
