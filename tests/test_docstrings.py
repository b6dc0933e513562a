"""Docstrings are Markdown for mkdocstrings: no reST roles, doctest prompts or `::` blocks.

A cheap check on the source, beside tests/test_docs_site.py (which reads the built reference):
it covers private modules too, whose docstrings show in editors and `help()`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "courier_analytics"
ROLE = re.compile(r":(class|meth|attr|func|mod|exc|obj|data|ref):`")
LITERAL_BLOCK = re.compile(r"\S::$", re.MULTILINE)
PROMPT = re.compile(r"^\s*>>> ", re.MULTILINE)


def _docstrings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every module, class and function docstring in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            text = ast.get_docstring(node, clean=False)
            if text is not None:
                found.append((getattr(node, "lineno", 1), text))
    return found


def _offences(pattern: re.Pattern[str]) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
            for line, text in _docstrings(path) if pattern.search(text)]  # fmt: skip


def test_the_checker_sees_docstrings() -> None:
    """The walk finds the client's docstrings, so the checks below cannot pass empty."""
    assert len(_docstrings(PACKAGE / "_client.py")) > 20


def test_no_rest_roles_in_docstrings() -> None:
    """No `:class:`/`:meth:`/... role: use [`Name`][courier_analytics.Name] cross-references."""
    assert _offences(ROLE) == []


def test_no_doctest_prompts_in_docstrings() -> None:
    """No `>>>` example: mkdocstrings shows fenced ```python blocks, not doctests."""
    assert _offences(PROMPT) == []


def test_no_rest_literal_blocks_in_docstrings() -> None:
    """No reST `text::` literal-block marker: use a fenced block."""
    assert _offences(LITERAL_BLOCK) == []
