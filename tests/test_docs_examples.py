"""Every fenced ```python block of README.md and docs/*.md runs, so a broken example fails CI.

How it works:

- One test per block, id ``path:line`` (the line of its opening fence). A block runs in a fresh
  namespace after the earlier blocks of the same page, so it may use the names they made
  (a page reads top to bottom); a failure in an earlier block is reported as such.
- A block preceded by the line ``<!-- no-run -->`` is skipped. Keep those rare: an example
  that cannot run belongs in a ```text block, or should be made runnable.
- The blocks run against the local Courier stand-in on 127.0.0.1 (one for the session,
  accepting any key), reached through ``COURIER_BASE_URL`` and ``COURIER_API_KEY``; so examples
  are written like real code (``analytics.api_key = "pk_prod_..."``, ``region="eu"``) and
  nothing leaves the machine. An explicit ``base_url=`` in an example would win over the
  environment; examples should not pass one.
- An example passes when it raises nothing and Courier (the stand-in) answered no request
  with an error: a call that Courier would refuse fails the example too.
- After each example, the default clients (``courier_analytics`` and its Segment drop-in) are shut
  down and their module settings restored (tests/conftest.py does it for ``courier_analytics``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import courier_analytics
from courier_analytics import segment
from courier_analytics.devserver import DevServer, Faults

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("**/*.md")])
NO_RUN = "<!-- no-run -->"
#: Frameworks of the optional integrations: a page's example that needs one skips without it.
OPTIONAL_FRAMEWORKS = frozenset(
    {"django", "flask", "flask_login", "fastapi", "starlette", "celery"}
)
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")


@attrs.frozen
class Block:
    """One fenced code block: where it starts (1-based line of the fence) and its source."""

    path: str
    line: int
    source: str


def python_blocks(path: Path) -> Iterator[Block]:
    """The runnable ```python blocks of a Markdown file, in order (``<!-- no-run -->`` skips)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    name = path.relative_to(ROOT).as_posix()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        language = opening["info"].strip().split(" ")[0].lower() if opening["info"] else ""
        start, body = index, []
        index += 1
        while index < len(lines):
            closing = FENCE.match(lines[index])
            if closing and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            body.append(lines[index][indent:])
            index += 1
        index += 1
        skipped = start > 0 and lines[start - 1].strip() == NO_RUN
        if language in ("python", "py") and not skipped:
            yield Block(name, start + 1, "\n".join(body) + "\n")


def examples() -> list[Any]:
    """One pytest param per block: the earlier blocks of its page, and the block."""
    params = []
    for page in PAGES:
        blocks = list(python_blocks(page))
        for n, block in enumerate(blocks):
            params.append(pytest.param(blocks[:n], block, id=f"{block.path}:{block.line}"))
    return params


def run(block: Block, namespace: dict[str, Any], role: str) -> None:
    """Execute one block in ``namespace``; an exception fails the test naming the block."""
    where = f"{block.path}:{block.line}"
    try:
        exec(compile(block.source, where, "exec"), namespace)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in OPTIONAL_FRAMEWORKS:
            pytest.fail(f"{role} at {where} raised ModuleNotFoundError: {exc}")
        pytest.skip(f"{where} needs {exc.name}: install courier-analytics[test-integrations]")
    except BaseException as exc:
        pytest.fail(f"{role} at {where} raised {type(exc).__name__}: {exc}")


@pytest.fixture(scope="module")
def stand_in() -> Iterator[DevServer]:
    """One local Courier stand-in for all examples; any bearer key is accepted."""
    with DevServer(accept_any_key=True) as server:
        yield server


@pytest.fixture
def courier(stand_in: DevServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[DevServer]:
    """Point every client at the stand-in through the environment, as a user's shell would."""
    stand_in.set_faults(Faults())
    stand_in.reset()
    monkeypatch.setenv("COURIER_BASE_URL", stand_in.base_url)
    monkeypatch.setenv("COURIER_API_KEY", "pk_docs_examples")
    saved = {name: getattr(segment, name) for name in segment.SETTINGS}
    yield stand_in
    client, segment.default_client = segment.default_client, None
    if client is not None:
        client.shutdown()
    for name, value in saved.items():
        setattr(segment, name, value)


def test_the_collector_finds_examples() -> None:
    """The collector sees the README's examples, so a silent regex break cannot pass."""
    readme = list(python_blocks(ROOT / "README.md"))
    assert readme
    assert all(block.path == "README.md" and block.line > 1 for block in readme)


@pytest.mark.parametrize(("earlier", "block"), examples())
def test_example_runs(earlier: list[Block], block: Block, courier: DevServer) -> None:
    """The example runs against the stand-in, after the earlier examples of its page."""
    namespace: dict[str, Any] = {"__name__": "__docs_example__"}
    for previous in earlier:
        run(previous, namespace, "an earlier example of this page")
    run(block, namespace, "the example")
    courier_analytics.flush(10)
    answers = courier.stats()["requests"]
    errors = {f"{route} -> {status}": count for route, statuses in answers.items()
              for status, count in statuses.items() if not status.startswith("2")}  # fmt: skip
    assert not errors, f"Courier refused requests of the example at {block.path}:{block.line}"


def test_examples_are_formatted() -> None:
    """The examples are ruff-formatted; docs/ruff.toml holds docs/ to the 80-column code column."""
    check = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "README.md", "docs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
