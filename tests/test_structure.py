"""The shape of the house (docs/architecture.md): no import circle in dual_actor/ or data_tools/, no library file
over 600 lines (fit.py under 300), no module importing another module's private names.

The import graph is read from the source (``ast``), so it sees imports inside functions too (a lazy import
that closes a circle is still a circle). An edge goes from a module to each internal module it imports and to
that module's parent packages (importing ``a.b.c`` runs ``a/b/__init__.py`` first), except the importer's own
parent packages, which have run before it; ``from pkg import sub`` of a submodule is an edge to ``pkg.sub``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dual_actor", "data_tools")
MAX_LINES = 600
FIT_MAX_LINES = 300


def module_files(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    """``{dotted module name: file}`` for every .py file of the packages (a package is its ``__init__``)."""
    out = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (never executed)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for n in ast.walk(sub):
                    if isinstance(n, (ast.Import, ast.ImportFrom)):
                        lines.add(n.lineno)
    return lines


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """``(imported module, names taken from it, line)`` for every internal import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    out.append((a.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in PACKAGES:
                continue
            names = [a.name for a in node.names]
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            rest = [n for n in names if f"{target}.{n}" not in modules]
            if rest or not subs:  # names taken from the module itself (not only its submodules)
                out.append((target, rest, node.lineno))
            out.extend((s, [], node.lineno) for s in subs)
    return out


def import_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _, _ in imports_of(name, path, modules):
            if target in modules and target != name:
                graph[name].add(target)
            parts = target.split(".")
            for i in range(1, len(parts)):  # its parent packages run first (the importer's own already ran)
                dep = ".".join(parts[:i])
                if dep in modules and dep != name and not name.startswith(dep + "."):
                    graph[name].add(dep)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_circle_check_sees_a_circle(tmp_path):
    """Control: a lazy import inside a function that closes a circle is found, and so is a package whose
    ``__init__`` imports a submodule that imports the package back."""
    pkg = tmp_path / "dual_actor"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from dual_actor.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from dual_actor import a\n    return a\n")
    (pkg / "sub" / "__init__.py").write_text("from .x import X\n")
    (pkg / "sub" / "x.py").write_text("X = 1\n")
    (pkg / "sub" / "y.py").write_text("from dual_actor.sub import X\n")
    graph = import_graph(tmp_path, ("dual_actor",))
    assert find_cycle({k: v for k, v in graph.items() if not k.startswith("dual_actor.sub")}) in (
        ["dual_actor.a", "dual_actor.b", "dual_actor.a"], ["dual_actor.b", "dual_actor.a", "dual_actor.b"])
    (pkg / "sub" / "x.py").write_text("from dual_actor.sub import y\nX = 1\n")
    sub = {k: v for k, v in graph.items() if k.startswith("dual_actor.sub")}
    assert find_cycle(sub) is None  # before the edit
    assert find_cycle({k: v for k, v in import_graph(tmp_path, ("dual_actor",)).items()
                       if k.startswith("dual_actor.sub")}) is not None


def test_no_library_file_over_600_lines():
    long = {str(f.relative_to(ROOT)): n for f in module_files().values()
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"library files over {MAX_LINES} lines: {long}"
    fit = len((ROOT / "dual_actor" / "fit.py").read_text().splitlines())
    assert fit < FIT_MAX_LINES, f"dual_actor/fit.py has {fit} lines (the phases only: under {FIT_MAX_LINES})"


def test_no_module_imports_another_modules_private_names():
    modules = module_files()
    bad = []
    for name, path in modules.items():
        for target, names, line in imports_of(name, path, modules):
            bad += [f"{path.relative_to(ROOT)}:{line}: {n} from {target}"
                    for n in names if n.startswith("_") and not n.startswith("__")]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


@pytest.mark.parametrize("source, private", [("from dual_actor.eval import _pct\n", True),
                                             ("from dual_actor.eval import pct\n", False)])
def test_the_private_name_check_sees_one(tmp_path, source, private):
    pkg = tmp_path / "dual_actor"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "eval.py").write_text("def _pct(x):\n    return x\npct = _pct\n")
    (pkg / "chain.py").write_text(source)
    modules = module_files(tmp_path, ("dual_actor",))
    names = imports_of("dual_actor.chain", pkg / "chain.py", modules)[0][1]
    assert any(n.startswith("_") for n in names) is private
