"""Execute a notebook with parameters and keep its outputs (papermill-style, on nbclient alone).

    python notebooks/execute.py NOTEBOOK.ipynb [KEY=VALUE ...] (--out OUT.ipynb | --out DIR | --in-place) [--timeout S]

The notebook's first code cell, tagged ``parameters``, holds the defaults and is never edited. The ``KEY=VALUE``
pairs go into a cell of their own right after it, tagged ``injected-parameters`` (as papermill does), which
replaces the one an earlier execution left there; so a notebook committed after a real run keeps its defaults and
shows what that run changed, and executing it again with other parameters starts from the defaults, not from the
last run's values. VALUE is read as a Python literal (``SEEDS=[0,1,2]``, ``TINY=True``, ``TRIALS=25``) and
otherwise taken as a string (``RUN_ROOT=checkpoints/ablations``). A KEY that the parameters cell does not assign
is an error (a typo would otherwise be ignored). The notebook runs with its own folder as the working directory (as in Jupyter) on
the ``python3`` kernel of the Python running this script; the executed notebook, outputs included, is written to
``--out`` (a file, or a folder to write ``NOTEBOOK``'s name into) or, with ``--in-place``, over NOTEBOOK (how the
committed notebooks get their outputs), also when a cell fails (then the exit status is 1 and the error is
printed). One of the two must be given: without it nothing runs, so a committed notebook is never overwritten by
accident.
``--timeout`` limits each cell (default: none). ``tests/test_notebooks.py`` runs the notebooks through
:func:`execute`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any, Mapping

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

KERNEL = "python3"


def parse_value(text: str) -> Any:
    """A Python literal, or the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The first code cell, which must be tagged ``parameters``."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or "parameters" not in code[0].get("metadata", {}).get("tags", []):
        raise ValueError("the notebook's first code cell must be tagged 'parameters'")
    return code[0]


INJECTED = "injected-parameters"


def inject(nb: nbformat.NotebookNode, params: Mapping[str, Any]) -> nbformat.NotebookNode:
    """Drop any earlier ``injected-parameters`` cell; with ``params``, put one assigning ``KEY = repr(value)`` right
    after the parameters cell."""
    cell = parameters_cell(nb)
    names = set()
    for node in ast.parse(cell.source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    unknown = sorted(set(params) - names)
    if unknown:
        raise KeyError(f"not parameters of this notebook: {unknown} (it has {sorted(names)})")
    nb.cells = [c for c in nb.cells if INJECTED not in c.get("metadata", {}).get("tags", [])]
    if params:
        src = "# Parameters injected by notebooks/execute.py (the defaults are in the cell above)\n"
        src += "\n".join(f"{key} = {value!r}" for key, value in params.items())
        new = nbformat.v4.new_code_cell(src, metadata={"tags": [INJECTED]})
        if "id" in new:
            new.id = INJECTED
        nb.cells.insert(nb.cells.index(cell) + 1, new)
    return nb


def destination(notebook: str | Path, out: str | Path | None, in_place: bool) -> Path:
    """Where the executed notebook goes: ``out`` (a folder: ``out/<notebook's name>``) or, with ``in_place``,
    ``notebook`` itself. Raises ValueError unless exactly one of them is given."""
    notebook = Path(notebook)
    if out is not None and in_place:
        raise ValueError("--out and --in-place exclude each other")
    if out is None and not in_place:
        raise ValueError(f"{notebook}: say where the executed notebook goes: --out OUT.ipynb (or a folder), or "
                         "--in-place to write its outputs into it")
    if in_place:
        return notebook
    out = Path(out)
    return out / notebook.name if out.is_dir() else out


def execute(notebook: str | Path, params: Mapping[str, Any] | None = None, out: str | Path | None = None,
            timeout: int | None = None, in_place: bool = False) -> nbformat.NotebookNode:
    """Run ``notebook`` with ``params`` injected; write it with its outputs to ``out`` (a file or a folder) or, with
    ``in_place=True``, over ``notebook`` (one of the two is required) and return it. A failing cell raises
    :class:`nbclient.exceptions.CellExecutionError` after the write."""
    notebook = Path(notebook)
    out = destination(notebook, out, in_place)
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: no such folder {out.parent}")
    nb = inject(nbformat.read(notebook, as_version=4), params or {})
    client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, allow_errors=False,
                            resources={"metadata": {"path": str(notebook.resolve().parent)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, out)
    return nb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebook", type=Path)
    p.add_argument("params", nargs="*", metavar="KEY=VALUE", help="parameters (Python literals, else strings)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=None,
                       help="write the executed notebook here (a file, or a folder to write it into)")
    where.add_argument("--in-place", action="store_true",
                       help="write the outputs into NOTEBOOK itself (how the committed notebooks are made)")
    p.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: no limit)")
    a = p.parse_args(argv)
    params = {}
    for item in a.params:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            p.error(f"expected KEY=VALUE, got {item!r}")
        params[key] = parse_value(value)
    try:
        out = destination(a.notebook, a.out, a.in_place)
        execute(a.notebook, params, out, a.timeout)
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except OSError as e:  # a notebook that is not there, an unwritable output
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CellExecutionError as e:
        print(f"error: a cell failed; the notebook with its outputs is in {out}\n{e}", file=sys.stderr)
        return 1
    print(f"executed {a.notebook} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
