"""Exceptions and warnings raised by ``data_tools`` (the CLI turns errors into one
``error: ...`` line, exit 2, and warnings into ``warning: ...`` lines).

``hdf5_format.DatasetFormatError`` is deliberately *not* a subclass of :class:`DataToolsError`
(it is a ``ValueError`` of the dataset schema module); command-line front ends catch both.
"""

from __future__ import annotations

import os


class DataToolsError(Exception):
    """Base class of every error a data_tools library function raises on bad input."""


class OutputExistsError(DataToolsError, FileExistsError):
    """The output exists and ``force`` was not given (also a ``FileExistsError``)."""


class HubUnreachableError(DataToolsError):
    """The Hub cannot be used: offline mode is on, or it cannot be reached."""


class CurateError(DataToolsError):
    """Bad arguments or data for a curation command; the message names the file (and key)."""


class TeleopLogError(DataToolsError):
    """A teleoperation log that does not follow format version 1.

    The message always starts with the file, and the 1-based line when the error is about one
    line of a ``steps.jsonl``: ``"<path>:<line>: <what is wrong>"`` (or ``"<path>: <what>"``).
    ``path``, ``line`` and ``reason`` are kept as attributes for programs.
    """

    def __init__(self, path: str | os.PathLike, reason: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # keep the fields through pickling (process pools)
        return (type(self), (self.path, self.reason, self.line))


class DataToolsWarning(UserWarning):
    """Base class of the non-fatal surprises data_tools reports (printed as ``warning: ...``)."""


class CurateWarning(DataToolsWarning):
    """Something the user probably wants to know about, that does not stop the command."""


class TeleopLogWarning(DataToolsWarning):
    """A recoverable defect in a log (a truncated final line); the message names file and line."""
