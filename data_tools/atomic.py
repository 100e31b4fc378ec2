"""Atomic outputs: everything is written beside its destination and renamed over it when complete.

* :func:`atomic_write_bytes` / :func:`atomic_write_text` -- small files held in memory.
* :func:`atomic_path` -- a temporary path for code that writes the file itself (h5py, PIL, a
  checkpoint writer): renamed over the destination on success, removed on any exception.
* :func:`atomic_dir` -- the same for a whole output folder (the dataset exporters).

Temporary names are hidden and end in ``.tmp`` (``.<name>.<random>.tmp``), in the destination
folder, so the rename never crosses file systems and readers see the old output or the whole
new one, never a part. Files get the usual mode (``0666 & ~umask``), folders ``0777 & ~umask``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from data_tools.outputs import check_output

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_path", "atomic_dir"]


def _umask() -> int:
    umask = os.umask(0o22)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def _temporary_file(path: Path, suffix: str) -> Iterator[tuple[int, str]]:
    """Yield ``(fd, name)`` of a new hidden file beside ``path``; rename it over ``path`` on
    success, delete it on any exception. The caller owns (and must close) ``fd``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    try:
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual file mode
        except BaseException:
            os.close(fd)
            raise
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for code that must write the file itself.

    The temporary file exists (empty) in ``path``'s folder under a hidden name
    ``.<name>.<random>.tmp<suffix>``; give ``suffix`` (e.g. ``".gif"``, ``".ckpt"``) when the writer
    infers the format from the extension. When the ``with`` block completes, the file is renamed
    over ``path``; on any exception (Ctrl-C included) it is removed and ``path`` is untouched.
    Parent folders are created.

    Example::

        with atomic_path(out) as tmp:
            with h5py.File(tmp, "w") as f:
                ...
    """
    with _temporary_file(Path(path), suffix) as (fd, tmp):
        os.close(fd)
        yield Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never
    a part; on any failure the temporary file is removed and ``path`` is untouched.
    ``fsync``: flush the data to disk before the rename."""
    path = Path(path)
    with _temporary_file(path, "") as (fd, _):
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _occupied(path: Path) -> bool:
    return path.exists() or path.is_symlink()


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a fresh hidden folder beside ``out_dir``; when the block completes it replaces
    ``out_dir``, on any exception it is deleted (and an existing ``out_dir`` is kept).

    An existing ``out_dir`` (checked before and again after the block) is refused with
    :class:`~data_tools.errors.OutputExistsError` unless ``force``; with ``force`` it is moved
    aside, the new folder renamed in, and the old one deleted (restored if the rename fails).
    """
    out_dir = Path(out_dir)
    check_output(out_dir, force=force, folder=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the export is an ordinary folder
        check_output(out_dir, force=force, folder=True)
        if _occupied(out_dir):
            _swap_in(tmp, out_dir)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(new: Path, out_dir: Path) -> None:
    """Replace the existing ``out_dir`` (folder, file or link) by the folder ``new``."""
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out_dir, old)
    try:
        os.replace(new, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
