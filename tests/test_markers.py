"""The `slow` marks of tests/conftest.py name tests that exist."""

from __future__ import annotations

import re

import pytest

from tests.conftest import HERE, SLOW


@pytest.mark.parametrize("entry", sorted(SLOW))
def test_each_slow_entry_names_a_file_or_test_that_exists(entry: str) -> None:
    """A renamed file or test would drop its `slow` mark silently: each entry must still match."""
    where, _, name = entry.partition("::")
    path = HERE / where
    assert path.is_file(), f"{where} is not a test file any more"
    if name:
        assert re.search(rf"^def {re.escape(name)}\(", path.read_text(), re.MULTILINE), (
            f"{where} has no test {name} any more"
        )
