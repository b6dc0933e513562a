"""List what `python -m build` made and fail on anything missing or stray.

Usage: python .ci/check_dist.py dist/

The sdist must hold the package, the test suite and what the suite reads (docs pages,
example apps, the benchmark harness), README, CHANGELOG, LICENSE and pyproject.toml,
and nothing else: no virtual environments, caches, benchmark results, Celery broker
folders or CI files. The wheel holds the package alone, typed, with its license, the
console script and the pytest plugin's entry point.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from pathlib import Path

SDIST_TOP = {
    "PKG-INFO",
    ".gitignore",  # hatchling keeps it, so a rebuild from the sdist excludes the same
    "pyproject.toml",
    "README.md",
    "CHANGELOG.md",
    "LICENSE",
    "mkdocs.yml",
    "docs_hooks.py",
    "courier_analytics",
    "tests",
    "docs",
    "examples",
    "benchmarks",
}
SDIST_REQUIRED = {
    "PKG-INFO",
    "pyproject.toml",
    "README.md",
    "CHANGELOG.md",
    "LICENSE",
    "courier_analytics/__init__.py",
    "courier_analytics/py.typed",
    "courier_analytics/devserver/_page.py",
    "tests/conftest.py",
    "docs/index.md",
}
WHEEL_REQUIRED = {
    "courier_analytics/__init__.py",
    "courier_analytics/py.typed",
    "courier_analytics/pytest_plugin.py",
    "courier_analytics/devserver/_page.py",
    "courier_analytics/integrations/django/apps.py",
}
#: Never in either archive, at any depth.
STRAY = re.compile(
    r"(^|/)(\.venv[^/]*|\.git|\.github|\.ci|__pycache__|\.pytest_cache|\.mypy_cache|"
    r"\.ruff_cache|\.hypothesis|control|site|dist|build|htmlcov|results|[^/]*\.egg-info)(/|$)"
    r"|\.pyc$|\.coverage$|\.sqlite3$"
)


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        sys.exit(f"expected one {pattern} in {folder}, found {[p.name for p in found]}")
    return found[0]


def check_sdist(path: Path) -> list[str]:
    """Problems with the sdist at `path` (empty when it is right)."""
    with tarfile.open(path) as archive:
        names = [m.name for m in archive.getmembers() if not m.isdir()]
    prefix = path.name.removesuffix(".tar.gz") + "/"
    problems = [
        f"sdist: {name} is outside {prefix}" for name in names if not name.startswith(prefix)
    ]
    inner = {name.removeprefix(prefix) for name in names}
    top = {name.split("/", 1)[0] for name in inner}
    problems += [f"sdist: unexpected top-level entry {name!r}" for name in sorted(top - SDIST_TOP)]
    problems += [f"sdist: {name} is missing" for name in sorted(SDIST_REQUIRED - inner)]
    problems += [f"sdist: stray {name}" for name in sorted(inner) if STRAY.search(name)]
    return problems


def check_wheel(path: Path) -> list[str]:
    """Problems with the wheel at `path` (empty when it is right)."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        info = next(n.split("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    top = {name.split("/", 1)[0] for name in names}
    problems = [
        f"wheel: unexpected top-level entry {t!r}"
        for t in sorted(top - {"courier_analytics", info})
    ]
    problems += [f"wheel: {name} is missing" for name in sorted(WHEEL_REQUIRED - names)]
    if f"{info}/licenses/LICENSE" not in names:
        problems.append("wheel: the LICENSE is missing from its .dist-info")
    problems += [f"wheel: stray {name}" for name in sorted(names) if STRAY.search(name)]
    for needed in (
        "courier-analytics = courier_analytics._cli:main",
        "courier_analytics.pytest_plugin",
    ):
        if needed not in entry_points:
            problems.append(f"wheel: entry point {needed!r} is missing")
    return problems


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "dist")
    sdist, wheel = _one(folder, "*.tar.gz"), _one(folder, "*.whl")
    problems = check_sdist(sdist) + check_wheel(wheel)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    with tarfile.open(sdist) as archive:
        count = sum(1 for m in archive.getmembers() if not m.isdir())
    print(f"{sdist.name}: {count} files, as expected; {wheel.name}: the package alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
