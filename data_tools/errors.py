"""Exceptions raised by ``data_tools`` (the CLI turns them into one ``error: ...`` line, exit 2).

``hdf5_format.DatasetFormatError`` is deliberately *not* a subclass of :class:`DataToolsError`
(it is a ``ValueError`` of the dataset schema module); command-line front ends catch both.
"""

from __future__ import annotations

import os


class DataToolsError(Exception):
    """Base class of every error a data_tools library function raises on bad input."""


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
