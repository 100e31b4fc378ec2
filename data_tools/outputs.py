"""The one check every data_tools output goes through before anything is written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from data_tools.errors import DataToolsError, OutputExistsError

__all__ = ["check_output"]

PathLike = str | os.PathLike


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _inside(child: Path, parent: Path) -> bool:
    """``child`` is strictly below the folder ``parent`` (paths resolved)."""
    child, parent = child.resolve(), parent.resolve()
    return child != parent and parent in child.parents


def check_output(
    out: PathLike,
    inputs: Iterable[PathLike] = (),
    *,
    force: bool = False,
    folder: bool = False,
    noun: str = "file",
    error: type[Exception] = DataToolsError,
    exists_error: type[Exception] = OutputExistsError,
    exists_hint: str = "",
) -> Path:
    """Refuse an output path that would destroy an input, is of the wrong kind, or exists.

    In this order, for each input ``src`` (a file or folder read by the command):

    * ``folder`` output that is ``src`` or holds it (replacing the folder would delete the
      input): "``<out>: the output folder would replace the input <src>; choose another -o``";
    * a file output that is ``src`` (same file, links resolved):
      "``<out>: is the input <noun> <src>; write the result to another path``";
    * an output inside the input folder ``src``:
      "``<out>: the output may not be inside the input <noun> <src>``".

    Then a file output (``folder`` False) that is a directory: "``<out>: is a directory,
    expected a file path``"; and an existing output (or dangling link) without ``force``:
    "``<out>: exists (pass force=True / --force to overwrite<exists_hint>)``", raised as
    ``exists_error`` (default :class:`~data_tools.errors.OutputExistsError`, which is both a
    ``DataToolsError`` and a ``FileExistsError``). The other refusals raise ``error``.
    Returns ``out`` as a :class:`~pathlib.Path`.
    """
    out = Path(out)
    for src in map(Path, inputs):
        if folder and (_same(out, src) or _inside(src, out)):
            raise error(f"{out}: the output folder would replace the input {src}; choose another -o")
        if _same(out, src):
            raise error(f"{out}: is the input {noun} {src}; write the result to another path")
        if _inside(out, src):
            raise error(f"{out}: the output may not be inside the input {noun} {src}")
    if not folder and out.is_dir():
        raise error(f"{out}: is a directory, expected a file path")
    if (out.exists() or out.is_symlink()) and not force:
        raise exists_error(f"{out}: exists (pass force=True / --force to overwrite{exists_hint})")
    return out
