"""Structure of the source tree: no function or method in ``src/`` over 100 lines.

A long function is where invariants of several classes end up spread over one
frame (issue 17: ``Pipeline.run`` had grown to 274 lines). The count is the
whole definition, decorators excluded, docstring included.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
MAX_LINES = 100


def long_functions(root: Path, limit: int) -> list[str]:
    """``path:line name (N lines)`` for every function longer than ``limit`` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    where = path.relative_to(root.parent)
                    found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_src_is_over_100_lines() -> None:
    assert SRC.is_dir()
    assert long_functions(SRC, MAX_LINES) == []


def test_the_check_finds_a_long_function(tmp_path: Path) -> None:
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_LINES))  # def + 100 lines
    source = (
        "class A:\n    def short(self):\n        return 1\n\n    def long(self):\n"
        + body
        + "\n\nasync def fine():\n    return 2\n"
    )
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(source, encoding="utf-8")
    assert long_functions(tmp_path / "pkg", MAX_LINES) == [
        f"pkg/m.py:5 long ({MAX_LINES + 1} lines)"
    ]
