"""mkdocs hooks: the package version in the site's header."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

VERSION_FILE = Path(__file__).parent / "courier_analytics" / "_version.py"


def on_config(config: Any) -> Any:
    """Show the version next to the site name (header and page titles)."""
    match = re.search(r'__version__ = "([^"]+)"', VERSION_FILE.read_text(encoding="utf-8"))
    if match is None:
        raise ValueError(f"no __version__ in {VERSION_FILE}")
    config["site_name"] = f"{config['site_name']} {match.group(1)}"
    return config
