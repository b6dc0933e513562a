"""The package's shape: no class over 400 lines of code, no function over 60.

Lines of code exclude docstrings, comments and blank lines, as issue #22 counts them.
"""

from __future__ import annotations

import ast
import io
import pathlib
import tokenize

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "courier_analytics"
MAX_CLASS = 400
MAX_FUNCTION = 60


def _code_lines(source: str) -> set[int]:
    """Numbers of the lines that hold code: not blank, not only a comment, not a docstring."""
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (
            tokenize.COMMENT,
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            continue
        lines.update(range(token.start[0], token.end[0] + 1))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.difference_update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def _oversized() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        code = _code_lines(source)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = MAX_FUNCTION
            else:
                continue
            span = range(node.lineno, (node.end_lineno or node.lineno) + 1)
            size = sum(1 for line in span if line in code)
            if size > limit:
                where = path.relative_to(PACKAGE.parent)
                found.append(f"{where}:{node.lineno} {node.name}: {size} lines (limit {limit})")
    return found


def test_no_class_or_function_is_oversized() -> None:
    """No class in the package has over 400 lines of code, and no function over 60."""
    assert _oversized() == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('def f():\n    """Doc.\n\n    More."""\n    # why\n\n    return 1\n', {1, 7}),
        ("x = (\n    1,\n)\n", {1, 2, 3}),
    ],
)
def test_code_lines_skip_docstrings_comments_and_blanks(source: str, expected: set[int]) -> None:
    """The count leaves out docstrings, comment-only lines and blank lines."""
    assert _code_lines(source) == expected
